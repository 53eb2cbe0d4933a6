import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchboardCatalog
import SwitchboardCore

/// The native HTTP API v1: routes, request decoding and response encoding over the `Catalog`.
///
/// Every route is listed in ``routes`` and ``makeRouter()`` serves exactly that list: the test that keeps the
/// OpenAPI document honest compares it with the document, so a route cannot be added without being documented.
public struct AgentHTTPAPI: Sendable {
    /// One route: a method and a path in OpenAPI form (`/v1/services/{service}`).
    public struct Route: Hashable, Sendable {
        public var method: HTTPRequest.Method
        public var path: String
    }

    /// The largest request body accepted (`413` beyond).
    public static let maximumBodySize = 64 * 1024
    /// The header every response carries.
    public static let indexHeader = HTTPField.Name("X-Switchboard-Index")!

    let catalog: Catalog
    let health: HealthChecker
    let watches: WatchHub
    let lookups = LookupCache()
    let observationLimiter = ObservationLimiter()
    let metrics: AgentMetrics
    let startedAt: Date
    let storeDescription: String

    /// An API over `catalog`, its `health` checker and its `watches`; `storeDescription` (such as `sqlite:/path`) is
    /// reported by `GET /v1/agent`.
    public init(
        catalog: Catalog, health: HealthChecker, watches: WatchHub, metrics: AgentMetrics, storeDescription: String,
        startedAt: Date = Date()
    ) {
        self.catalog = catalog
        self.health = health
        self.watches = watches
        self.metrics = metrics
        self.storeDescription = storeDescription
        self.startedAt = startedAt
    }

    /// The routes this API serves, in the order they are added.
    public static let routes: [Route] = [
        Route(method: .get, path: "/v1/agent"),
        Route(method: .get, path: "/v1/services"),
        Route(method: .get, path: "/v1/services/{service}"),
        Route(method: .get, path: "/v1/services/{service}/instances/{id}"),
        Route(method: .get, path: "/v1/services/{service}/watch"),
        Route(method: .get, path: "/v1/watch"),
        Route(method: .put, path: "/v1/services/{service}/instances/{id}"),
        Route(method: .delete, path: "/v1/services/{service}/instances/{id}"),
        Route(method: .put, path: "/v1/services/{service}/instances/{id}/maintenance"),
        Route(method: .put, path: "/v1/services/{service}/instances/{id}/heartbeat"),
        Route(method: .post, path: "/v1/services/{service}/instances/{id}/observations"),
        Route(method: .get, path: "/v1/events"),
        Route(method: .get, path: "/v1/openapi.yaml"),
        Route(method: .get, path: "/metrics"),
    ]

