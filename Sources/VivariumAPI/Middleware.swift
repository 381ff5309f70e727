import HTTPTypes
import Hummingbird
import Logging
import NIOHTTP1
import VivariumCore
import VivariumEngine

/// Sets the request's source: "local" on the unix socket, else the peer, or what a trusted proxy says.
struct SourceMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let trust: SourceTrust

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        context.source =
            context.isLocal
            ? "local"
            : trust.clientAddress(
                peer: context.remote?.ipAddress, proxied: context.proxied,
                forwardedFor: request.headers[HTTPField.Name("X-Forwarded-For")!]) ?? "unknown"
        return try await next(request, context)
    }
}

/// Establishes the caller of a request: local root on the unix socket, anonymous on public routes,
/// otherwise the principal of a bearer token from the Authorization header (or, for a WebSocket upgrade,
/// the `vivarium.bearer` subprotocol). Credentials anywhere else are refused. A failure is kept in the
/// context, for the route to record under its action and answer.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let gate: Gate
    /// False on routes of public actions: credentials are not even looked at (no token oracle).
    let requireCredentials: Bool

    static let queryCredentials = ["access_token", "token", "bearer", "api_key", "refresh_token"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        context.authentication = await authenticate(request, context)
        return try await next(request, context)
    }

    func authenticate(_ request: Request, _ context: Context) async -> Result<Caller, VivariumError> {
        let q = request.uri.queryParameters
        if Self.queryCredentials.contains(where: { q.get($0) != nil }) {
            return .failure(
                VivariumError(.unauthenticated, "credentials are accepted only in the Authorization header"))
        }
        let tenant: ResourceName?
        do {
            tenant = try q.get("tenant").map { try ResourceName.parse(String($0), what: "tenant") }
        } catch let e as VivariumError {
            return .failure(e)
        } catch {
            return .failure(VivariumError(.invalidName, "invalid tenant"))
        }
        if context.isLocal { return .success(.localRoot(requestID: context.requestID, requestedTenant: tenant)) }
        guard requireCredentials else { return .success(context.anonymous) }
        let upgrade = request.headers[.upgrade] != nil
        let door: Caller.Door = upgrade ? .websocket : .rest
        var bearer: String?
        if request.headers[.authorization] != nil || (upgrade && request.headers[.secWebSocketProtocol] != nil) {
            guard let token = Bearer.of(request) else {
                return .failure(VivariumError(.unauthenticated, "invalid or expired credentials"))
            }
            bearer = token
        }
        return await gate.authenticate(
            bearer: bearer, source: context.source, requestID: context.requestID, requestedTenant: tenant, door: door)
    }
}

/// Turns every error into the JSON error body, adds `X-Request-Id`, and logs server-side failures. A
/// known path asked with a method it does not serve answers 405 with `Allow`, whatever the method.
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = APIRequestContext
    let routes: [Route]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let e as HTTPError where e.status == .notFound {
            // The path the router would have matched: literal segments win over placeholders, as in its trie.
            let matching = routes.filter { $0.matches(path: Substring(request.uri.path)) }
            let best = matching.map(\.path).max { a, b in
                a.split(separator: "/").map { !$0.hasPrefix("{") }.lexicographicallyPrecedes(
                    b.split(separator: "/").map { !$0.hasPrefix("{") }
                ) { !$0 && $1 }
            }
            let allowed = Set(matching.filter { $0.path == best }.map(\.method.rawValue))
            if allowed.isEmpty {
                response = try VivariumError(.notFound, "no such route").response(from: request, context: context)
            } else {
                let allow = allowed.sorted().joined(separator: ", ")
                response = try VivariumError(
                    .methodNotAllowed, "\(request.method.rawValue.prefix(32)) is not allowed here; use \(allow)"
                ).response(from: request, context: context)
                response.headers[.allow] = allow
            }
        } catch {
            let e = VivariumError.from(error)
            if e.status.code >= 500 {
                context.logger.error(
                    "request failed", metadata: ["request_id": "\(context.requestID)", "error": "\(e)"])
            }
            response = try e.response(from: request, context: context)
        }
        response.headers[HTTPField.Name("X-Request-Id")!] = context.requestID
        return response
    }
}

extension VivariumError: HTTPResponseError {
    /// `httpStatus`, for Hummingbird.
    public var status: HTTPResponse.Status {
        HTTPResponse.Status(code: httpStatus, reasonPhrase: HTTPResponseStatus(statusCode: httpStatus).reasonPhrase)
    }

    /// The error as an HTTP response.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try API.json(body(requestID: (context as? APIRequestContext)?.requestID ?? ""), status: status)
        if let wait = retryAfterSeconds { response.headers[.retryAfter] = String(wait) }
        if code == .unauthenticated { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }

    /// The JSON error body. A 500 says only that it failed: internals never leave the daemon.
    func body(requestID: String) -> ErrorBody {
        let message = status == .internalServerError && code == .internalError ? "internal error" : self.message
        return ErrorBody(error: .init(code: code.rawValue, message: message, requestId: requestID))
    }

    /// Any error as the one the API answers with.
    static func from(_ error: any Error) -> VivariumError {
        switch error {
        case let e as VivariumError: return e
        case let e as HTTPError:
            switch e.status {
            case .notFound: return VivariumError(.notFound, "no such route")
            case .methodNotAllowed: return VivariumError(.methodNotAllowed, "method not allowed")
            case .contentTooLarge: return VivariumError(.payloadTooLarge, "request body too large")
            case .badRequest: return VivariumError(.badRequest, "bad request")
            default: return VivariumError(.internalError, "request failed")
            }
        default: return VivariumError(.internalError, "internal error", cause: error)
        }
    }
}
