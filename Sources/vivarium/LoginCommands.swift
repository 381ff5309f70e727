import ArgumentParser
import Foundation
import NIOSSL
import VivariumClient
import VivariumCore

struct Login: Verb {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Log in to a remote daemon over TLS with an API key; later verbs use it.",
        discussion: """
            The daemon's certificate is pinned: give its SHA-256 fingerprint (printed by `vivarium serve`) with \
            --fingerprint, or its certificate with --ca; otherwise the fingerprint is shown and must be confirmed. \
            The API key comes from --api-key-file, VIVARIUM_API_KEY, or standard input. Credentials are kept in \
            ~/.config/vivarium/credentials.json (mode 0600) and refreshed automatically.
            """)

    @Option(help: "The daemon, https://HOST:PORT.") var host: String
    @Option(help: "SHA-256 fingerprint of the daemon's certificate.") var fingerprint: String?
    @Option(help: "PEM file with the daemon's certificate, pinned as is.") var ca: String?
    @Option(help: "File holding the API key.") var apiKeyFile: String?

    func perform() async throws {
        let (h, p) = try Self.parseHost(host)
        let pin = try pinnedFingerprint(host: h, port: p)
        let key = try readAPIKey()
        let t = PinnedHTTPS(host: h, port: p, fingerprint: pin)
        let r = try t.send(
            "POST", Endpoints.tokenExchange.route.path,
            body: try WireCoding.encoder().encode(TokenRequest(grantType: "api_key", apiKey: key)))
        guard r.status == 200, let pair = try? WireCoding.decoder().decode(TokenPair.self, from: r.body) else {
            throw VivariumError(.unauthenticated, "the daemon refused the API key")
        }
        try Credentials.locked {
            try Credentials(
                host: h, port: p, fingerprint: pin, accessToken: pair.accessToken, refreshToken: pair.refreshToken,
                expiresAt: Date().addingTimeInterval(TimeInterval(pair.expiresIn))
            ).save()
        }
        print("logged in to \(h):\(p)")
    }

    static func parseHost(_ s: String) throws -> (String, Int) {
        guard s.hasPrefix("https://") else { throw VivariumError(.invalidArgument, "--host must be https://HOST:PORT") }
        let rest = s.dropFirst(8).split(separator: "/").first.map(String.init) ?? ""
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
            (1...65535).contains(port)
        else { throw VivariumError(.invalidArgument, "--host must be https://HOST:PORT") }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    func pinnedFingerprint(host: String, port: Int) throws -> String {
        if let fingerprint {
            let f = PinnedHTTPS.normalize(fingerprint)
            guard f.count == 64, f.allSatisfy(\.isHexDigit) else {
                throw VivariumError(.invalidArgument, "--fingerprint must be a SHA-256 fingerprint (64 hex digits)")
            }
            return f
        }
        if let ca {
            guard let cert = try NIOSSLCertificate.fromPEMFile(ca).first, let f = PinnedHTTPS.fingerprint(cert) else {
                throw VivariumError(.invalidArgument, "no certificate in \(ca)")
            }
            return f
        }
        // Trust on first use, confirmed by a person: fetch the certificate, show it, ask.
        let probe = PinnedHTTPS(host: host, port: port, fingerprint: nil)
        _ = try probe.send("GET", Endpoints.health.route.path, body: nil)
        guard let seen = probe.seenFingerprint else {
            throw VivariumError(.unavailable, "the daemon presented no certificate")
        }
        FileHandle.standardError.write(
            Data("The daemon's certificate has SHA-256 fingerprint\n  \(seen)\nTrust it? [y/N] ".utf8))
        guard let answer = readLine(), answer.lowercased().hasPrefix("y") else {
            throw VivariumError(.unavailable, "certificate not trusted; compare it with what `vivarium serve` printed")
        }
        return seen
    }

    func readAPIKey() throws -> String {
        if let apiKeyFile {
            guard let s = try? String(contentsOfFile: apiKeyFile, encoding: .utf8) else {
                throw VivariumError(.invalidArgument, "cannot read \(apiKeyFile)")
            }
            return s.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let k = ProcessInfo.processInfo.environment["VIVARIUM_API_KEY"] { return k }
        FileHandle.standardError.write(Data("API key: ".utf8))
        guard let line = readLine(), !line.isEmpty else { throw VivariumError(.invalidArgument, "no API key given") }
        return line.trimmingCharacters(in: .whitespaces)
    }
}

struct Logout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logout", abstract: "Forget the remote login.")
    func run() async throws {
        try? Credentials.locked { _ = unlink(Credentials.path) }
        print("logged out")
    }
}
