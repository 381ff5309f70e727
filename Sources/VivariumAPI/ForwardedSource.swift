import Foundation
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
import VivariumCore

/// Who is really calling: the peer, unless the peer is a configured trusted proxy, in which case its
/// PROXY protocol header or X-Forwarded-For says. Headers from anyone else change nothing.
public struct SourceTrust: Sendable {
    public let trustedProxies: [CIDR]

    public init(trustedProxies: [CIDR] = []) {
        self.trustedProxies = trustedProxies
    }

    public func trusts(_ ip: String?) -> Bool {
        guard let ip else { return false }
        return trustedProxies.contains { $0.contains(ip) }
    }

    /// The client address of a request: a trusted proxy's PROXY header first, then the right-most
    /// X-Forwarded-For entry that is not itself a trusted proxy, else the peer.
    public func clientAddress(peer: String?, proxied: String?, forwardedFor: String?) -> String? {
        guard trusts(peer) else { return peer }
        if let proxied { return proxied }
        if let xff = forwardedFor {
            for entry in xff.split(separator: ",").reversed() {
                let ip = entry.trimmingCharacters(in: .whitespaces)
                guard CIDR.parseAddress(ip) != nil else { return peer }
                if !trusts(ip) { return ip }
            }
        }
        return peer
    }
}

/// Source addresses that PROXY protocol headers announced, per connection.
enum ProxiedSources {
    static let table = Mutex<[ObjectIdentifier: String]>([:])
    static func get(_ channel: any Channel) -> String? { table.withLock { $0[ObjectIdentifier(channel)] } }
}

/// Reads a PROXY protocol v1 or v2 header at the start of a connection from a trusted proxy, records
/// the source it announces, and gets out of the way. From any other peer it removes itself at once.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    let trust: SourceTrust
    var buffer: ByteBuffer?

    init(trust: SourceTrust) { self.trust = trust }

    func handlerAdded(context: ChannelHandlerContext) {
        if !trust.trusts(context.channel.remoteAddress?.ipAddress) {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var b = buffer {
            b.writeBuffer(&incoming)
            buffer = b
        } else {
            buffer = incoming
        }
        guard var b = buffer else { return }
        let bytes = b.readableBytesView
        switch Self.parse(Array(bytes.prefix(536))) {
        case .needMore where bytes.count < 536:
            return
        case .needMore, .invalid:
            context.close(promise: nil)
        case .none:
            finish(context: context, rest: b)
        case .header(let length, let source):
            if let source {
                let id = ObjectIdentifier(context.channel)
                ProxiedSources.table.withLock { $0[id] = source }
                context.channel.closeFuture.whenComplete { _ in ProxiedSources.table.withLock { $0[id] = nil } }
            }
            b.moveReaderIndex(forwardBy: length)
            finish(context: context, rest: b)
        }
    }

    func finish(context: ChannelHandlerContext, rest: ByteBuffer) {
        buffer = nil
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    enum Parsed: Equatable {
        case needMore
        case invalid
        /// No PROXY header: the connection starts with its own bytes.
        case none
        /// A header of `length` bytes; `source` is nil for LOCAL/UNKNOWN.
        case header(length: Int, source: String?)
    }

    static func parse(_ b: [UInt8]) -> Parsed {
        let v1 = Array("PROXY ".utf8)
        if b.count < 6 {
            if v1.starts(with: b) || v2Signature.starts(with: b) { return .needMore }
        }
        if b.starts(with: v1) {
            guard let end = b.firstIndex(of: 0x0A), end < 108 else { return b.count < 108 ? .needMore : .invalid }
            guard end > 0, b[end - 1] == 0x0D else { return .invalid }
            let line = String(decoding: b[0..<(end - 1)], as: UTF8.self).split(separator: " ")
            guard line.count >= 2 else { return .invalid }
            if line[1] == "UNKNOWN" { return .header(length: end + 1, source: nil) }
            guard line.count == 6, line[1] == "TCP4" || line[1] == "TCP6", CIDR.parseAddress(String(line[2])) != nil
            else { return .invalid }
            return .header(length: end + 1, source: String(line[2]))
        }
        if b.count < 16 { return v2Signature.starts(with: b.prefix(12)) ? .needMore : .none }
        guard b.starts(with: v2Signature) else { return .none }
        let version = b[12] >> 4
        let command = b[12] & 0x0F
        let family = b[13] >> 4
        let length = Int(b[14]) << 8 | Int(b[15])
        guard version == 2, length <= 520 else { return .invalid }
        guard b.count >= 16 + length else { return .needMore }
        if command == 0 { return .header(length: 16 + length, source: nil) }  // LOCAL
        guard command == 1 else { return .invalid }
        switch family {
        case 1 where length >= 12:
            let a = b[16..<20].map(String.init).joined(separator: ".")
            return .header(length: 16 + length, source: a)
        case 2 where length >= 36:
            var groups: [String] = []
            for i in stride(from: 16, to: 32, by: 2) {
                groups.append(String(Int(b[i]) << 8 | Int(b[i + 1]), radix: 16))
            }
            return .header(length: 16 + length, source: groups.joined(separator: ":"))
        default:
            return .header(length: 16 + length, source: nil)
        }
    }
}

/// Puts the PROXY protocol handler ahead of everything else (TLS included) on a child channel.
public struct ProxyProtocolChannel<Base: ServerChildChannel>: ServerChildChannel {
    public typealias Value = Base.Value
    let base: Base
    let trust: SourceTrust

    public init(_ base: Base, trust: SourceTrust) {
        self.base = base
        self.trust = trust
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler(trust: trust), position: .first)
        }.flatMap { base.setup(channel: channel, logger: logger) }
    }

    public func handle(value: Value, logger: Logger) async { await base.handle(value: value, logger: logger) }
}