    /// A router serving the API, with JSON errors and the index header on every response (unknown routes included).
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: APIResponseMiddleware(catalog: catalog))
        for route in Self.routes {
            let handler = self.handler(for: route)
            let hummingbirdPath = route.path.replacingOccurrences(of: "{", with: ":").replacingOccurrences(
                of: "}", with: "")
            router.on(RouterPath(hummingbirdPath), method: route.method) { request, context in
                try await handler(request, context)
            }
        }
        return router
    }

    private typealias Handler = @Sendable (Request, BasicRequestContext) async throws -> Response

    private func handler(for route: Route) -> Handler {
        switch (route.method, route.path) {
        case (.get, "/v1/agent"): agentInfo
        case (.get, "/v1/services"): listServices
        case (.get, "/v1/services/{service}"): lookupService
        case (.get, "/v1/services/{service}/instances/{id}"): readInstance
        case (.get, "/v1/services/{service}/watch"): watchService
        case (.get, "/v1/watch"): watchCatalog
        case (.put, "/v1/services/{service}/instances/{id}"): registerInstance
        case (.delete, "/v1/services/{service}/instances/{id}"): deregisterInstance
        case (.put, "/v1/services/{service}/instances/{id}/maintenance"): setMaintenance
        case (.put, "/v1/services/{service}/instances/{id}/heartbeat"): heartbeat
        case (.post, "/v1/services/{service}/instances/{id}/observations"): recordObservation
        case (.get, "/v1/events"): listEvents
        case (.get, "/v1/openapi.yaml"): openAPIDocument
        case (.get, "/metrics"): prometheusMetrics
        default: preconditionFailure("route \(route.method) \(route.path) has no handler")
        }
    }

    // MARK: Handlers

    @Sendable private func agentInfo(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let summary = catalog.summary()
        let info = AgentInfo(
            version: SwitchboardVersion.current,
            startedAt: startedAt,
            uptimeSeconds: max(0, Date().timeIntervalSince(startedAt)),
            index: summary.index,
            services: summary.services,
            instances: summary.instances,
            counts: summary.counts,
            store: storeDescription,
            health: health.report(),
            watches: watches.report()
        )
        return try json(info, index: summary.index, request: request)
    }

    @Sendable private func listServices(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let catalog = self.catalog
        await holdUntilChanged(try blockingQuery(request), service: nil) { catalog.index }
        guard !isPretty(request) else {
            let list = catalog.services()
            return try json(list, index: list.index, request: request)
        }
        let (index, body) = catalog.servicesJSON()
        return rawJSON(body, index: index)
    }

    @Sendable private func lookupService(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let query = try instanceQuery(request)
        let catalog = self.catalog
        await holdUntilChanged(try blockingQuery(request), service: service) { catalog.serviceIndex(service) }
        guard !isPretty(request) else {
            let lookup = catalog.instances(of: service, matching: query)
            return try json(lookup, index: lookup.index, request: request)
        }
        let (index, body) = lookups.lookup(service, matching: query, in: catalog)
        return Response(
            status: .ok,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: body)
        )
    }

    @Sendable private func readInstance(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let catalog = self.catalog
        await holdUntilChanged(try blockingQuery(request), service: service) { catalog.serviceIndex(service) }
        guard !isPretty(request) else {
            let (index, instance) = catalog.instance(service: service, id: id)
            guard let instance else { throw CatalogError.instanceNotFound(service: service, id: id) }
            return try json(instance, index: index, request: request)
        }
        let (index, body) = catalog.instanceJSON(service: service, id: id)
        guard let body else { throw CatalogError.instanceNotFound(service: service, id: id) }
        return rawJSON(body, index: index)
    }

    @Sendable private func registerInstance(_ request: Request, _ context: BasicRequestContext) async throws -> Response
    {
        let service = try serviceName(context)
        let id = try instanceID(context)
        var cas: UInt64?
        if let text = request.uri.queryParameters["cas"] {
            guard let value = UInt64(text) else {
                throw APIError.badParameter(
                    ValidationError(field: "cas", message: "cas must be a modify index (0 or more)"))
            }
            cas = value
        }
        let body = try await decodeBody(RegistrationRequest.self, from: request, context: context)
        let definition = try body.validated(service: service, id: id)
        let outcome = try await catalog.register(definition, cas: cas)
        let status: HTTPResponse.Status = outcome.event?.kind == .added ? .created : .ok
        return try json(outcome, status: status, request: request)
    }

    @Sendable private func deregisterInstance(
        _ request: Request, _ context: BasicRequestContext
    ) async throws -> Response {
        let outcome = try await catalog.deregister(service: try serviceName(context), id: try instanceID(context))
        return try json(outcome, request: request)
    }

    @Sendable private func setMaintenance(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let body = try await decodeBody(MaintenanceRequest.self, from: request, context: context)
        let change = try body.validated()
        let outcome = try await catalog.setMaintenance(
            service: service, id: id, enabled: change.enabled, reason: change.reason)
        return try json(outcome, request: request)
    }

    /// Logs a client's observation as an `observed` event: 201 with the event, 404 for an unknown instance.
    @Sendable private func recordObservation(
        _ request: Request, _ context: BasicRequestContext
    ) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let body = try await decodeBody(ObservationRequest.self, from: request, context: context)
        let observation = try body.validated()
        if let wait = observationLimiter.admit(InstanceKey(service: service, id: id)) {
            var response = try APIError(
                .tooManyRequests, .rateLimited,
                "\(service)/\(id) had an observation logged less than \(observationLimiter.interval) ago"
            ).response(from: request, context: context)
            let seconds = wait.components.seconds + (wait.components.attoseconds > 0 ? 1 : 0)
            response.headers[.retryAfter] = String(max(1, seconds))
            return response
        }
        let outcome = try await catalog.recordObservation(observation, service: service, id: id)
        guard let event = outcome.event else { throw CatalogError.storeFailed("an observation planned no event") }
        return try json(event, status: .created, index: outcome.index, request: request)
    }

    @Sendable private func heartbeat(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        var status = HealthStatus.passing
        var output = ""
        // The body is optional: a bare PUT is the cheapest heartbeat, and the common one.
        if request.headers[.contentLength] != "0" {
            let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
            if buffer.readableBytes > 0 {
                let body = try decodeJSON(HeartbeatRequest.self, from: buffer, request: request)
                (status, output) = try body.validated()
            }
        }
        switch await health.heartbeat(InstanceKey(service: service, id: id), status: status, output: output) {
        case .unknownInstance:
            throw APIError(
                .notFound, .notFound,
                "instance '\(id)' of service '\(service)' is not registered (it was removed, or the agent lost it):"
                    + " register it again with PUT /v1/services/\(service)/instances/\(id), then resume heartbeats"
            )
        case .noTTLCheck:
            throw APIError(
                .conflict, .conflict,
                "instance '\(id)' of service '\(service)' has no ttl check to heartbeat; register it with a check"
                    + " such as {\"type\": \"ttl\", \"ttl\": \"10s\"}",
                field: "checks"
            )
        case .recorded(let current):
            var json = JSONText()
            json.append(#"{"id":"\#(id.rawValue)","service":"\#(service.rawValue)","status":"\#(current.rawValue)"}"#)
            return rawJSON(json.bytes, index: catalog.instance(service: service, id: id).index)
        }
    }

    @Sendable private func prometheusMetrics(
        _ request: Request, _ context: BasicRequestContext
    ) async throws -> Response {
        let body = metrics.exposition(catalog: catalog.summary(), health: health.report(), watches: watches.report())
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        )
    }

    @Sendable private func listEvents(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let since = try integerParameter(request, "since", default: 0, range: 0...UInt64.max)
        let limit = try integerParameter(request, "limit", default: 1000, range: 1...10_000)
        let page = try await catalog.events(since: since, limit: Int(limit))
        return try json(page, index: page.index, request: request)
    }

    @Sendable private func openAPIDocument(_ request: Request, _ context: BasicRequestContext) async throws -> Response
    {
        Response(
            status: .ok,
            headers: [.contentType: "application/yaml"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_yaml))
        )
    }

    // MARK: Decoding

    func serviceName(_ context: BasicRequestContext) throws -> ServiceName {
        // Path parameters arrive as sent; a client may percent-encode any character (':' in an id, say).
        let raw = context.parameters.get("service").map(Self.percentDecoded) ?? ""
        do {
            return try ServiceName(raw, field: "service")
        } catch {
            throw APIError.badParameter(error)
        }
    }

    func instanceID(_ context: BasicRequestContext) throws -> InstanceID {
        let raw = context.parameters.get("id").map(Self.percentDecoded) ?? ""
        do {
            return try InstanceID(raw, field: "id")
        } catch {
            throw APIError.badParameter(error)
        }
    }

    /// `text` with percent-escapes decoded; left as it is when it is not valid percent-encoding (validation then
    /// rejects the '%').
    static func percentDecoded(_ text: String) -> String {
        text.contains("%") ? (text.removingPercentEncoding ?? text) : text
    }

    /// The methods served on a path that matched no route, for a `405` instead of a `404`.
    static func allowedMethods(forPath path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        return routes.filter { route in
            let pattern = route.path.split(separator: "/", omittingEmptySubsequences: false)
            return pattern.count == segments.count
                && zip(pattern, segments).allSatisfy { expected, actual in
                    expected.hasPrefix("{") ? !actual.isEmpty : expected == actual
                }
        }.map(\.method)
    }

    func instanceQuery(_ request: Request) throws -> InstanceQuery {
        let parameters = request.uri.queryParameters
        do throws(ValidationError) {
            var query = InstanceQuery()
            if let status = parameters["status"] {
                query.status = try InstanceQuery.StatusFilter(parsing: String(status))
            }
            query.tags = parameters.getAll("tag").map { String($0) }
            for condition in parameters.getAll("meta") {
                query.meta.append(try InstanceQuery.MetaCondition(parsing: String(condition)))
            }
            return query
        } catch {
            throw APIError.badParameter(error)
        }
    }

    private func integerParameter(
        _ request: Request, _ name: String, default value: UInt64, range: ClosedRange<UInt64>
    )
        throws -> UInt64
    {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let number = UInt64(text), range.contains(number) else {
            let message = "\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound)"
            throw APIError.badParameter(ValidationError(field: name, message: message))
        }
        return number
    }

    private func decodeBody<Body: Decodable>(
        _ type: Body.Type, from request: Request, context: BasicRequestContext
    )
        async throws -> Body
    {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maximumBodySize {
            throw NIOTooManyBytesError(maxBytes: Self.maximumBodySize)
        }
        let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
        guard buffer.readableBytes > 0 else {
            throw APIError(.badRequest, .malformedJSON, "a JSON object body is required")
        }
        return try decodeJSON(type, from: buffer, request: request)
    }

    /// Decodes a collected body, after checking that it says it is JSON.
    private func decodeJSON<Body: Decodable>(
        _ type: Body.Type, from buffer: ByteBuffer, request: Request
    ) throws -> Body {
        if let contentType = request.headers[.contentType] {
            let mediaType =
                contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
                ?? ""
            guard mediaType == "application/json" || mediaType.hasSuffix("+json") else {
                throw APIError(
                    .unsupportedMediaType,
                    .unsupportedMediaType,
                    "the body must be JSON: send Content-Type: application/json, not \(contentType)"
                )
            }
        }
        let data = Data(buffer.readableBytesView)
        do {
            return try SwitchboardJSON.decoder().decode(Body.self, from: data)
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            // Foundation reports a number that does not fit its field (80.5 or 1e30 for a port) as invalid JSON
            // without a path; find the number so the user learns which field it was.
            if let parsed = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
                let field = Self.firstUnrepresentableNumber(in: parsed, path: [])
            {
                throw APIError(.badRequest, .malformedJSON, "\(field) must be a whole number", field: field)
            }
            throw APIError(.badRequest, .malformedJSON, "the body is not valid JSON")
        }
    }

    /// The path of the first number in a parsed JSON value that is not a whole number within 64-bit range.
    private static func firstUnrepresentableNumber(in value: Any, path: [any CodingKey]) -> String? {
        switch value {
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                if let found = firstUnrepresentableNumber(
                    in: object[key]!, path: path + [AnyCodingKey(stringValue: key)])
                {
                    return found
                }
            }
        case let array as [Any]:
            for (position, element) in array.enumerated() {
                if let found = firstUnrepresentableNumber(in: element, path: path + [AnyCodingKey(intValue: position)])
                {
                    return found
                }
            }
        case let number as NSNumber:
            let double = number.doubleValue
            if double != double.rounded() || abs(double) >= 9.2e18 { return JSONPath.render(path) }
        default:
            break
        }
        return nil
    }

    // MARK: Encoding

    private func isPretty(_ request: Request) -> Bool {
        request.uri.queryParameters["pretty"] != nil
    }

    /// The instance a write leaves, from the writer's encoding when there is one.
    private func json(
        _ outcome: Catalog.WriteOutcome, status: HTTPResponse.Status = .ok, request: Request
    ) throws
        -> Response
    {
        if let body = outcome.instanceJSON, !isPretty(request) {
            return rawJSON(body, status: status, index: outcome.index)
        }
        return try json(outcome.instance, status: status, index: outcome.index, request: request)
    }

    /// A response carrying JSON that is already encoded.
    func rawJSON(_ body: [UInt8], status: HTTPResponse.Status = .ok, index: UInt64) -> Response {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(body.count + 1)
        buffer.writeBytes(body)
        buffer.writeString("\n")
        return Response(
            status: status,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: buffer)
        )
    }

    private func json(
        _ value: some Encodable, status: HTTPResponse.Status = .ok, index: UInt64, request: Request
    ) throws
        -> Response
    {
        let pretty = isPretty(request)
        var buffer = ByteBuffer()
        buffer.writeBytes(try SwitchboardJSON.encoder(pretty: pretty).encode(value))
        buffer.writeString("\n")
        return Response(
            status: status,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: buffer)
        )
    }
}

/// Turns every thrown error into its JSON form and stamps the catalog index on every response.
struct APIResponseMiddleware<Context: RequestContext>: RouterMiddleware {
    let catalog: Catalog

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            var apiError = APIError(converting: error)
            // An unmatched route whose path is served under other methods is a 405, not a 404.
            var allow: String?
            if (error as? HTTPError)?.status == .notFound {
                let allowed = AgentHTTPAPI.allowedMethods(forPath: request.uri.path)
                if !allowed.isEmpty {
                    let names = allowed.map(\.rawValue).joined(separator: ", ")
                    allow = names
                    apiError = APIError(
                        .methodNotAllowed, .methodNotAllowed, "\(request.method) is not served here; use \(names)")
                }
            }
            if apiError.status == .internalServerError {
                context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            }
            response = try apiError.response(from: request, context: context)
            if let allow { response.headers[.allow] = allow }
        }
        if response.headers[AgentHTTPAPI.indexHeader] == nil {
            response.headers[AgentHTTPAPI.indexHeader] = String(catalog.index)
        }
        return response
    }
}
