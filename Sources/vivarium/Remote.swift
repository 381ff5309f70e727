import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import VivariumCore

/// HTTPS to a remote daemon whose certificate is pinned by its SHA-256 fingerprint: no CA, no name
/// check, exactly that certificate.
struct PinnedHTTPS: HTTPTransport {
    let host: String
    let port: Int
    /// Upper-case hex without separators; nil accepts any certificate (used once, to show it at login).
    let fingerprint: String?
    var bearer: String?
    let seen = SeenFingerprint()

    final class SeenFingerprint: @unchecked Sendable {
        let lock = NSLock()
        var value: String?
    }

    static func normalize(_ fp: String) -> String { fp.replacingOccurrences(of: ":", with: "").uppercased() }

    static func fingerprint(_ cert: NIOSSLCertificate) -> String? {
        guard let der = try? cert.toDERBytes() else { return nil }
        return Digest.of(der).hex.uppercased()
    }

    func send(_ method: String, _ path: String, body: Data?) throws -> UnixHTTPClient.Response {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        // The custom callback below replaces chain validation; NIOSSL calls it only while verification is on.
        tls.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: tls)
        let pinned = fingerprint.map(Self.normalize)
        let seen = self.seen
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: UnixHTTPClient.Response.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(context: context, serverHostname: nil) { certs, verdict in
                        let fp = certs.first.flatMap(Self.fingerprint)
                        seen.lock.withLock { seen.value = fp }
                        verdict.succeed(fp != nil && (pinned == nil || fp == pinned) ? .certificateVerified : .failed)
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(Collector(promise: promise))
                }
            }
        let channel: any Channel
        do {
            channel = try bootstrap.connect(host: host, port: port).wait()
        } catch {
            throw VivariumError(.unavailable, "cannot reach \(host):\(port): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Accept", value: "application/json")
        if let bearer { head.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        head.headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        if body != nil { head.headers.add(name: "Content-Type", value: "application/json") }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        do {
            let r = try promise.futureResult.wait()
            _ = try? channel.close().wait()
            return r
        } catch {
            _ = try? channel.close().wait()
            if let pinned, let got = seen.lock.withLock({ seen.value }), got != pinned {
                throw VivariumError(
                    .unavailable,
                    "the server's certificate (SHA-256 \(got)) does not match the pinned one (\(pinned)): refusing to talk to it"
                )
            }
            throw VivariumError(.unavailable, "request to \(host):\(port) failed: \(error)")
        }
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let promise: EventLoopPromise<UnixHTTPClient.Response>
        var status = 0
        var headers: [String: String] = [:]
        var body = Data()
        var done = false
        init(promise: EventLoopPromise<UnixHTTPClient.Response>) { self.promise = promise }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                status = Int(h.status.code)
                for (k, v) in h.headers { headers[k.lowercased()] = v }
            case .body(let b):
                if body.count < 64 << 20 { body.append(contentsOf: b.readableBytesView) }
            case .end:
                done = true
                promise.succeed(.init(status: status, headers: headers, body: body))
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if !done {
                done = true
                promise.fail(error)
            }
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            if !done {
                done = true
                promise.fail(VivariumError(.unavailable, "connection closed"))
            }
        }
    }
}

/// The CLI's remote login: `~/.config/vivarium/credentials.json` (mode 0600 in a 0700 directory).
struct Credentials: Codable {
    var host: String
    var port: Int
    var fingerprint: String
    var accessToken: String
    var refreshToken: String
    var expiresAt: Date

    static var directory: String {
        let env = ProcessInfo.processInfo.environment
        if let x = env["XDG_CONFIG_HOME"], x.hasPrefix("/") { return x + "/vivarium" }
        return (env["HOME"] ?? "/root") + "/.config/vivarium"
    }
    static var path: String { directory + "/credentials.json" }

    static func exists() -> Bool { FileManager.default.fileExists(atPath: path) }

    /// Refuses a file others could read: it holds bearer credentials.
    static func load() throws -> Credentials {
        var st = stat()
        guard stat(path, &st) == 0 else { throw VivariumError(.unavailable, "not logged in: run `vivarium login`") }
        guard st.st_mode & 0o077 == 0, st.st_uid == geteuid() else {
            throw VivariumError(
                .unavailable, "\(path) is readable by others: refusing to use it (chmod 600 it, or log in again)")
        }
        guard let data = FileManager.default.contents(atPath: path),
            let c = try? WireCoding.decoder().decode(Credentials.self, from: data)
        else { throw VivariumError(.unavailable, "\(path) is unreadable: log in again") }
        return c
    }

    /// Written 0600 from the first byte (O_EXCL, no link followed), then renamed into place, in a 0700
    /// directory.
    func save() throws {
        try FileManager.default.createDirectory(
            atPath: Self.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = chmod(Self.directory, 0o700)
        let tmp = Self.path + ".tmp-\(getpid())"
        let data = try WireCoding.encoder().encode(self)
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot write \(tmp)") }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == data.count, synced, rename(tmp, Self.path) == 0 else {
            unlink(tmp)
            throw VivariumError(.unavailable, "cannot write \(Self.path)")
        }
    }

    /// Runs `body` holding an exclusive lock on the credentials, so that parallel CLI runs refresh
    /// once and never replay a refresh token.
    static func locked<T>(_ body: () throws -> T) throws -> T {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let fd = open(directory + "/credentials.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot open the credentials lock") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw VivariumError(.unavailable, "cannot lock the credentials") }
        return try body()
    }
}

/// A transport to the logged-in daemon that refreshes the access token by itself when it is about to
/// expire, under the credentials lock.
struct LoggedIn: HTTPTransport {
    func send(_ method: String, _ path: String, body: Data?) throws -> UnixHTTPClient.Response {
        let creds = try Credentials.locked { () throws -> Credentials in
            var c = try Credentials.load()
            guard c.expiresAt.timeIntervalSinceNow < 30 else { return c }
            let anon = PinnedHTTPS(host: c.host, port: c.port, fingerprint: c.fingerprint)
            let r = try anon.send(
                "POST", "/v1/tokens",
                body: try WireCoding.encoder().encode(
                    TokenRequest(grantType: "refresh_token", refreshToken: c.refreshToken)))
            guard r.status == 200, let pair = try? WireCoding.decoder().decode(TokenPair.self, from: r.body) else {
                throw VivariumError(
                    .unauthenticated, "the session has ended (revoked or expired): run `vivarium login` again")
            }
            c.accessToken = pair.accessToken
            c.refreshToken = pair.refreshToken
            c.expiresAt = Date().addingTimeInterval(TimeInterval(pair.expiresIn))
            try c.save()
            return c
        }
        var t = PinnedHTTPS(host: creds.host, port: creds.port, fingerprint: creds.fingerprint)
        t.bearer = creds.accessToken
        return try t.send(method, path, body: body)
    }
}
