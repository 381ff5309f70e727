import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumStore

/// The request context of every API call: its request id and the peer it came from.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let requestID: String
    /// The peer address; nil or a unix socket for local callers.
    public let remote: SocketAddress?
    /// The source a trusted proxy announced in a PROXY protocol header on this connection.
    public let proxied: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        requestID = randomHex(bytes: 8)
        remote = source.channel.remoteAddress
        proxied = ProxiedSources.get(source.channel)
    }
    public var maxUploadSize: Int { API.maxBodyBytes }

    /// Root on the host: the caller came through the unix socket (in its 0700 directory).
    public var isLocal: Bool {
        if case .unixDomainSocket = remote { return true }
        return false
    }
}

/// Abuse limits of the API: failed authentications per source address, requests per principal, and
/// which sources are believed and allowed on admin routes.
public struct APILimits: Sendable {
    public let failedAuth: RateLimiter
    public let perPrincipal: RateLimiter
    public let trust: SourceTrust
    public init(
        authFailuresPerMinute: Double = 10, requestsPerSecond: Double = 100, requestBurst: Double = 200,
        trust: SourceTrust = SourceTrust()
    ) {
        failedAuth = RateLimiter(rate: authFailuresPerMinute / 60, burst: authFailuresPerMinute)
        perPrincipal = RateLimiter(rate: requestsPerSecond, burst: requestBurst)
        self.trust = trust
    }
}

public enum API {
    /// Largest accepted request body.
    public static let maxBodyBytes = 256 << 10

    typealias Handler = @Sendable (Request, APIRequestContext, Principal?) async throws -> Response

    /// Registers routes, each only with its row of the policy table: a route without one is a
    /// programming error and the router refuses to build (default deny).
    final class Routes: @unchecked Sendable {
        let router: Router<APIRequestContext>
        let tokens: TokenService
        let audits: any AuditStore
        let limits: APILimits
        private(set) var keys: [String] = []

        init(router: Router<APIRequestContext>, engine: Engine, limits: APILimits) {
            self.router = router
            self.tokens = engine.tokens
            self.audits = engine.audit
            self.limits = limits
        }

        func add(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            guard let policy = PolicyTable.policy(method.rawValue, path) else {
                preconditionFailure("route \(method.rawValue) \(path) has no entry in the policy table")
            }
            keys.append("\(method.rawValue) \(path)")
            let (tokens, audits, limits) = (self.tokens, self.audits, self.limits)
            let exchangesCredentials = path == "/v1/tokens"
            let mutating = method != .get
            router.on(RouterPath(path), method: method) { req, ctx in
                let source =
                    ctx.isLocal
                    ? "local"
                    : limits.trust.clientAddress(
                        peer: ctx.remote?.ipAddress, proxied: ctx.proxied,
                        forwardedFor: req.headers[HTTPField.Name("X-Forwarded-For")!]) ?? "unknown"
                var audit = AuditContext(
                    actor: ctx.isLocal ? API.actor(.localRoot) : .anonymous, source: source,
                    requestID: ctx.requestID, tally: AuditTally())
                let guarded = !ctx.isLocal && (policy.ownership != .publicRoute || exchangesCredentials)
                let limitKey = SourceTrust.limitKey(source)
                let allowlisted =
                    ctx.isLocal || limits.trust.adminAllowlist.isEmpty
                    || limits.trust.adminAllowlist.contains(where: { $0.contains(source) })
                do {
                    if guarded, let wait = limits.failedAuth.exhausted(limitKey) {
                        throw VivariumError(
                            .rateLimited, "too many failed authentications from this address",
                            retryAfterSeconds: wait)
                    }
                    if policy.ownership == .admin, !allowlisted {
                        throw VivariumError(.forbidden, "admin routes are not served to this address")
                    }
                    let principal = try await API.authenticate(req, ctx, policy: policy, tokens: tokens)
                    if let principal {
                        audit.actor = API.actor(principal)
                        // The tenant the call acts in, by the handlers' own rule (an admin's ?tenant=).
                        audit.tenant = try? API.tenant(req, principal)
                    }
                    // An admin token reaches every tenant: from outside the allowlist it gets nowhere.
                    if principal?.role == .admin, !allowlisted {
                        throw VivariumError(.forbidden, "admin credentials are not accepted from this address")
                    }
                    if let p = principal, !ctx.isLocal, let wait = limits.perPrincipal.take(p.id) {
                        throw VivariumError(.rateLimited, "request rate limit reached", retryAfterSeconds: wait)
                    }
                    try API.authorize(policy, principal)
                    let response = try await AuditContext.$current.withValue(audit) {
                        try await handler(req, ctx, principal)
                    }
                    // A mutating call that changed nothing (a start of a running sandbox) still leaves a record.
                    if mutating, audit.tally?.count == 0 {
                        try audits.append([API.event(policy, ctx, audit, .ok, ["changed": "false"])])
                    }
                    return response
                } catch let e as VivariumError {
                    // Refusals before authentication count against the source like failed logins (the
                    // per-principal limit bounds the rest): neither can flood the trail.
                    if guarded && (e.code == .unauthenticated || (e.code == .forbidden && audit.actor == .anonymous)) {
                        _ = limits.failedAuth.take(limitKey)
                    }
                    API.recordFailure(e, policy: policy, mutating: mutating, req, ctx, audit, to: audits)
                    throw e
                }
            }
        }
    }

