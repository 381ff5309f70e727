import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import VivariumCore
import VivariumEngine

/// The request context of every API call: carries its request id.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let requestID: String

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        requestID = randomHex(bytes: 8)
    }
    public var maxUploadSize: Int { API.maxBodyBytes }
}

public enum API {
    /// Largest accepted request body.
    public static let maxBodyBytes = 256 << 10
    /// Every sandbox call over the unix socket acts for the default tenant until identities arrive.
    static let tenant = Engine.defaultTenant

    public static func router(engine: Engine) -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(ErrorMiddleware())

        router.get("/healthz") { _, _ in
            try json(
                HealthInfo(
                    status: "ok", version: VivariumVersion.string, cgroupMode: engine.config.cgroupMode.rawValue,
                    sandboxes: try engine.sandboxCount()))
        }

        let sandboxes = router.group("/v1/sandboxes")
        sandboxes.get { req, _ in
            let q = req.uri.queryParameters
            let limit = try q.get("limit").map { s -> Int in
                guard let n = Int(s), (1...500).contains(n) else {
                    throw VivariumError(.invalidArgument, "limit must be between 1 and 500")
                }
                return n
            }
            let cursor: String? = q.get("cursor").map { String($0) }
            return try json(try engine.list(tenant: tenant, cursor: cursor, limit: limit))
        }
        sandboxes.post { req, ctx in
            let body: CreateSandboxRequest = try await decode(req, ctx)
            return try json(try await engine.create(tenant: tenant, body), status: .created)
        }
        sandboxes.get(":name") { _, ctx in
            try json(try await engine.get(tenant: tenant, name: try ctx.parameters.require("name")))
        }
        sandboxes.delete(":name") { req, ctx in
            let force = try flag(req, "force")
            try await engine.delete(tenant: tenant, name: try ctx.parameters.require("name"), force: force)
            return Response(status: .noContent)
        }
        sandboxes.post(":name/start") { _, ctx in
            try json(try await engine.start(tenant: tenant, name: try ctx.parameters.require("name")))
        }
        sandboxes.post(":name/stop") { _, ctx in
            try json(try await engine.stop(tenant: tenant, name: try ctx.parameters.require("name")))
        }
        sandboxes.post(":name/exec") { req, ctx in
            let body: ExecRequest = try await decode(req, ctx)
            return try json(try await engine.exec(tenant: tenant, name: try ctx.parameters.require("name"), body))
        }

        let images = router.group("/v1/images")
        images.get { _, _ in try json(Page(items: try engine.listImages(tenant: nil), nextCursor: nil)) }
        images.post { req, ctx in
            let body: ImportImageRequest = try await decode(req, ctx)
            return try json(try await engine.importImage(tenant: tenant, body), status: .created)
        }
        images.delete(":name") { _, ctx in
            try await engine.removeImage(tenant: tenant, name: try ctx.parameters.require("name"))
            return Response(status: .noContent)
        }
        return router
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
        }
        response.headers[HTTPField.Name("X-Request-Id")!] = context.requestID
        return response
    }
}
