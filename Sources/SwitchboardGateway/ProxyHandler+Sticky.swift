import NIOCore

extension ProxyHandler {
    /// Finds the key a sticky route hashes the caller by: its header, or its cookie; a caller without the gateway's
    /// cookie gets a new random one, set on the answer, and is hashed by it from this request on.
    func keepSticky(_ sticky: StickySessions, _ head: RequestHead) {
        switch sticky {
        case .header(let name):
            exchange!.stickyKey = head.fields.values(named: name).first
        case .cookie(let name, let sets, let maxAge):
            if let value = Self.cookie(named: name, in: head) {
                exchange!.stickyKey = value
            } else if sets {
                let token = Hex.id128(&random)
                exchange!.stickyKey = token
                var cookie = "\(name)=\(token); Path=/; HttpOnly; SameSite=Lax"
                if let maxAge { cookie += "; Max-Age=\(maxAge.components.seconds)" }
                exchange!.editDownstreamExtras { $0.setCookie = cookie }
            }
        }
    }

    /// The value of the caller's cookie `name` (the first, in any `Cookie` field), or nil.
    static func cookie(named name: String, in head: RequestHead) -> String? {
        for field in head.fields.values(named: "cookie") {
            for pair in field.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
                let value = trimmed[trimmed.index(after: equals)...]
                return value.isEmpty ? nil : String(value)
            }
        }
        return nil
    }
}