    static func actor(_ p: Principal) -> AuditActor {
        AuditActor(id: p.id, name: p.name, tenant: p.tenant, tokenID: p.tokenID)
    }

    static func event(
        _ policy: RoutePolicy, _ ctx: APIRequestContext, _ audit: AuditContext, _ outcome: AuditOutcome,
        _ details: [String: String]
    ) -> AuditEvent {
        AuditEvent(
            policy.action, target: ctx.parameters.get("name"), outcome: outcome,
            details: details, context: audit)
    }

    /// Authentication failures, policy denials and quota refusals are recorded on every route; other
    /// failures on mutating routes when the engine did not record them already. Rate-limit refusals are
    /// not (they would let a flood write the trail); the authentication failures before them were.
    static func recordFailure(
        _ e: VivariumError, policy: RoutePolicy, mutating: Bool, _ req: Request, _ ctx: APIRequestContext,
        _ audit: AuditContext, to audits: any AuditStore
    ) {
        let route = "\(req.method.rawValue) \(req.uri.path.prefix(256))"
        let details = ["code": e.code.rawValue, "message": e.message, "route": route]
        let event: AuditEvent
        switch e.code {
        case .unauthenticated:
            event = AuditEvent(
                "auth.failure", target: policy.action, outcome: .denied, details: details, context: audit)
        case .forbidden:
            event = AuditEvent(
                "policy.denied", target: ctx.parameters.get("name"), outcome: .denied,
                details: details.merging(["action": policy.action]) { a, _ in a }, context: audit)
        case .quotaExceeded:
            event = API.event(policy, ctx, audit, .refused, details)
        case .rateLimited:
            return
        default:
            guard mutating, audit.tally?.count == 0 else { return }
            event = API.event(policy, ctx, audit, .failed, details)
        }
        do { try audits.append([event]) } catch {
            ctx.logger.error(
                "cannot record a refused request", metadata: ["request_id": "\(ctx.requestID)", "error": "\(error)"])
        }
    }

    /// Every route the API serves, as "METHOD path" (for the policy coverage test).
    public static func routeKeys(engine: Engine) -> [String] {
        let routes = Routes(router: Router(context: APIRequestContext.self), engine: engine, limits: APILimits())
        register(routes, engine: engine)
        return routes.keys
    }

