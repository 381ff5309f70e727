import Foundation
import Glibc
import Synchronization
import VivariumClient
import VivariumCore
import VivariumOS

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
        try FileSystem.writeSecret(try WireCoding.encoder().encode(self), to: Self.path)
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
/// expire, under the credentials lock, and keeps one connection open for the calls of a verb.
final class LoggedIn: HTTPTransport {
    let connection = Mutex<(token: String, transport: PinnedHTTPS)?>(nil)

    func send(_ method: String, _ path: String, body: Data?) throws -> HTTPAnswer {
        let creds = try Credentials.locked { () throws -> Credentials in
            var c = try Credentials.load()
            guard c.expiresAt.timeIntervalSinceNow < 30 else { return c }
            let anon = PinnedHTTPS(host: c.host, port: c.port, fingerprint: c.fingerprint)
            let r = try anon.send(
                "POST", Endpoints.tokenExchange.route.path,
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
        let transport = connection.withLock { current -> PinnedHTTPS in
            if let current, current.token == creds.accessToken { return current.transport }
            let t = PinnedHTTPS(
                host: creds.host, port: creds.port, fingerprint: creds.fingerprint, bearer: creds.accessToken)
            current = (creds.accessToken, t)
            return t
        }
        return try transport.send(method, path, body: body)
    }
}
