import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOSSL
import VivariumCore

/// Key-encryption keys held by a server speaking the Vault Transit API (HashiCorp Vault, OpenBao): data
/// keys are wrapped, unwrapped and re-wrapped there, so no key-encryption key is ever on this host.
/// Key ids are the transit key's versions (`NAME:vN`); retiring one raises the key's minimum
/// decryption version, so versions retire oldest first.
public final class TransitKeyProvider: KeyProvider {
    public struct Configuration: Sendable {
        /// `http(s)://HOST:PORT` of the server.
        public var address: String
        /// The transit mount path (`transit` by default).
        public var mount: String
        public var key: String
        /// A file (mode 0600) holding the token the daemon authenticates with.
        public var tokenFile: String
        /// PEM CA certificates to trust for an https address, instead of the system's.
        public var caFile: String?

        public init(address: String, mount: String = "transit", key: String, tokenFile: String, caFile: String?) {
            self.address = address
            self.mount = mount
            self.key = key
            self.tokenFile = tokenFile
            self.caFile = caFile
        }
    }

    public let config: Configuration
    let token: String
    let client: HTTPClient
    public var kind: String { "transit" }

    /// Connects and checks that the key exists and the token may use it; a server that does not answer
    /// is an error here, at start-up, not at the first secret.
    public static func connect(_ config: Configuration) async throws -> TransitKeyProvider {
        guard let url = URL(string: config.address), let scheme = url.scheme, ["http", "https"].contains(scheme),
            url.host != nil
        else { throw VivariumError(.invalidArgument, "kms_address must be http(s)://HOST:PORT") }
        if scheme == "http", !["127.0.0.1", "::1", "[::1]", "localhost"].contains(url.host ?? "") {
            throw VivariumError(
                .invalidArgument,
                "kms_address may be plain http only on a loopback address: the token and data keys cross it")
        }
        guard ValidName.isTransitName(config.key), ValidName.isTransitName(config.mount) else {
            throw VivariumError(.invalidArgument, "kms_key and kms_mount must be letters, digits, '-', '_' or '.'")
        }
        var st = stat()
        guard stat(config.tokenFile, &st) == 0, let raw = FileManager.default.contents(atPath: config.tokenFile) else {
            throw VivariumError(.unavailable, "cannot read the transit token file \(config.tokenFile)")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw VivariumError(.unavailable, "the transit token file \(config.tokenFile) must be mode 0600")
        }
        let token = String(decoding: raw, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty, token.utf8.count < 4096, !token.contains(where: \.isNewline) else {
            throw VivariumError(.unavailable, "the transit token file \(config.tokenFile) holds no token")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let ca = config.caFile { tls.trustRoots = .file(ca) }
        // No redirects: one would carry the token and a data key to wherever it points.
        var http = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow)
        http.timeout = .init(connect: .seconds(3), read: .seconds(10))
        // One server: when it is down, say so at once instead of retrying until the connect timeout.
        http.connectionPool.retryConnectionEstablishment = false
        let provider = TransitKeyProvider(
            config: config, token: token,
            client: HTTPClient(eventLoopGroupProvider: .singleton, configuration: http))
        do {
            _ = try await provider.versions()
        } catch {
            try? await provider.client.shutdown()
            throw VivariumError(
                .unavailable, "the transit key \(config.key) at \(config.address) is not usable: \(message(error))")
        }
        return provider
    }

    init(config: Configuration, token: String, client: HTTPClient) {
        self.config = config
        self.token = token
        self.client = client
    }

    public func shutdown() async throws { try await client.shutdown() }

    static func message(_ error: any Error) -> String {
        (error as? VivariumError)?.message ?? String(describing: error)
    }

    /// One call; `unavailable` when the server cannot be reached or refuses.
    func call(_ method: NIOHTTP1.HTTPMethod, _ path: String, _ body: [String: Any]? = nil) async throws -> [String: Any]
    {
        var req = HTTPClientRequest(url: config.address + "/v1/" + config.mount + "/" + path)
        req.method = method
        req.headers.add(name: "X-Vault-Token", value: token)
        if let body {
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(data: try JSONSerialization.data(withJSONObject: body)))
        }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await client.execute(req, timeout: .seconds(10))
            bytes = try await response.body.collect(upTo: 1 << 20)
        } catch {
            throw VivariumError(.unavailable, "the key server at \(config.address) does not answer", cause: error)
        }
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: bytes))) as? [String: Any] ?? [:]
        guard (200..<300).contains(response.status.code) else {
            let errors = (json["errors"] as? [String])?.joined(separator: "; ").prefix(300) ?? ""
            if response.status == .badRequest, path.hasPrefix("decrypt/") || path.hasPrefix("rewrap/") {
                throw VivariumError(.secretUnreadable, "the key server cannot unwrap a data key: \(errors)")
            }
            throw VivariumError(
                .unavailable,
                "the key server refused \(path.split(separator: "/").first ?? ""): "
                    + "\(response.status.code) \(errors)")
        }
        return json["data"] as? [String: Any] ?? [:]
    }

    /// The live versions of the key: minimum decryption version to latest.
    func versions() async throws -> ClosedRange<Int> {
        let d = try await call(.GET, "keys/" + config.key)
        guard let latest = d["latest_version"] as? Int, latest >= 1 else {
            throw VivariumError(.unavailable, "the key server's answer names no key version")
        }
        let minimum = max(d["min_decryption_version"] as? Int ?? 1, 1)
        return min(minimum, latest)...latest
    }

    func id(_ version: Int) -> String { "\(config.key):v\(version)" }

    /// The version a transit ciphertext (`vault:vN:...`) was made with.
    func wrapped(_ ciphertext: String) throws -> WrappedKey {
        let parts = ciphertext.split(separator: ":", maxSplits: 2)
        guard parts.count == 3, parts[0] == "vault", parts[1].hasPrefix("v"), let v = Int(parts[1].dropFirst()) else {
            throw VivariumError(.unavailable, "the key server returned no ciphertext")
        }
        return WrappedKey(keyID: id(v), bytes: Array(ciphertext.utf8))
    }

    public func currentKeyID() async throws -> String { id(try await versions().upperBound) }
    public func keyIDs() async throws -> [String] { try await versions().map(id) }

    public func wrap(_ dataKey: [UInt8]) async throws -> WrappedKey {
        let d = try await call(.POST, "encrypt/" + config.key, ["plaintext": Data(dataKey).base64EncodedString()])
        return try wrapped(d["ciphertext"] as? String ?? "")
    }

    public func unwrap(_ key: WrappedKey) async throws -> [UInt8] {
        let d = try await call(
            .POST, "decrypt/" + config.key, ["ciphertext": String(decoding: key.bytes, as: UTF8.self)])
        guard let b64 = d["plaintext"] as? String, let plain = Data(base64Encoded: b64), plain.count == 32 else {
            throw VivariumError(.secretUnreadable, "the key server did not unwrap a data key of \(key.keyID)")
        }
        return Array(plain)
    }

    public func rewrap(_ key: WrappedKey) async throws -> WrappedKey {
        let d = try await call(
            .POST, "rewrap/" + config.key, ["ciphertext": String(decoding: key.bytes, as: UTF8.self)])
        return try wrapped(d["ciphertext"] as? String ?? "")
    }

    public func rotate() async throws -> String {
        _ = try await call(.POST, "keys/\(config.key)/rotate", [:])
        return try await currentKeyID()
    }

    public func retire(_ keyID: String) async throws {
        let live = try await versions()
        guard keyID.hasPrefix(config.key + ":v"), let v = Int(keyID.dropFirst(config.key.count + 2)), live.contains(v)
        else { throw VivariumError(.notFound, "no live version \(keyID) of the transit key") }
        guard v < live.upperBound else {
            throw VivariumError(.invalidState, "\(keyID) is the current key: rotate first")
        }
        guard v == live.lowerBound else {
            throw VivariumError(.invalidState, "transit retires versions oldest first: retire \(id(live.lowerBound))")
        }
        _ = try await call(.POST, "keys/\(config.key)/config", ["min_decryption_version": v + 1])
    }
}

enum ValidName {
    static func isTransitName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 128
            && s.unicodeScalars.allSatisfy {
                $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0))
            }
            && !s.hasPrefix(".")
    }
}