    public static func router(engine: Engine, limits: APILimits = APILimits()) -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(ErrorMiddleware())
        register(Routes(router: router, engine: engine, limits: limits), engine: engine)
        return router
    }

    /// The caller of a request: local root over the unix socket, else the principal of a bearer token
    /// from the Authorization header. Tokens anywhere else are refused.
    static func authenticate(_ req: Request, _ ctx: APIRequestContext, policy: RoutePolicy, tokens: TokenService)
        async throws -> Principal?
    {
        let q = req.uri.queryParameters
        for name in ["access_token", "token", "bearer", "api_key", "refresh_token"] where q.get(name) != nil {
            throw VivariumError(.unauthenticated, "credentials are accepted only in the Authorization header")
        }
        // Public routes never look at credentials: they cannot be used as a free token oracle.
        if policy.ownership == .publicRoute { return nil }
        if ctx.isLocal { return .localRoot }
        guard let header = req.headers[.authorization] else { return nil }
        guard let token = Bearer.fromAuthorization(header) else {
            throw VivariumError(.unauthenticated, "invalid or expired credentials")
        }
        return try await tokens.verify(token)
    }

    /// The route-level decision of the policy table for this caller.
    static func authorize(_ policy: RoutePolicy, _ principal: Principal?) throws {
        switch PolicyTable.decide(policy, principal: principal) {
        case .allow: return
        case .unauthenticated: throw VivariumError(.unauthenticated, "authentication required")
        case .forbidden(let why): throw VivariumError(.forbidden, why)
        }
    }

    /// The tenant a call acts in: the caller's own; an admin may name another with `?tenant=`.
    static func tenant(_ req: Request, _ p: Principal?) throws -> String {
        guard let p else { throw VivariumError(.unauthenticated, "authentication required") }
        guard let t = req.uri.queryParameters.get("tenant") else { return p.tenant }
        guard p.role == .admin else { throw VivariumError(.forbidden, "only an admin acts in another tenant") }
        return try ResourceName.parse(String(t), what: "tenant").rawValue
    }

    static func name(_ ctx: APIRequestContext) throws -> String { try ctx.parameters.require("name") }

    static func register(_ r: Routes, engine: Engine) {
        r.add(.get, "/healthz") { _, _, _ in
            try json(
                HealthInfo(
                    status: "ok", version: VivariumVersion.string, cgroupMode: engine.config.cgroupMode.rawValue,
                    sandboxes: try engine.sandboxCount()))
        }
        r.add(.get, "/.well-known/jwks.json") { _, _, _ in try json(engine.tokens.keys.jwks) }

        // Tokens.
        r.add(.post, "/v1/tokens") { req, ctx, _ in
            let body: TokenRequest = try await decode(req, ctx)
            return try json(try await engine.token(body))
        }
        r.add(.post, "/v1/tokens/issue") { req, ctx, p in
            let body: IssueTokenRequest = try await decode(req, ctx)
            return try json(try await engine.issueToken(caller: p!, tenant: try tenant(req, p), body), status: .created)
        }
        r.add(.post, "/v1/tokens/revoke") { req, ctx, p in
            let body: RevokeRequest = try await decode(req, ctx)
            try engine.revoke(caller: p!, tenant: try tenant(req, p), body)
            return Response(status: .noContent)
        }
        r.add(.post, "/v1/keys/rotate") { _, _, _ in try json(try await engine.rotateKeys()) }

        // Tenants.
        r.add(.get, "/v1/tenants") { _, _, _ in try json(Page(items: try engine.listTenants(), nextCursor: nil)) }
        r.add(.post, "/v1/tenants") { req, ctx, _ in
            let body: CreateTenantRequest = try await decode(req, ctx)
            return try json(try engine.createTenant(body), status: .created)
        }
        r.add(.delete, "/v1/tenants/:name") { req, ctx, _ in
            try await engine.deleteTenant(try name(ctx), force: try flag(req, "force"))
            return Response(status: .noContent)
        }

        // Principals.
        r.add(.get, "/v1/principals") { req, _, p in
            try json(Page(items: try engine.listPrincipals(tenant: try tenant(req, p)), nextCursor: nil))
        }
        r.add(.post, "/v1/principals") { req, ctx, p in
            let body: CreatePrincipalRequest = try await decode(req, ctx)
            return try json(try engine.createPrincipal(caller: p!, tenant: try tenant(req, p), body), status: .created)
        }
        r.add(.delete, "/v1/principals/:name") { req, ctx, p in
            try engine.deletePrincipal(caller: p!, tenant: try tenant(req, p), name: try name(ctx))
            return Response(status: .noContent)
        }
        r.add(.post, "/v1/principals/:name/disable") { req, ctx, p in
            try json(try engine.disablePrincipal(caller: p!, tenant: try tenant(req, p), name: try name(ctx)))
        }
        r.add(.post, "/v1/principals/:name/keys") { req, ctx, p in
            let body: CreateAPIKeyRequest = try await decode(req, ctx)
            return try json(
                try engine.createAPIKey(caller: p!, tenant: try tenant(req, p), principal: try name(ctx), body),
                status: .created)
        }

        // Sandboxes.
        r.add(.get, "/v1/sandboxes") { req, _, p in
            let q = req.uri.queryParameters
            let limit = try q.get("limit").map { s -> Int in
                guard let n = Int(s), (1...500).contains(n) else {
                    throw VivariumError(.invalidArgument, "limit must be between 1 and 500")
                }
                return n
            }
            let cursor: String? = q.get("cursor").map { String($0) }
            return try json(try engine.list(tenant: try tenant(req, p), cursor: cursor, limit: limit))
        }
        r.add(.post, "/v1/sandboxes") { req, ctx, p in
            let body: CreateSandboxRequest = try await decode(req, ctx)
            return try json(try await engine.create(tenant: try tenant(req, p), body), status: .created)
        }
        r.add(.get, "/v1/sandboxes/:name") { req, ctx, p in
            let (t, n) = try sandboxTarget(req, ctx, p, engine)
            return try json(try await engine.get(tenant: t, name: n))
        }
        r.add(.delete, "/v1/sandboxes/:name") { req, ctx, p in
            let (t, n) = try sandboxTarget(req, ctx, p, engine)
            try await engine.delete(tenant: t, name: n, force: try flag(req, "force"))
            return Response(status: .noContent)
        }
        r.add(.post, "/v1/sandboxes/:name/start") { req, ctx, p in
            let (t, n) = try sandboxTarget(req, ctx, p, engine)
            return try json(try await engine.start(tenant: t, name: n))
        }
        r.add(.post, "/v1/sandboxes/:name/stop") { req, ctx, p in
            let (t, n) = try sandboxTarget(req, ctx, p, engine)
            return try json(try await engine.stop(tenant: t, name: n))
        }
        r.add(.post, "/v1/sandboxes/:name/exec") { req, ctx, p in
            let (t, n) = try sandboxTarget(req, ctx, p, engine)
            let body: ExecRequest = try await decode(req, ctx)
            return try json(try await engine.exec(tenant: t, name: n, body))
        }

        // Images.
        r.add(.get, "/v1/images") { req, _, p in
            try json(Page(items: try engine.listImages(tenant: try tenant(req, p)), nextCursor: nil))
        }
        r.add(.post, "/v1/images") { req, ctx, p in
            let body: ImportImageRequest = try await decode(req, ctx)
            return try json(try await engine.importImage(tenant: try tenant(req, p), body), status: .created)
        }
        r.add(.delete, "/v1/images/:name") { req, ctx, p in
            try await engine.removeImage(tenant: try tenant(req, p), name: try name(ctx))
            return Response(status: .noContent)
        }

        // Audit trail.
        r.add(.get, "/v1/audit") { req, _, p in
            var q = try auditQuery(req)
            // Admins read every tenant's records (or one, with ?tenant=); everyone else their own.
            q.tenant =
                p!.role == .admin
                ? try req.uri.queryParameters.get("tenant").map {
                    try ResourceName.parse(String($0), what: "tenant").rawValue
                } : p!.tenant
            return try json(try engine.auditRecords(q))
        }
        r.add(.get, "/v1/audit/checkpoints") { _, _, _ in try json(try engine.auditCheckpoints()) }
    }

    static func auditQuery(_ req: Request) throws -> AuditQuery {
        let q = req.uri.queryParameters
        func text(_ name: String) throws -> String? {
            guard let v = q.get(name) else { return nil }
            guard v.utf8.count <= 256 else { throw VivariumError(.invalidArgument, "\(name) is too long") }
            return String(v)
        }
        func number(_ name: String, _ range: ClosedRange<Int64>) throws -> Int64? {
            guard let v = q.get(name) else { return nil }
            guard let n = Int64(v), range.contains(n) else {
                throw VivariumError(
                    .invalidArgument, "\(name) must be a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        if let o = try text("outcome"), AuditOutcome(rawValue: o) == nil {
            throw VivariumError(
                .invalidArgument,
                "outcome must be one of \(AuditOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return AuditQuery(
            after: try number("cursor", 0...Int64.max), sinceMs: try number("since_ms", 0...Int64.max),
            untilMs: try number("until_ms", 0...Int64.max), actor: try text("actor"), action: try text("action"),
            target: try text("target"), outcome: try text("outcome"), limit: Int(try number("limit", 1...1000) ?? 100))
    }

    /// The tenant and name of a sandbox route, with a sandbox-bound token held to its sandbox.
    static func sandboxTarget(_ req: Request, _ ctx: APIRequestContext, _ p: Principal?, _ engine: Engine) throws
        -> (String, String)
    {
        let t = try tenant(req, p)
        let n = try name(ctx)
        if let p { try engine.checkBinding(p, tenant: t, sandbox: n) }
        return (t, n)
    }

    static func flag(_ req: Request, _ name: String) throws -> Bool {
        switch req.uri.queryParameters.get(name) {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        default: throw VivariumError(.invalidArgument, "\(name) must be true or false")
        }
    }

    /// Strict JSON decoding of a bounded body.
    static func decode<T: Decodable>(_ req: Request, _ ctx: APIRequestContext) async throws -> T {
        if let type = req.headers[.contentType], !type.lowercased().hasPrefix("application/json") {
            throw VivariumError(.unsupportedMediaType, "send application/json")
        }
        var req = req
        let buffer: ByteBuffer
        do {
            buffer = try await req.collectBody(upTo: maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw VivariumError(.payloadTooLarge, "request body exceeds \(maxBodyBytes) bytes")
        } catch let e as HTTPError where e.status == .contentTooLarge {
            throw VivariumError(.payloadTooLarge, "request body exceeds \(maxBodyBytes) bytes")
        }
        do {
            return try WireCoding.decoder().decode(T.self, from: Data(buffer: buffer))
        } catch let e as VivariumError {
            throw e
        } catch let e as DecodingError {
            throw VivariumError(.badRequest, "invalid JSON body: \(describe(e))")
        } catch {
            throw VivariumError(.badRequest, "invalid JSON body")
        }
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p.prefix(100))"
        }
        switch e {
        case .typeMismatch(_, let c): return "wrong type\(path(c))"
        case .valueNotFound(_, let c): return "missing value\(path(c))"
        case .keyNotFound(let k, let c): return "missing field \(k.stringValue.prefix(64))\(path(c))"
        case .dataCorrupted(let c): return "malformed\(path(c))"
        @unknown default: return "malformed"
        }
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try WireCoding.encoder().encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// The one mapping from `VivariumError` to HTTP.
    public static func status(for code: VivariumError.Code) -> HTTPResponse.Status {
        switch code {
        case .badRequest: .badRequest
        case .invalidArgument, .invalidName: .unprocessableContent
        case .notFound, .imageNotFound: .notFound
        case .alreadyExists, .imageInUse, .invalidState: .conflict
        case .payloadTooLarge: .contentTooLarge
        case .unsupportedMediaType: .unsupportedMediaType
        case .methodNotAllowed: .methodNotAllowed
        case .resourceExhausted, .unavailable: .serviceUnavailable
        case .unauthenticated: .unauthorized
        case .forbidden, .quotaExceeded: .forbidden
        case .rateLimited: .tooManyRequests
        default: .internalServerError
        }
    }
}

/// Turns every error into the JSON error body, adds `X-Request-Id`, and logs server-side failures.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let verr: VivariumError
            switch error {
            case let e as VivariumError: verr = e
            case let e as HTTPError:
                switch e.status {
                case .notFound: verr = VivariumError(.notFound, "no such route")
                case .methodNotAllowed: verr = VivariumError(.methodNotAllowed, "method not allowed")
                case .contentTooLarge: verr = VivariumError(.payloadTooLarge, "request body too large")
                case .badRequest: verr = VivariumError(.badRequest, "bad request")
                default: verr = VivariumError(.internalError, "request failed")
                }
            default: verr = VivariumError(.internalError, "internal error", cause: error)
            }
            let status = API.status(for: verr.code)
            if status.code >= 500 {
                context.logger.error(
                    "request failed", metadata: ["request_id": "\(context.requestID)", "error": "\(verr)"])
            }
            // Never leak internals: a 500 says only that it failed.
            let message =
                status == .internalServerError && verr.code == .internalError ? "internal error" : verr.message
            let body = ErrorBody(error: .init(code: verr.code.rawValue, message: message, requestId: context.requestID))
            response = try API.json(body, status: status)
            if let wait = verr.retryAfterSeconds { response.headers[.retryAfter] = String(wait) }
        }
        response.headers[HTTPField.Name("X-Request-Id")!] = context.requestID
        return response
    }
}
