import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization
import VivariumCore

extension API {
    /// How long a connection may take to send its first request head, and stay idle between requests.
    public static let firstRequestTimeout = TimeAmount.seconds(10)
    public static let idleTimeout = TimeAmount.seconds(75)

    /// HTTP/1.1 with WebSocket upgrades behind the first-request guard, optionally wrapped (by TLS) and
    /// with the PROXY protocol reader ahead of everything.
    public static func server(
        router: Router<APIRequestContext>, trust: SourceTrust,
        wrap: @escaping @Sendable (GuardedChannel) throws -> any ServerChildChannel = { $0 }
    ) -> HTTPServerBuilder {
        let webSocket = router.buildResponder()
        return HTTPServerBuilder { responder in
            let http = HTTP1WebSocketUpgradeChannel(
                responder: responder, webSocketResponder: webSocket,
                configuration: .init(http1: .init(idleTimeout: idleTimeout), ws: .init()))
            return proxied(try wrap(GuardedChannel(http)), trust: trust)
        }
    }

    /// The PROXY protocol reader ahead of `child` (whatever its concrete type).
    static func proxied<C: ServerChildChannel>(_ child: C, trust: SourceTrust) -> any ServerChildChannel {
        ProxyProtocolChannel(child, trust: trust)
    }
}

/// The HTTP channel with a guard on its first request: while the WebSocket upgrade decision is pending,
/// a malformed request line would otherwise get no answer, and a silent connection would be kept forever.
public struct GuardedChannel: ServerChildChannel {
    public typealias Value = HTTP1WebSocketUpgradeChannel.Value
    let base: HTTP1WebSocketUpgradeChannel

    init(_ base: HTTP1WebSocketUpgradeChannel) { self.base = base }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            // Ahead of the HTTP codec, so that its own answer goes to the wire as bytes.
            let encoder = try channel.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self)
            try channel.pipeline.syncOperations.addHandler(
                FirstRequestGuard(timeout: API.firstRequestTimeout), position: .before(encoder.handler))
            let decoder = try channel.pipeline.syncOperations.context(
                handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(ParserErrorAnswer(), position: .after(decoder.handler))
            try channel.pipeline.syncOperations.addHandler(UpgradeRefusalAnswer())
            return value
        }
    }

    public func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
}

/// Holds the bytes of a connection's first request until its head is complete: a request line that is
/// not `METHOD TARGET HTTP/1.x` is answered 400 (JSON) and the connection closed; a head that does not
/// arrive within `timeout`, or exceeds 16 KiB, closes it. Then it forwards everything and leaves.
final class FirstRequestGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let maxHead = 16 << 10

    let timeout: TimeAmount
    var buffer: ByteBuffer?
    var timer: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { timer?.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        let bytes = Array(buffer!.readableBytesView)
        guard let lineEnd = bytes.firstIndex(of: 0x0A) else {
            if bytes.count > Self.maxHead { refuse(context, "request line too long") }
            return
        }
        guard Self.validRequestLine(bytes[..<lineEnd]) else { return refuse(context, "malformed request line") }
        let headEnd =
            bytes.count >= 4
            && (0...(bytes.count - 4)).contains { i in
                bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10
            }
        guard headEnd else {
            if bytes.count > Self.maxHead { refuse(context, "request head too large") }
            return
        }
        timer?.cancel()
        let all = buffer!
        buffer = nil
        context.fireChannelRead(wrapInboundOut(all))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// `METHOD SP TARGET SP HTTP/1.x` with an optional CR: exactly two spaces, a token method.
    static func validRequestLine(_ line: ArraySlice<UInt8>) -> Bool {
        var l = line
        if l.last == 13 { l = l.dropLast() }
        let parts = l.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty,
            parts[0].allSatisfy({ (0x41...0x5A).contains($0) || $0 == 0x2D }),
            Array(parts[2]) == Array("HTTP/1.1".utf8) || Array(parts[2]) == Array("HTTP/1.0".utf8)
        else { return false }
        return parts[1].allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    static func errorBody(_ why: String) -> Data {
        (try? WireCoding.encoder().encode(
            ErrorBody(error: .init(code: VivariumError.Code.badRequest.rawValue, message: why, requestId: ""))))
            ?? Data()
    }

    func refuse(_ context: ChannelHandlerContext, _ why: String) {
        timer?.cancel()
        buffer = nil
        let body = Self.errorBody(why)
        var out = context.channel.allocator.buffer(capacity: 160 + body.count)
        out.writeString(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n"
                + "Connection: close\r\n\r\n")
        out.writeBytes(body)
        let channel = context.channel
        context.writeAndFlush(NIOAny(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Answers a request the HTTP parser refuses after a connection's first (a head over the decoder's
/// bounds on a kept-alive connection, say) with the JSON error body and closes the connection, where
/// Hummingbird would answer a bodiless 400. While a response is still being written it only closes.
final class ParserErrorAnswer: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    var responding = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // An upgrade request (only a connection's first can be one) leaves HTTP behind: step aside.
        context.fireChannelRead(data)
        if case .head(let head) = unwrapInboundIn(data), head.headers.contains(name: "upgrade") {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head: responding = true
        case .end: responding = false
        case .body: break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError else { return context.fireErrorCaught(error) }
        let channel = context.channel
        guard !responding else { return channel.close(promise: nil) }
        let body = FirstRequestGuard.errorBody("malformed or oversized request head")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(data: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Refused WebSocket upgrades, by connection, until the connection's `UpgradeRefusalAnswer` sends them.
enum UpgradeRefusals {
    static let table = Mutex<[ObjectIdentifier: (error: VivariumError, requestID: String)]>([:])

    static func leave(_ e: VivariumError, requestID: String, on connection: ObjectIdentifier) {
        table.withLock { $0[connection] = (e, requestID) }
    }

    static func take(_ connection: ObjectIdentifier) -> (error: VivariumError, requestID: String)? {
        table.withLock { $0.removeValue(forKey: connection) }
    }
}

/// Answers a refused WebSocket upgrade as any refused request is answered (its status, the JSON error
/// body, `X-Request-Id`), where the upgrade machinery would send a bare 400; then closes the connection.
/// Last in the pipeline, it sees the upgrade handler's failure and nothing else of interest.
final class UpgradeRefusalAnswer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Never
    typealias OutboundOut = HTTPServerResponsePart

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is NIOWebSocketUpgradeError,
            let (e, requestID) = UpgradeRefusals.take(ObjectIdentifier(context.channel))
        else { return context.fireErrorCaught(error) }
        let body = (try? WireCoding.encoder().encode(e.body(requestID: requestID))) ?? Data()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        headers.add(name: "X-Request-Id", value: requestID)
        if let wait = e.retryAfterSeconds { headers.add(name: "Retry-After", value: String(wait)) }
        if e.code == .unauthenticated { headers.add(name: "WWW-Authenticate", value: "Bearer") }
        let status = HTTPResponseStatus(statusCode: e.httpStatus)
        let channel = context.channel
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(channel.allocator.buffer(data: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        _ = UpgradeRefusals.take(ObjectIdentifier(context.channel))
        context.fireChannelInactive()
    }
}
