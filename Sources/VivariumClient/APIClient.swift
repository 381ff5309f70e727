import Foundation
import VivariumCore

/// The typed client of the Vivarium API: one call per `Endpoints` route, over the unix socket, plain
/// loopback TCP, or a pinned HTTPS transport. Error bodies come back as the `VivariumError` the daemon
/// raised (its code and message).
public struct APIClient: Sendable {
    /// The socket client (unix socket or plain TCP).
    public var http: SocketHTTPClient
    /// Replaces `http` when set (the CLI's pinned HTTPS transport).
    public var transport: (any HTTPTransport)?

    public init(socketPath: String) { http = SocketHTTPClient(socketPath: socketPath) }
    public init(http: SocketHTTPClient) { self.http = http }
    public init(transport: any HTTPTransport) {
        http = SocketHTTPClient(socketPath: "/nonexistent")
        self.transport = transport
    }

    /// Sends a request as is and returns the raw answer (for tests of error handling).
    public func send(_ method: String, _ path: String, body: Data? = nil) throws -> HTTPAnswer {
        if let transport { return try transport.send(method, path, body: body) }
        return try http.send(method, path, body: body)
    }

    /// Calls a route: `name` fills the path's `{name}`, `query` pairs with a nil value are left out.
    public func call<Request, Response>(
        _ endpoint: Endpoint<Request, Response>, _ body: Request? = nil, name: String? = nil,
        query: [(String, String?)] = []
    ) throws -> Response {
        let route = endpoint.route
        let path = route.path(name.map { ["name": $0] } ?? [:], query: query)
        let data = try body.map { try WireCoding.encoder().encode($0) }
        let r = try send(route.method.rawValue, path, body: data)
        try Self.check(r)
        if Response.self == Empty.self, r.body.isEmpty { return Empty() as! Response }
        do {
            return try WireCoding.decoder(for: Response.self).decode(Response.self, from: r.body)
        } catch {
            throw VivariumError(.unavailable, "the daemon sent an answer this client cannot read", cause: error)
        }
    }

    /// Calls a route whose body is raw bytes (an archive), not JSON.
    public func upload<Response>(
        _ endpoint: Endpoint<Empty, Response>, _ data: Data, name: String? = nil, query: [(String, String?)]
    ) throws -> Response {
        let route = endpoint.route
        let r = try send(route.method.rawValue, route.path(name.map { ["name": $0] } ?? [:], query: query), body: data)
        try Self.check(r)
        return try WireCoding.decoder(for: Response.self).decode(Response.self, from: r.body)
    }

    /// Calls a route that answers raw bytes (a file's content): the checked answer, headers included.
    public func download(
        _ route: Route, name: String? = nil, query: [(String, String?)], limit: Int
    ) throws -> HTTPAnswer {
        var client = self
        client.http.maxResponseBytes = limit
        let r = try client.send(route.method.rawValue, route.path(name.map { ["name": $0] } ?? [:], query: query))
        try Self.check(r)
        return r
    }

    /// A request by method and path, decoding the answer (tests and tools that build paths themselves).
    public func call<T: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = Optional<Int>.none)
        throws -> T
    {
        let data = try body.map { try WireCoding.encoder().encode($0) }
        let r = try send(method, path, body: data)
        try Self.check(r)
        return try WireCoding.decoder().decode(T.self, from: r.body)
    }

    public func callNoContent(_ method: String, _ path: String, body: (some Encodable)? = Optional<Int>.none) throws {
        try Self.check(try send(method, path, body: try body.map { try WireCoding.encoder().encode($0) }))
    }

    /// Every item of a paged list route, following `next_cursor`.
    public func all<Item>(
        _ endpoint: Endpoint<Empty, Page<Item>>, limit: Int, query: [(String, String?)] = []
    ) throws -> [Item] {
        var items: [Item] = []
        var cursor: String?
        repeat {
            let page = try call(endpoint, query: query + [("limit", String(limit)), ("cursor", cursor)])
            items += page.items
            cursor = page.nextCursor
        } while cursor != nil
        return items
    }

    static func check(_ r: HTTPAnswer) throws {
        guard (200..<300).contains(r.status) else {
            if let e = try? WireCoding.decoder().decode(ErrorBody.self, from: r.body) {
                throw VivariumError(
                    VivariumError.Code(rawValue: e.error.code), e.error.message,
                    retryAfterSeconds: r.headers["retry-after"].flatMap { Int($0) })
            }
            throw VivariumError(.unavailable, "the daemon answered HTTP \(r.status)")
        }
    }
}
