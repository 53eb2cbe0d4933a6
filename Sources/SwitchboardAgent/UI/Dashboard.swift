import HTTPTypes
import Hummingbird
import NIOCore

/// The operator's dashboard: plain HTML, CSS and JavaScript modules compiled into the agent, served at `/ui/`.
///
/// The files hold no data: the pages read the same API every other client reads (with the token the operator types,
/// so ACLs apply to them as to anyone), and follow its event streams to stay live. Nothing to install, no build step:
/// the files in `Resources/ui` are what the browser runs.
enum Dashboard {
    /// Where the dashboard is served.
    static let prefix = "/ui"

    /// One file of the dashboard and its media type.
    struct Asset: Sendable {
        var bytes: [UInt8]
        var contentType: String
    }

    /// The dashboard's files by name (every file is at the top of `/ui/`).
    static let assets: [String: Asset] = [
        "index.html": Asset(bytes: PackageResources.index_html, contentType: "text/html; charset=utf-8"),
        "dashboard.css": Asset(bytes: PackageResources.dashboard_css, contentType: "text/css; charset=utf-8"),
        "app.js": Asset(bytes: PackageResources.app_js, contentType: javaScript),
        "api.js": Asset(bytes: PackageResources.api_js, contentType: javaScript),
        "stream.js": Asset(bytes: PackageResources.stream_js, contentType: javaScript),
        "view.js": Asset(bytes: PackageResources.view_js, contentType: javaScript),
        "services.js": Asset(bytes: PackageResources.services_js, contentType: javaScript),
        "service.js": Asset(bytes: PackageResources.service_js, contentType: javaScript),
        "events.js": Asset(bytes: PackageResources.events_js, contentType: javaScript),
        "agent.js": Asset(bytes: PackageResources.agent_js, contentType: javaScript),
        "gateways.js": Asset(bytes: PackageResources.gateways_js, contentType: javaScript),
    ]

    private static let javaScript = "text/javascript; charset=utf-8"

    /// Scripts and styles from the agent only, no inline script, no framing by other sites: a page that holds a
    /// token in session storage must not run code from elsewhere. Reads may go elsewhere only for the gateways'
    /// routes, from their admin addresses (without the token).
    private static let securityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' http: https:; "
        + "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

    /// Adds `/ui/` (the router takes `/ui` for the same path; the page names its files by absolute paths, so both
    /// work) and its files, and sends `/` there (as Consul's agent does).
    static func addRoutes(to router: Router<AgentRequestContext>) {
        router.get("/") { _, _ in redirect }
        router.get(RouterPath(prefix)) { _, _ in response(for: "index.html") }
        router.get(RouterPath(prefix + "/{file}")) { _, context in
            response(for: context.parameters.get("file") ?? "")
        }
    }

    private static var redirect: Response {
        Response(status: .seeOther, headers: [.location: prefix + "/"])
    }

    private static func response(for name: String) -> Response {
        guard let asset = assets[name] else {
            return Response(
                status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: "no such file in the dashboard: \(name)\n")))
        }
        var headers: HTTPFields = [
            .contentType: asset.contentType,
            .cacheControl: "no-cache",
            .xContentTypeOptions: "nosniff",
            .contentSecurityPolicy: securityPolicy,
        ]
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)))
    }
}
