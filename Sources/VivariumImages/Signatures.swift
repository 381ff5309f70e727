import Foundation
import VivariumCore
import VivariumOCI

import enum Crypto.Curve25519
import enum Crypto.P256
import struct Crypto.SHA256

/// Image signatures in cosign's key-based format (the one `cosign sign --key` writes with
/// `--new-bundle-format=false`): a "simple signing" JSON payload naming the manifest digest and the
/// repository, signed with ECDSA P-256 (ASN.1 DER over its SHA-256) or Ed25519, and stored in the
/// image's repository as a layer of the manifest tagged `sha256-<hex>.sig`, the signature in the layer's
/// `dev.cosignproject.cosign/signature` annotation (base64). Registries with the OCI 1.1 referrers API
/// may hold the same manifest as a referrer of the image instead.
public enum Cosign {
    public static let payloadType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"
    public static let artifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
    public static let signatureType = "cosign container image signature"
    /// Signatures considered per image, payload bytes per signature.
    public static let maxSignatures = 64
    public static let maxPayloadBytes = 64 << 10

    /// The tag the signatures of `digest` live under.
    public static func signatureTag(_ digest: Digest) -> String {
        digest.rawValue.replacingOccurrences(of: ":", with: "-") + ".sig"
    }

    /// The payload cosign signs, byte for byte as cosign writes it.
    public static func payload(repository: String, digest: Digest) -> Data {
        let escaped = String(data: try! JSONEncoder().encode(repository), encoding: .utf8)!
        return Data(
            ("{\"critical\":{\"identity\":{\"docker-reference\":\(escaped)},\"image\":{\"docker-manifest-digest\":\""
                + digest.rawValue + "\"},\"type\":\"\(signatureType)\"},\"optional\":null}").utf8)
    }

    /// What a payload claims.
    public struct Claim: Sendable, Equatable {
        public var repository: String
        public var digest: Digest
    }

    public static func claim(_ payload: Data) throws -> Claim {
        struct Simple: Decodable {
            struct Critical: Decodable {
                struct Identity: Decodable {
                    let reference: String
                    enum CodingKeys: String, CodingKey { case reference = "docker-reference" }
                }
                struct Image: Decodable {
                    let digest: String
                    enum CodingKeys: String, CodingKey { case digest = "docker-manifest-digest" }
                }
                let identity: Identity
                let image: Image
                let type: String
            }
            let critical: Critical
        }
        guard let s = try? JSONDecoder().decode(Simple.self, from: payload), s.critical.type == signatureType,
            let digest = Digest(rawValue: s.critical.image.digest)
        else { throw VivariumError(.invalidArgument, "the payload is not a cosign simple-signing payload") }
        return Claim(repository: s.critical.identity.reference, digest: digest)
    }

    /// Whether a payload's `docker-reference` names `registry/repository` (a tag or digest on it is
    /// ignored; Docker Hub is spelled `docker.io` or `index.docker.io`).
    public static func names(_ claimed: String, registry: String, repository: String) -> Bool {
        var name = Substring(claimed)
        if let at = name.firstIndex(of: "@") { name = name[..<at] }
        if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") { name = name[..<colon] }
        func normal(_ s: String) -> String {
            s.hasPrefix("index.docker.io/") ? "docker.io/" + s.dropFirst("index.docker.io/".count) : s
        }
        return normal(String(name)) == normal(registry + "/" + repository)
    }

    /// The config blob of a signature manifest: names the payloads as diff ids, like cosign's.
    public static func config(payloads: [Digest]) -> Data {
        let ids = payloads.map { "\"\($0.rawValue)\"" }.joined(separator: ",")
        return Data(
            ("{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{\"created\":\"0001-01-01T00:00:00Z\"}],"
                + "\"os\":\"\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\(ids)]},\"config\":{}}").utf8)
    }
}

/// One signature found for an image: the payload and its signature bytes.
public struct FoundSignature: Sendable {
    public var payload: Data
    public var signature: Data
    /// `tag` or `referrers`.
    public var source: String
}

/// A public key trusted to sign images: ECDSA P-256 or Ed25519, PEM SubjectPublicKeyInfo (what
/// `cosign generate-key-pair` and `openssl pkey -pubout` write).
public struct TrustedKey: Sendable {
    enum Key: Sendable {
        case p256(P256.Signing.PublicKey)
        case ed25519(Curve25519.Signing.PublicKey)
    }
    let key: Key
    /// The first 16 hex digits of the SHA-256 of the key's DER encoding.
    public let id: String

    /// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32 key bytes.
    static let ed25519SPKIPrefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]

    public init(pem: String, source: String) throws {
        let der = try PEM.decode(pem, label: "PUBLIC KEY", what: source)
        if der.count == 44, Array(der.prefix(12)) == Self.ed25519SPKIPrefix {
            key = .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: der.suffix(32)))
        } else if let p = try? P256.Signing.PublicKey(derRepresentation: der) {
            key = .p256(p)
        } else {
            throw VivariumError(.invalidArgument, "\(source) is neither an ECDSA P-256 nor an Ed25519 public key")
        }
        id = String(Digest.of(der).hex.prefix(16))
    }

    public static func load(_ path: String) throws -> TrustedKey {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 16 << 10,
            let text = String(data: data, encoding: .utf8)
        else { throw VivariumError(.invalidArgument, "cannot read the public key \(path)") }
        return try TrustedKey(pem: text, source: path)
    }

    public func verifies(_ signature: Data, over payload: Data) -> Bool {
        switch key {
        case .p256(let k):
            guard let s = try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: SHA256.hash(data: payload))
        case .ed25519(let k):
            return k.isValidSignature(signature, for: payload)
        }
    }
}

/// A private key that signs images: ECDSA P-256 (PKCS#8 or SEC1 PEM) or Ed25519 (PKCS#8 PEM), as
/// `openssl genpkey` writes them. cosign's own encrypted key file is not read.
public struct SigningKey: Sendable {
    enum Key: Sendable {
        case p256(P256.Signing.PrivateKey)
        case ed25519(Curve25519.Signing.PrivateKey)
    }
    let key: Key

    /// The DER prefix of an Ed25519 PKCS#8 private key (RFC 8410), before the 32 seed bytes.
    static let ed25519PKCS8Prefix: [UInt8] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ]

    public init(pem: String, source: String) throws {
        if let p = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            key = .p256(p)
            return
        }
        let der = try PEM.decode(pem, label: "PRIVATE KEY", what: source)
        guard der.count == 48, Array(der.prefix(16)) == Self.ed25519PKCS8Prefix else {
            throw VivariumError(
                .invalidArgument, "\(source) is neither an ECDSA P-256 nor an Ed25519 private key (PEM, unencrypted)")
        }
        key = .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32)))
    }

    public func sign(_ payload: Data) throws -> Data {
        switch key {
        case .p256(let k): try k.signature(for: SHA256.hash(data: payload)).derRepresentation
        case .ed25519(let k): try k.signature(for: payload)
        }
    }
}

enum PEM {
    static func decode(_ pem: String, label: String, what: String) throws -> Data {
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        guard let b = pem.range(of: begin), let e = pem.range(of: end, range: b.upperBound..<pem.endIndex),
            let der = Data(base64Encoded: pem[b.upperBound..<e.lowerBound].filter { !$0.isWhitespace })
        else { throw VivariumError(.invalidArgument, "\(what) holds no PEM \(label.lowercased())") }
        return der
    }
}
