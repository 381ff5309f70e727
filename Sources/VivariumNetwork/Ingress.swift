import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import VivariumCore

/// One request arriving at the ingress, as the resolver sees it.
public struct IngressRequest: Sendable {
    /// The Host header, lower case, without a port.
    public var host: String
    /// The token of an `Authorization: Bearer` header (never forwarded).
    public var bearer: String?
    /// The peer's address.
    public var source: String
}

/// What the ingress does with a request: forward it, or answer with an error itself.
public enum IngressDecision: Sendable {
    case forward(Upstream)
    /// `status` is an HTTP status, `code` the API's error code.
    case refuse(status: Int, code: String, message: String)
}

/// Decides every request of the ingress (the Engine's routes and the policy table).
public protocol IngressResolver: Sendable {
    func resolve(_ request: IngressRequest) async -> IngressDecision
    /// The current upstream of a TCP forward, nil when its sandbox is not running.
    func upstream(tcpPort: Int) async -> Upstream?
}

/// The daemon's ingress: an HTTP reverse proxy on one listener (TLS unless asked otherwise) that routes
/// each request by its Host header through the resolver; and plain TCP forwards from host ports.
///
/// One request per client connection: the request goes upstream with `Connection: close`, without the
/// caller's `Authorization` (nor hop-by-hop headers), with `X-Forwarded-For`, `-Proto` and `-Host`; the
/// response comes back as the upstream sends it, and the connection closes with the upstream's, so a
/// pipelined second request never reaches a sandbox unparsed. A WebSocket (any `Upgrade`) request is
/// passed with its upgrade; once the upstream answers 101 both ways are relayed as bytes.
public final class Ingress: Sendable {
    public let host: String
    let requestedPort: Int
    let tls: NIOSSLContext?
    let resolver: any IngressResolver
    let logger: Logger
    let group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    let channel = Mutex<(any Channel)?>(nil)
    let forwards = Mutex<[Int: any Channel]>([:])
    /// A connection idle this long both ways is closed.
    static let idleTimeout = TimeAmount.minutes(5)
    static let maxHeadBytes = 32 << 10

    public init(host: String, port: Int, tls: NIOSSLContext?, resolver: any IngressResolver, logger: Logger) {
        self.host = host
        requestedPort = port
        self.tls = tls
        self.resolver = resolver
        self.logger = logger
    }

    /// The port it listens on (once started).
    public var port: Int? { channel.withLock { $0?.localAddress?.port } }

    public var scheme: String { tls == nil ? "http" : "https" }

    /// Binds the listener.
    public func start() async throws {
        let (tls, resolver, logger) = (self.tls, self.resolver, self.logger)
        let ch = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.autoRead, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let ops = channel.pipeline.syncOperations
                    if let tls { try ops.addHandler(NIOSSLServerHandler(context: tls)) }
                    try ops.addHandler(IdleStateHandler(allTimeout: Self.idleTimeout))
                    let decoder = ByteToMessageHandler(
                        HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes),
                        maximumBufferSize: Self.maxHeadBytes)
                    try ops.addHandler(decoder)
                    try ops.addHandler(
                        ProxyHandler(
                            resolver: resolver, decoder: decoder, tls: tls != nil,
                            source: channel.remoteAddress?.ipAddress ?? "unknown", logger: logger))
                }
            }
            .bind(host: host, port: requestedPort).get()
        channel.withLock { $0 = ch }
        logger.info("ingress listening", metadata: ["address": "\(scheme)://\(host):\(ch.localAddress?.port ?? 0)"])
    }

    /// Opens a TCP forward from `port` on the ingress's address to whatever the resolver says.
    public func openForward(port: Int) async throws {
        let (resolver, logger) = (self.resolver, self.logger)
        let ch: any Channel
        do {
            ch = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.autoRead, value: false)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: Self.idleTimeout))
                        try channel.pipeline.syncOperations.addHandler(
                            ForwardHandler(resolver: resolver, port: port, logger: logger))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw VivariumError(.invalidArgument, "cannot listen on \(host):\(port): \(error)", cause: error)
        }
        forwards.withLock { $0[port] = ch }
    }

    /// Closes a TCP forward's listener (its open connections end with their sandbox or their peer).
    public func closeForward(port: Int) async {
        let ch = forwards.withLock { $0.removeValue(forKey: port) }
        try? await ch?.close()
    }

    public func stop() async {
        let listener = channel.withLock { c in
            let l = c
            c = nil
            return l
        }
        let open = forwards.withLock { f in
            let all = Array(f.values)
            f = [:]
            return all
        }
        for c in open + (listener.map { [$0] } ?? []) { try? await c.close() }
    }
}

