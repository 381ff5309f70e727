import NIOCore
import NIOPosix
import VivariumCore
import VivariumOS

/// Where a published port is served from: a sandbox's address on the bridge, in the network's namespace.
public struct Upstream: Sendable, Equatable {
    public var namespace: String?
    public var address: String
    public var port: Int

    public init(namespace: String?, address: String, port: Int) {
        self.namespace = namespace
        self.address = address
        self.port = port
    }

    static let connectTimeoutMs: Int32 = 3000

    /// A channel connected to the upstream on `loop` (the partner's, so that the two ends of a relay
    /// share one event loop), with `handler` on it. The connect is made in the network's namespace on a
    /// thread of NIO's pool.
    func connect(on loop: any EventLoop, handler: @escaping @Sendable () -> any ChannelHandler)
        -> EventLoopFuture<any Channel>
    {
        let (ns, address, port) = (namespace, address, UInt16(port))
        return NIOThreadPool.singleton.runIfActive(eventLoop: loop) {
            try NamespaceSocket.connectTCP(in: ns, to: address, port: port, timeoutMs: Self.connectTimeoutMs)
        }.flatMap { fd in
            ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler()) }
                }
                .withConnectedSocket(fd)
        }
    }
}

/// One end of a byte relay between two channels on one event loop: what it reads it writes to its
/// partner; it reads no more while the partner cannot take more (so neither end buffers without bound);
/// when its channel closes it closes the partner's after a flush. `gated` holds what it reads until
/// `open()` (an upgraded connection's client side, until the upstream said 101).
final class RelayEnd: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: RelayEnd?
    var context: ChannelHandlerContext?
    var pendingRead = false
    var gated: Bool
    var held: [ByteBuffer] = []
    var heldBytes = 0
    /// Called with the first bytes read (the upstream's status line), once.
    var onFirstBytes: ((ByteBuffer) -> Void)?
    static let maxHeld = 64 << 10

    init(gated: Bool = false) { self.gated = gated }

    static func pair(_ a: RelayEnd, _ b: RelayEnd) {
        a.partner = b
        b.partner = a
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buf = unwrapInboundIn(data)
        if let f = onFirstBytes {
            onFirstBytes = nil
            f(buf)
        }
        guard !gated else {
            heldBytes += buf.readableBytes
            if heldBytes > Self.maxHeld { context.close(promise: nil) } else { held.append(buf) }
            return
        }
        partner?.write(buf)
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.closeAfterFlush()
        partner = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeRead() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let p = partner, !p.isWritable { pendingRead = true } else { context.read() }
    }

    /// Lets what was held through, and what comes next.
    func open() {
        gated = false
        for b in held { partner?.write(b) }
        held = []
        partner?.flush()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func write(_ buf: ByteBuffer) { context?.write(wrapOutboundOut(buf), promise: nil) }

    func flush() { context?.flush() }

    func resumeRead() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }

    func closeAfterFlush() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }
}
