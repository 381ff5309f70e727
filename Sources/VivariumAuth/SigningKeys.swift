import Crypto
import Foundation
import JWTKit
import VivariumCore
import VivariumOS

/// The Ed25519 token signing keys of one instance, in `<dir>` (0700): `<kid>.ed25519` (raw private
/// key, 0600) and `keys.json` (kids in creation order). The newest key signs; older keys keep
/// verifying until every token they signed has expired, then they are pruned.
public final class SigningKeys: Sendable {
    public struct Key: Sendable {
        public let kid: String
        public let createdAt: Date
        let privateKey: Curve25519.Signing.PrivateKey
        /// A collection holding only this key: verification can never fall back to another one.
        let collection: JWTKeyCollection
        public var publicKey: Curve25519.Signing.PublicKey { privateKey.publicKey }
    }

    struct Manifest: Codable {
        struct Entry: Codable {
            var kid: String
            var createdAt: Date
        }
        var keys: [Entry]
    }

    let dir: String
    let maxTokenLifetime: TimeInterval
    private let state: LockedBox<[Key]>

    public init(dir: String, maxTokenLifetime: TimeInterval) async throws {
        self.dir = dir
        self.maxTokenLifetime = maxTokenLifetime
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        chmod(dir, 0o700)
        state = LockedBox([])
        var keys: [Key] = []
        if let data = FileManager.default.contents(atPath: dir + "/keys.json") {
            let manifest = try JSONDecoder().decode(Manifest.self, from: data)
            for e in manifest.keys {
                guard let raw = FileManager.default.contents(atPath: "\(dir)/\(e.kid).ed25519") else {
                    throw VivariumError(.unavailable, "signing key \(e.kid) is missing from \(dir)")
                }
                keys.append(try await Self.key(kid: e.kid, createdAt: e.createdAt, raw: raw))
            }
        }
        state.set(keys)
        if keys.isEmpty { try await rotate() }
    }

    static func key(kid: String, createdAt: Date, raw: Data) async throws -> Key {
        let pk = try Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        let collection = JWTKeyCollection()
        await collection.add(eddsa: EdDSA.PrivateKey(backing: pk), kid: JWKIdentifier(string: kid))
        return Key(kid: kid, createdAt: createdAt, privateKey: pk, collection: collection)
    }

    /// The key that signs new tokens.
    public var current: Key { state.get().last! }

    public func key(kid: String) -> Key? { state.get().first { $0.kid == kid } }

    public var all: [Key] { state.get() }

    /// Adds a new signing key; the previous ones keep verifying until their tokens expire.
    @discardableResult
    public func rotate(now: Date = Date()) async throws -> Key {
        let kid = randomHex(bytes: 8)
        let pk = Curve25519.Signing.PrivateKey()
        try FileSystem.writeSecret(pk.rawRepresentation, to: "\(dir)/\(kid).ed25519")
        let key = try await Self.key(kid: kid, createdAt: now, raw: pk.rawRepresentation)
        // One rotation at a time: the manifest and the key set change together under the lock.
        try state.update { (current: inout [Key]) throws in
            var keys = current + [key]
            // A key retired (succeeded) longer ago than the longest token lifetime verifies nothing more.
            keys = keys.enumerated().filter { i, _ in
                i + 1 >= keys.count || now.timeIntervalSince(keys[i + 1].createdAt) < maxTokenLifetime
            }.map(\.1)
            let manifest = Manifest(keys: keys.map { .init(kid: $0.kid, createdAt: $0.createdAt) })
            let enc = JSONEncoder()
            enc.outputFormatting = .sortedKeys
            try FileSystem.writeSecret(try enc.encode(manifest), to: dir + "/keys.json")
            for old in current where !keys.contains(where: { $0.kid == old.kid }) {
                unlink("\(dir)/\(old.kid).ed25519")
            }
            current = keys
        }
        return key
    }

    /// The public keys as a JWK set (RFC 8037 OKP keys).
    public var jwks: JWKSet {
        JWKSet(keys: all.map { JWKSet.Key(kid: $0.kid, x: base64url($0.publicKey.rawRepresentation)) })
    }
}

/// A value behind a lock, for classes that are Sendable.
final class LockedBox<T: Sendable>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func get() -> T { lock.withLock { value } }
    func set(_ v: T) { lock.withLock { value = v } }
    func update<R>(_ f: (inout T) throws -> R) rethrows -> R { try lock.withLock { try f(&value) } }
}

func base64url(_ d: Data) -> String {
    d.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

func base64urlDecode(_ s: Substring) -> Data? {
    guard s.utf8.count <= 16384 else { return nil }
    var t = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while t.count % 4 != 0 { t += "=" }
    return Data(base64Encoded: t)
}