/// The HTTP side of one ingress connection.
final class ProxyHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        case head
        case resolving
        case forwarding(RelayEnd)
        /// The request was sent; what the client sends next is dropped.
        case done
    }

    let resolver: any IngressResolver
    let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    let tls: Bool
    let source: String
    let logger: Logger
    var state = State.head
    var waiting: [HTTPServerRequestPart] = []
    var chunked = false
    var upgrade = false
    var pendingRead = false
    var context: ChannelHandlerContext?

    init(
        resolver: any IngressResolver, decoder: ByteToMessageHandler<HTTPRequestDecoder>, tls: Bool, source: String,
        logger: Logger
    ) {
        self.resolver = resolver
        self.decoder = decoder
        self.tls = tls
        self.source = source
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch state {
        case .head:
            guard case .head(let head) = part else { return context.close(promise: nil) }
            begin(head, context)
        case .resolving: waiting.append(part)
        case .forwarding(let upstream): send(part, to: upstream, context)
        case .done: break
        }
    }

    /// Reads wait while the request is resolved; then the relay's client end holds them while the
    /// upstream cannot take more.
    func read(context: ChannelHandlerContext) {
        if case .resolving = state { pendingRead = true } else { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .forwarding(let up) = state { up.closeAfterFlush() }
        state = .done
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .head = state, error is HTTPParserError {
            return refuse(400, "bad_request", "malformed HTTP request", context)
        }
        if case .head = state, error is ByteToMessageDecoderError.PayloadTooLargeError {
            return refuse(431, "bad_request", "request head over \(Ingress.maxHeadBytes) bytes", context)
        }
        context.close(promise: nil)
    }

    // MARK: The request

    func begin(_ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        let hosts = head.headers["host"]
        guard hosts.count == 1, let host = Self.hostWithoutPort(hosts[0]) else {
            return refuse(400, "bad_request", "the request needs exactly one Host header", context)
        }
        var bearer: String?
        if let auth = head.headers["authorization"].first {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { bearer = String(parts[1]) }
        }
        state = .resolving
        chunked = head.headers["transfer-encoding"].contains { $0.lowercased().contains("chunked") }
        upgrade = !head.headers["upgrade"].isEmpty
        let request = IngressRequest(host: host, bearer: bearer, source: source)
        let resolver = self.resolver
        let promise = context.eventLoop.makePromise(of: IngressDecision.self)
        promise.completeWithTask { await resolver.resolve(request) }
        promise.futureResult.assumeIsolated().whenSuccess { decision in
            switch decision {
            case .refuse(let status, let code, let message): self.refuse(status, code, message, context)
            case .forward(let upstream): self.connect(upstream, head, host, context)
            }
        }
    }

    func connect(_ upstream: Upstream, _ head: HTTPRequestHead, _ host: String, _ context: ChannelHandlerContext) {
        let end = RelayEnd()
        let bound = NIOLoopBound(end, eventLoop: context.eventLoop)
        upstream.connect(on: context.eventLoop) { bound.value }.assumeIsolated().whenComplete {
            result in
            switch result {
            case .failure(let error):
                self.logger.debug("ingress upstream unreachable", metadata: ["error": "\(error)"])
                self.refuse(502, "unavailable", "the sandbox does not answer on port \(upstream.port)", context)
            case .success:
                guard context.channel.isActive else { return end.closeAfterFlush() }
                self.forward(head, host, to: end, context)
            }
        }
    }

    func forward(_ head: HTTPRequestHead, _ host: String, to up: RelayEnd, _ context: ChannelHandlerContext) {
        let ops = context.pipeline.syncOperations
        if upgrade {
            // Relayed both ways once the upstream says 101: the client end goes before the decoder and
            // holds what the client sends until then; after a 101 the HTTP handlers leave.
            let client = RelayEnd(gated: true)
            RelayEnd.pair(client, up)
            try? ops.addHandler(client, position: .before(decoder))
            up.onFirstBytes = { [weak client] first in
                guard let client else { return }
                let line = first.getString(at: first.readerIndex, length: min(first.readableBytes, 12)) ?? ""
                if line.hasPrefix("HTTP/1.1 101") || line.hasPrefix("HTTP/1.0 101") {
                    client.open()
                    _ = ops.removeHandler(self.decoder)
                    _ = ops.removeHandler(context: context)
                } else {
                    // Not upgraded: the client's further bytes never go upstream.
                    client.partner = nil
                }
            }
        } else {
            // The client end goes last: it only writes (the decoder and this handler take what the client
            // sends), and holds the channel's reads while the upstream cannot take more.
            let client = RelayEnd()
            RelayEnd.pair(client, up)
            try? ops.addHandler(client)
        }
        up.write(Self.requestHead(head, host: host, source: source, tls: tls, chunked: chunked, upgrade: upgrade))
        state = .forwarding(up)
        let parts = waiting
        waiting = []
        for p in parts { send(p, to: up, context) }
        up.flush()
        if pendingRead {
            pendingRead = false
            context.read()
        }
    }

    func send(_ part: HTTPServerRequestPart, to up: RelayEnd, _ context: ChannelHandlerContext) {
        switch part {
        case .head: break
        case .body(let buf):
            guard chunked else { return up.write(buf) }
            var b = context.channel.allocator.buffer(capacity: buf.readableBytes + 16)
            b.writeString(String(buf.readableBytes, radix: 16) + "\r\n")
            b.writeImmutableBuffer(buf)
            b.writeString("\r\n")
            up.write(b)
        case .end:
            if chunked { up.write(context.channel.allocator.buffer(string: "0\r\n\r\n")) }
            up.flush()
            state = .done
        }
    }

    /// Answers the client with a JSON error and closes.
    func refuse(_ status: Int, _ code: String, _ message: String, _ context: ChannelHandlerContext) {
        state = .done
        let body = #"{"error":{"code":"\#(code)","message":"\#(Self.jsonEscaped(message))"}}"#
        let reason = HTTPResponseStatus(statusCode: status).reasonPhrase
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\n"
        text += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n"
        if status == 401 { text += "WWW-Authenticate: Bearer\r\n" }
        text += "\r\n" + body
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }

    /// Headers that describe one hop, never forwarded (plus what `Connection` names).
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "authorization", "proxy-authorization", "forwarded", "x-forwarded-for", "x-forwarded-proto",
        "x-forwarded-host",
    ]

    /// The request head as the upstream gets it.
    static func requestHead(
        _ head: HTTPRequestHead, host: String, source: String, tls: Bool, chunked: Bool, upgrade: Bool
    ) -> ByteBuffer {
        let named = Set(
            head.headers["connection"].flatMap { $0.split(separator: ",") }.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            })
        var text = "\(head.method.rawValue) \(head.uri) HTTP/1.1\r\n"
        for (name, value) in head.headers {
            let n = name.lowercased()
            if hopByHop.contains(n) || (named.contains(n) && n != "upgrade") || (chunked && n == "content-length") {
                continue
            }
            text += "\(name): \(value)\r\n"
        }
        if chunked { text += "Transfer-Encoding: chunked\r\n" }
        if upgrade {
            text += "Connection: Upgrade\r\n"
            for u in head.headers["upgrade"] { text += "Upgrade: \(u)\r\n" }
        } else {
            text += "Connection: close\r\n"
        }
        text += "X-Forwarded-For: \(source)\r\nX-Forwarded-Proto: \(tls ? "https" : "http")\r\n"
        text += "X-Forwarded-Host: \(host)\r\n\r\n"
        return ByteBuffer(string: text)
    }

    /// `example.com:8443` → `example.com`; nil when it is not a host name (or IPv4 address).
    static func hostWithoutPort(_ h: String) -> String? {
        var s = Substring(h.lowercased())
        if let colon = s.lastIndex(of: ":") {
            guard Int(s[s.index(after: colon)...]) != nil else { return nil }
            s = s[..<colon]
        }
        if s.hasSuffix(".") { s = s.dropLast() }
        return try? PortRoute.hostname(String(s))
    }

    static func jsonEscaped(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }
}

/// One connection of a TCP forward: relayed as bytes to the route's sandbox, or closed when it has none.
final class ForwardHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let resolver: any IngressResolver
    let port: Int
    let logger: Logger

    init(resolver: any IngressResolver, port: Int, logger: Logger) {
        self.resolver = resolver
        self.port = port
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        let (resolver, port) = (self.resolver, self.port)
        let loop = context.eventLoop
        let promise = loop.makePromise(of: Upstream?.self)
        promise.completeWithTask { await resolver.upstream(tcpPort: port) }
        let client = RelayEnd()
        let up = RelayEnd()
        RelayEnd.pair(client, up)
        let bound = NIOLoopBound(up, eventLoop: loop)
        promise.futureResult.assumeIsolated().whenSuccess { upstream in
            guard let upstream else { return context.close(promise: nil) }
            upstream.connect(on: loop) { bound.value }.assumeIsolated().whenComplete {
                result in
                guard case .success = result, context.channel.isActive else {
                    up.closeAfterFlush()
                    return context.close(promise: nil)
                }
                _ = context.pipeline.syncOperations.removeHandler(context: context)
                try? context.pipeline.syncOperations.addHandler(client)
                context.read()
            }
        }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
    }
}
