extension Duration {
    /// The whole duration in nanoseconds (saturating far beyond any timeout this project deals with), for the
    /// APIs that count in them (SwiftNIO's `TimeAmount`, metrics, arithmetic on instants).
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }

    /// The duration in seconds, as a `Double` (for people and JSON).
    package var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
