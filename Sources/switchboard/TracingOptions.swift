import ArgumentParser
import Foundation
import Logging
import OTel
import ServiceLifecycle

/// The tracing setting every long-running command shares (`agent`, `gateway`, `demo`, `demo-service`).
enum TracingSettings {
    static let otlpEndpoint = Setting(
        "otlp-endpoint", valueName: "url",
        "Export spans over OTLP/HTTP to this collector (its base address, as OTEL_EXPORTER_OTLP_ENDPOINT, such as http://127.0.0.1:4318); none: nothing is traced."
    )

    /// The collector's base address from `settings`; nil when tracing is off.
    static func endpoint(from settings: SettingsReader) throws -> String? {
        try settings.value(otlpEndpoint, rule: "an http:// or https:// URL such as http://127.0.0.1:4318") { text in
            guard let url = URLComponents(string: text), url.scheme == "http" || url.scheme == "https",
                url.host?.isEmpty == false, url.query == nil, url.fragment == nil
            else { return nil }
            return text
        }
    }
}

/// `--otlp-endpoint`, as an option group for the commands that trace.
struct TracingOptions: ParsableArguments {
    @Option(name: TracingSettings.otlpEndpoint.argumentName, help: TracingSettings.otlpEndpoint.help)
    var otlpEndpoint: String?

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given: [Setting: String] = [:]
        given[TracingSettings.otlpEndpoint] = otlpEndpoint
        return given
    }
}

/// Spans leaving the process: swift-otel's tracer, exporting over OTLP/HTTP, bootstrapped as the process's tracer.
///
/// Only the executable bootstraps (the libraries trace through `InstrumentationSystem` and never know where spans
/// go), and only when `--otlp-endpoint` is given: without it the tracer stays the no-op one, which the agent, the
/// gateway, the shop and the client library check once and then skip every span. swift-otel's logs and metrics stay
/// off: logging and `/metrics` are the commands' own.
enum SpanExport {
    /// Bootstraps the tracer for `serviceName` (the `service.name` resource attribute; `instance` becomes
    /// `service.instance.id`) when `endpoint` is set, and returns the service that batches and exports the spans.
    /// Run it first in the process's service group: stopped last, it flushes the spans the others ended on their way
    /// out.
    ///
    /// The endpoint is the collector's base address, given to swift-otel as `OTEL_EXPORTER_OTLP_ENDPOINT` would be:
    /// it adds the traces path the OTLP specification gives. The other standard `OTEL_*` variables still apply (for
    /// example `OTEL_BSP_SCHEDULE_DELAY`, how often a batch goes, or `OTEL_TRACES_SAMPLER`).
    static func bootstrap(
        endpoint: String?, serviceName: String, instance: String? = nil, logger: Logger
    ) throws -> (any Service)? {
        guard let endpoint else { return nil }
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        if let instance { configuration.resourceAttributes["service.instance.id"] = instance }
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        var environment = ProcessInfo.processInfo.environment
        environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        return try OTel.bootstrap(configuration: configuration, environment: environment)
    }
}
