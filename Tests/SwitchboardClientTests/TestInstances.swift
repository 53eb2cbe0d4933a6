import SwitchboardCore

/// An instance of service `shop` for balancer and policy tests.
func testInstance(_ id: String, weight: Int = 1, zone: String? = nil) -> Instance {
    let definition = InstanceDefinition(
        service: try! ServiceName("shop"),
        id: try! InstanceID(id),
        address: try! HostAddress("10.0.0.1"),
        port: 8080,
        meta: zone.map { ["zone": $0] } ?? [:],
        weight: weight
    )
    return Instance(definition: definition, createIndex: 1, modifyIndex: 1)
}

/// How many of `picks` calls went to each instance id.
func shares(_ picks: Int, _ pick: () -> Instance?) -> [String: Int] {
    var counts: [String: Int] = [:]
    for _ in 0..<picks {
        if let instance = pick() { counts[instance.id.rawValue, default: 0] += 1 }
    }
    return counts
}
