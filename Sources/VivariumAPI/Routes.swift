import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import VivariumAuth
import VivariumCore
import VivariumEngine

/// The REST and WebSocket API.
public enum API {
    /// Largest accepted request body.
    public static let maxBodyBytes = 256 << 10

    /// The router of one listener. `openAPI` is the document served at `/v1/openapi.json`.
    public static func router(engine: Engine, trust: SourceTrust = SourceTrust(), openAPI: Data)
        -> Router<APIRequestContext>
    {
        let router = Router(context: APIRequestContext.self)
        router.add(middleware: ErrorMiddleware(routes: Endpoints.all))
        router.add(middleware: SourceMiddleware(trust: trust))
        var routes = RouteRegistry(router: router, gate: engine.gate)
        register(&routes, engine: engine, openAPI: openAPI)
        return router
    }

    /// Every route the router serves (for the completeness tests).
    public static func registeredRoutes(engine: Engine) -> [Route] {
        var routes = RouteRegistry(router: Router(context: APIRequestContext.self), gate: engine.gate)
        register(&routes, engine: engine, openAPI: Data())
        return routes.registered
    }

    static func register(_ routes: inout RouteRegistry, engine: Engine, openAPI: Data) {
        SystemRoutes(engine: engine, openAPI: openAPI).register(&routes)
        IdentityRoutes(identity: engine.identity).register(&routes)
        SandboxRoutes(sandboxes: engine.sandboxes).register(&routes)
        ExecStreamRoutes(sandboxes: engine.sandboxes, gate: engine.gate).register(&routes)
        ProcessRoutes(sandboxes: engine.sandboxes).register(&routes)
        FileRoutes(sandboxes: engine.sandboxes).register(&routes)
        RouteRoutes(exposures: engine.exposures).register(&routes)
        SecretRoutes(secrets: engine.secrets).register(&routes)
        ImageRoutes(images: engine.images).register(&routes)
        AuditRoutes(audit: engine.audit, gate: engine.gate).register(&routes)
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try WireCoding.encoder(for: T.self).encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// One request as a route handler sees it: the caller, the path's `{name}`, the query and the body.
struct Call: Sendable {
    let request: Request
    let context: APIRequestContext
    let caller: Caller

    /// The path's `{name}`, validated (`what` names it in the error).
    func name(_ what: String) throws -> ResourceName {
        try ResourceName.parse(try context.parameters.require("name"), what: what)
    }

    func query(_ key: String) -> String? { request.uri.queryParameters.get(key).map { String($0) } }

    /// A boolean query flag: absent, `false` or `0` is false; `true`, `1` or empty is true.
    func flag(_ key: String) throws -> Bool {
        switch request.uri.queryParameters.get(key) {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        default: throw VivariumError(.invalidArgument, "\(key) must be true or false")
        }
    }

    func int(_ key: String, _ range: ClosedRange<Int64>) throws -> Int64? {
        guard let v = query(key) else { return nil }
        guard let n = Int64(v), range.contains(n) else {
            throw VivariumError(
                .invalidArgument, "\(key) must be a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    /// The JSON body, decoded strictly from at most `API.maxBodyBytes`.
    func body<T: Codable>(_ type: T.Type = T.self) async throws -> T {
        if let type = request.headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw VivariumError(.unsupportedMediaType, "send application/json")
        }
        var req = request
        let buffer: ByteBuffer
        do {
            buffer = try await req.collectBody(upTo: API.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw VivariumError(.payloadTooLarge, "request body exceeds \(API.maxBodyBytes) bytes")
        } catch let e as HTTPError where e.status == .contentTooLarge {
            throw VivariumError(.payloadTooLarge, "request body exceeds \(API.maxBodyBytes) bytes")
        }
        return try StrictJSON.decode(T.self, from: Data(buffer: buffer))
    }
}

/// Registers the routes of `Endpoints`, each in the group its action's policy row calls for (public
/// actions never look at credentials), each running inside `Gate.perform` under its action so that
/// parsing failures, denials and refusals are recorded like everything else.
struct RouteRegistry {
    let router: Router<APIRequestContext>
    let gate: Gate
    let publicGroup: RouterGroup<APIRequestContext>
    let authenticated: RouterGroup<APIRequestContext>
    private(set) var registered: [Route] = []

    init(router: Router<APIRequestContext>, gate: Gate) {
        self.router = router
        self.gate = gate
        publicGroup = router.group().add(middleware: AuthenticationMiddleware(gate: gate, requireCredentials: false))
        authenticated = router.group().add(middleware: AuthenticationMiddleware(gate: gate, requireCredentials: true))
    }

    func group(_ action: Action) -> RouterGroup<APIRequestContext> {
        PolicyTable.policy(action).ownership == .publicAction ? publicGroup : authenticated
    }

    static func routerPath(_ route: Route) -> RouterPath {
        RouterPath(route.path.replacingOccurrences(of: "{name}", with: ":name"))
    }

    /// The caller of a request, or the recorded refusal of the action it asked for.
    static func caller(_ context: APIRequestContext, _ action: Action, gate: Gate) async throws -> Caller {
        do {
            return try context.requireCaller()
        } catch let e as VivariumError {
            await gate.rejected(e, anonymous: context.anonymous, action: action, target: context.parameters.get("name"))
            throw e
        }
    }

    /// A JSON route: `handler` returns the response body.
    mutating func add<Request, Response>(
        _ endpoint: Endpoint<Request, Response>, _ handler: @escaping @Sendable (Call) async throws -> Response
    ) {
        let route = endpoint.route
        registered.append(route)
        let gate = self.gate
        let status = HTTPResponse.Status(code: route.status)
        group(route.action).on(Self.routerPath(route), method: .init(rawValue: route.method.rawValue)!) {
            request, context in
            let caller = try await Self.caller(context, route.action, gate: gate)
            let value = try await gate.perform(caller, route.action, target: context.parameters.get("name")) {
                try await handler(Call(request: request, context: context, caller: caller))
            }
            if Response.self == Empty.self { return Hummingbird.Response(status: status) }
            return try API.json(value, status: status)
        }
    }

    /// A route answering raw bytes: `handler` makes the response (the engine authorizes inside it).
    mutating func bytes(_ route: Route, _ handler: @escaping @Sendable (Call) async throws -> Response) {
        registered.append(route)
        let gate = self.gate
        group(route.action).on(Self.routerPath(route), method: .init(rawValue: route.method.rawValue)!) {
            request, context in
            let caller = try await Self.caller(context, route.action, gate: gate)
            return try await handler(Call(request: request, context: context, caller: caller))
        }
    }

    /// A document served as is.
    mutating func document(_ route: Route, contentType: String, _ body: Data) {
        registered.append(route)
        let gate = self.gate
        group(route.action).on(Self.routerPath(route), method: .get) { _, context in
            let caller = try await Self.caller(context, route.action, gate: gate)
            try gate.authorize(caller, route.action)
            return Response(
                status: .ok, headers: [.contentType: contentType], body: .init(byteBuffer: ByteBuffer(bytes: body)))
        }
    }

    /// A WebSocket route. The upgrade is refused (and the refusal recorded) unless the caller is
    /// authenticated, the policy table allows the action and `check` passes (the resource exists and is
    /// the caller's); `session` then runs over the socket, with the caller of the upgrade request.
    mutating func webSocket(
        _ route: Route, check: @escaping @Sendable (Call) async throws -> Void = { _ in },
        session: @escaping @Sendable (Call, WebSocketInboundStream, WebSocketOutboundWriter) async throws -> Void
    ) {
        registered.append(route)
        let gate = self.gate
        group(route.action).ws(
            Self.routerPath(route),
            shouldUpgrade: { request, context in
                do {
                    let caller = try await Self.caller(context, route.action, gate: gate)
                    try await gate.perform(caller, route.action, target: context.parameters.get("name"), check: true) {
                        guard request.headers[.upgrade]?.lowercased() == "websocket" else {
                            throw VivariumError(.badRequest, "this route needs a WebSocket upgrade")
                        }
                        try await check(Call(request: request, context: context, caller: caller))
                    }
                } catch {
                    // The upgrade machinery answers a refusal with a bare 400: the connection's
                    // `UpgradeRefusalAnswer` sends this one instead.
                    if request.headers[.upgrade] != nil {
                        UpgradeRefusals.leave(
                            VivariumError.from(error), requestID: context.requestID, on: context.connection)
                    }
                    throw error
                }
                var headers: HTTPFields = [:]
                if request.headers[.authorization] == nil, request.headers[.secWebSocketProtocol] != nil {
                    headers[.secWebSocketProtocol] = "vivarium.bearer"
                }
                return .upgrade(headers)
            },
            onUpgrade: { inbound, outbound, ws in
                let context = ws.requestContext
                guard let caller = try? context.requireCaller() else { return }
                try await session(Call(request: ws.request, context: context, caller: caller), inbound, outbound)
            })
    }

}
