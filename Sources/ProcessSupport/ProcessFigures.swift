import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What this process uses now: resident and virtual memory, descriptors, CPU time and when it started, as the
/// standard Prometheus `process_*` series the agent's and the gateway's `/metrics` end with.
///
/// Read when asked (at scrape time), from `/proc/self` on Linux; elsewhere only what the portable calls give (CPU
/// time, the descriptor limit), and a figure that cannot be read is left out of the exposition rather than shown
/// as 0. The names and help texts are Prometheus's own (those of its Go and Java clients), so dashboards and
/// alerts written for any other exporter read these as they are.
///
/// ```swift
/// var body = registry.emitToBuffer()
/// ProcessFigures.current().appendExposition(to: &body)
/// ```
public struct ProcessFigures: Sendable, Equatable {
    /// User and system CPU time used, in seconds.
    public var cpuSeconds: Double?
    /// Resident memory, in bytes.
    public var residentMemoryBytes: Double?
    /// Virtual memory, in bytes.
    public var virtualMemoryBytes: Double?
    /// File descriptors open now.
    public var openDescriptors: Int?
    /// The most file descriptors the process may open (its soft limit).
    public var maximumDescriptors: Int?
    /// When the process started, in seconds since the Unix epoch.
    public var startTimeSeconds: Double?

    /// Figures given field by field (tests; a platform with its own way of reading them).
    public init(
        cpuSeconds: Double? = nil, residentMemoryBytes: Double? = nil, virtualMemoryBytes: Double? = nil,
        openDescriptors: Int? = nil, maximumDescriptors: Int? = nil, startTimeSeconds: Double? = nil
    ) {
        self.cpuSeconds = cpuSeconds
        self.residentMemoryBytes = residentMemoryBytes
        self.virtualMemoryBytes = virtualMemoryBytes
        self.openDescriptors = openDescriptors
        self.maximumDescriptors = maximumDescriptors
        self.startTimeSeconds = startTimeSeconds
    }

    /// This process's figures, read now.
    public static func current() -> ProcessFigures {
        var figures = ProcessFigures()
        var usage = rusage()
        #if os(Linux)
        let usageRead = getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        let usageRead = getrusage(RUSAGE_SELF, &usage)
        #endif
        if usageRead == 0 {
            figures.cpuSeconds =
                Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
                + Double(usage.ru_stime.tv_usec) / 1e6
        }
        var limit = rlimit()
        #if os(Linux)
        let descriptorLimit = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        #else
        let descriptorLimit = getrlimit(RLIMIT_NOFILE, &limit)
        #endif
        if descriptorLimit == 0, limit.rlim_cur < rlim_t(Int.max) {  // Unlimited (RLIM_INFINITY) is left out.
            figures.maximumDescriptors = Int(limit.rlim_cur)
        }
        #if os(Linux)
        if let stat = readProcFile("/proc/self/stat"), let system = readProcFile("/proc/stat") {
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            let page = Double(sysconf(Int32(_SC_PAGESIZE)))
            if let fields = ProcStat(parsing: stat), ticks > 0, page > 0 {
                figures.residentMemoryBytes = Double(fields.residentPages) * page
                figures.virtualMemoryBytes = Double(fields.virtualBytes)
                if let boot = bootTime(parsing: system) {
                    figures.startTimeSeconds = Double(boot) + Double(fields.startTicks) / ticks
                }
            }
        }
        // The directory's own descriptor, open while it is listed, is counted as the Go client counts it.
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            figures.openDescriptors = entries.count
        }
        #endif
        return figures
    }

    /// The fields of `/proc/self/stat` read here (proc(5)).
    struct ProcStat: Equatable {
        /// `starttime`: clock ticks after boot.
        var startTicks: UInt64
        /// `vsize`: bytes.
        var virtualBytes: UInt64
        /// `rss`: pages.
        var residentPages: UInt64

        /// Parses the line; nil when it is not the shape proc(5) describes.
        init?(parsing line: String) {
            // The command name (field 2) is in parentheses and may hold spaces or parentheses: fields are counted
            // from the last closing one.
            guard let close = line.lastIndex(of: ")") else { return nil }
            let fields = line[line.index(after: close)...].split(separator: " ")
            // Field 3 (state) is fields[0]; field N is fields[N - 3].
            guard fields.count > 21, let start = UInt64(fields[19]), let virtual = UInt64(fields[20]),
                let resident = Int64(fields[21])
            else { return nil }
            startTicks = start
            virtualBytes = virtual
            residentPages = UInt64(max(0, resident))
        }
    }

    /// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
    static func bootTime(parsing text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst("btime ".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// A file of `/proc` (whose size reads as 0: read to its end).
    private static func readProcFile(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.readToEnd() else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The Prometheus text exposition of the figures read (each with its `# HELP` and `# TYPE` lines).
    public var exposition: String {
        var text = ""
        func add(_ name: String, _ type: String, _ help: String, _ value: Double?) {
            guard let value else { return }
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        add("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpuSeconds)
        add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", residentMemoryBytes)
        add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", virtualMemoryBytes)
        add("process_open_fds", "gauge", "Number of open file descriptors.", openDescriptors.map(Double.init))
        add("process_max_fds", "gauge", "Maximum number of open file descriptors.", maximumDescriptors.map(Double.init))
        add(
            "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
            startTimeSeconds)
        return text
    }

    /// Appends ``exposition`` to a body of Prometheus text.
    public func appendExposition(to body: inout [UInt8]) {
        body.append(contentsOf: exposition.utf8)
    }
}
