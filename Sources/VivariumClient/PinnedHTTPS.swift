import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import VivariumCore

/// HTTPS to a remote daemon whose certificate is pinned by its SHA-256 fingerprint: no CA, no name
/// check, exactly that certificate. The connection stays open between requests (keep-alive) and is
/// opened again when the server closed it.
public struct PinnedHTTPS: HTTPTransport {
    public let host: String
    public let port: Int
    /// Upper-case hex without separators; nil accepts any certificate (used once, to show it at login).
    public let fingerprint: String?
    public var bearer: String?
    /// The fingerprint of the certificate the server presented last.
    public var seenFingerprint: String? { connection.seen.withLock { $0 } }
    private let connection = Connection()

    public init(host: String, port: Int, fingerprint: String?, bearer: String? = nil) {
        self.host = host
        self.port = port
        self.fingerprint = fingerprint.map(Self.normalize)
        self.bearer = bearer
    }

    final class Connection: Sendable {
        let channel = Mutex<(any Channel)?>(nil)
        let seen = Mutex<String?>(nil)
        deinit { channel.withLock { _ = $0?.close(mode: .all) } }
    }

    public static func normalize(_ fp: String) -> String { fp.replacingOccurrences(of: ":", with: "").uppercased() }

    public static func fingerprint(_ cert: NIOSSLCertificate) -> String? {
        guard let der = try? cert.toDERBytes() else { return nil }
        return Digest.of(der).hex.uppercased()
    }

    public func send(_ method: String, _ path: String, body: Data?) throws -> HTTPAnswer {
        let channel = try connection.channel.withLock { current -> any Channel in
            if let c = current, c.isActive { return c }
            let c = try connect()
            current = c
            return c
        }
        let promise = channel.eventLoop.makePromise(of: HTTPAnswer.self)
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Accept", value: "application/json")
        if let bearer { head.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        head.headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        if body != nil { head.headers.add(name: "Content-Type", value: "application/json") }
        let request = head
        channel.eventLoop.execute {
            guard let collector = try? channel.pipeline.syncOperations.handler(type: Collector.self) else {
                return promise.fail(VivariumError(.unavailable, "connection closed"))
            }
            collector.expect(promise)
            channel.write(HTTPClientRequestPart.head(request), promise: nil)
            if let body {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        do {
            let answer = try promise.futureResult.wait()
            if answer.headers["connection"]?.lowercased() == "close" {
                connection.channel.withLock { $0 = nil }
                _ = channel.close(mode: .all)
            }
            return answer
        } catch {
            connection.channel.withLock { $0 = nil }
            _ = channel.close(mode: .all)
            if let pinned = fingerprint, let got = seenFingerprint, got != pinned {
                throw VivariumError(
                    .unavailable,
                    "the server's certificate (SHA-256 \(got)) does not match the pinned one (\(pinned)): refusing to talk to it"
                )
            }
            if let e = error as? VivariumError { throw e }
            throw VivariumError(.unavailable, "request to \(host):\(port) failed: \(error)")
        }
    }

    private func connect() throws -> any Channel {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        // The custom callback below replaces chain validation; NIOSSL calls it only while verification is on.
        tls.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: tls)
        let pinned = fingerprint
        let seen = connection
        let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(context: context, serverHostname: nil) { certs, verdict in
                        let fp = certs.first.flatMap(Self.fingerprint)
                        seen.seen.withLock { $0 = fp }
                        verdict.succeed(fp != nil && (pinned == nil || fp == pinned) ? .certificateVerified : .failed)
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(Collector())
                }
            }
        do {
            return try bootstrap.connect(host: host, port: port).wait()
        } catch {
            throw VivariumError(.unavailable, "cannot reach \(host):\(port): \(error)")
        }
    }

    /// Collects one answer at a time; runs on the channel's event loop only.
    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        var promise: EventLoopPromise<HTTPAnswer>?
        var status = 0
        var headers: [String: String] = [:]
        var body = Data()

        func expect(_ p: EventLoopPromise<HTTPAnswer>) {
            promise = p
            status = 0
            headers = [:]
            body = Data()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                status = Int(h.status.code)
                for (k, v) in h.headers { headers[k.lowercased()] = v }
            case .body(let b):
                if body.count < 64 << 20 { body.append(contentsOf: b.readableBytesView) }
            case .end:
                let p = promise
                promise = nil
                p?.succeed(.init(status: status, headers: headers, body: body))
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            let p = promise
            promise = nil
            p?.fail(error)
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            let p = promise
            promise = nil
            p?.fail(VivariumError(.unavailable, "connection closed"))
        }
    }
}
