import Crypto
import Foundation
import Glibc
import VivariumCore
import VivariumOS

extension AuditCheckpoint {
    /// What is signed: u32-length-prefixed "vivarium-audit-checkpoint-v1", u64 seq, the 32 hash bytes,
    /// i64 time_ms (big-endian).
    public static func message(seq: Int64, hash: [UInt8], timeMs: Int64) -> [UInt8] {
        let tag = Array("vivarium-audit-checkpoint-v1".utf8)
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt32(tag.count).bigEndian) { out += $0 }
        out += tag
        withUnsafeBytes(of: UInt64(bitPattern: seq).bigEndian) { out += $0 }
        out += hash
        withUnsafeBytes(of: UInt64(bitPattern: timeMs).bigEndian) { out += $0 }
        return out
    }

    /// True when the signature is `key`'s over this checkpoint's fields.
    public func isValid(under key: Curve25519.Signing.PublicKey) -> Bool {
        guard let h = AuditChain.bytes(hex: hash), h.count == 32, let sig = Data(base64Encoded: signature) else {
            return false
        }
        return key.isValidSignature(sig, for: Self.message(seq: seq, hash: h, timeMs: timeMs))
    }
}

/// The Ed25519 key that signs checkpoints: separate from the token signing keys, in a file of its own
/// (0600, in a 0700 directory), made on first start.
public struct AuditKey: Sendable {
    let privateKey: Curve25519.Signing.PrivateKey
    public var publicKey: Curve25519.Signing.PublicKey { privateKey.publicKey }
    public var keyID: String { Self.keyID(publicKey) }
    public var publicKeyBase64: String { publicKey.rawRepresentation.base64EncodedString() }

    public init(privateKey: Curve25519.Signing.PrivateKey = .init()) { self.privateKey = privateKey }

    /// Loads the key at `path`, or makes and stores one (`created`).
    public static func loadOrCreate(at path: String) throws -> (key: AuditKey, created: Bool) {
        if let data = FileManager.default.contents(atPath: path) {
            var st = stat()
            guard stat(path, &st) == 0, st.st_mode & 0o077 == 0 else {
                throw VivariumError(.unavailable, "the audit key \(path) must not be readable by group or others")
            }
            guard let k = try? Curve25519.Signing.PrivateKey(rawRepresentation: data) else {
                throw VivariumError(.unavailable, "the audit key \(path) is not an Ed25519 private key")
            }
            return (AuditKey(privateKey: k), false)
        }
        let key = AuditKey()
        do {
            try FileSystem.writeSecret(key.privateKey.rawRepresentation, to: path)
        } catch {
            throw VivariumError(.unavailable, "cannot write the audit key \(path)", cause: error)
        }
        return (key, true)
    }

    public static func keyID(_ key: Curve25519.Signing.PublicKey) -> String {
        String(AuditChain.hex(Array(SHA256.hash(data: key.rawRepresentation))).prefix(16))
    }

    public static func publicKey(base64: String) -> Curve25519.Signing.PublicKey? {
        Data(base64Encoded: base64).flatMap { try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }
    }

    public func sign(seq: Int64, hash: String, timeMs: Int64) throws -> AuditCheckpoint {
        guard let h = AuditChain.bytes(hex: hash), h.count == 32 else {
            throw VivariumError(.internalError, "audit head hash is malformed")
        }
        let sig = try privateKey.signature(for: AuditCheckpoint.message(seq: seq, hash: h, timeMs: timeMs))
        return AuditCheckpoint(
            seq: seq, hash: hash, timeMs: timeMs, keyId: keyID, signature: Data(sig).base64EncodedString())
    }
}

/// Where checkpoints go besides the database.
public protocol CheckpointSink: Sendable {
    var name: String { get }
    func write(_ checkpoint: AuditCheckpoint) throws
}

/// An append-only JSON-lines file (one checkpoint per line, fsynced). Keep it on another file system or
/// ship it off the host: that copy is what makes cutting the trail detectable.
public struct JSONLinesCheckpointFile: CheckpointSink {
    public let path: String
    public var name: String { "file:" + path }
    public init(path: String) { self.path = path }

    public func write(_ checkpoint: AuditCheckpoint) throws {
        var line = try WireCoding.encoder().encode(checkpoint)
        line.append(UInt8(ascii: "\n"))
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot open \(path): errno \(errno)") }
        defer { close(fd) }
        // A line torn by a crash must not swallow this one.
        var st = stat()
        var lastByte: UInt8 = 0
        if fstat(fd, &st) == 0, st.st_size > 0, pread(fd, &lastByte, 1, off_t(st.st_size - 1)) == 1,
            lastByte != UInt8(ascii: "\n")
        {
            line.insert(UInt8(ascii: "\n"), at: 0)
        }
        let n = line.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == line.count, fsync(fd) == 0 else {
            throw VivariumError(.unavailable, "cannot append to \(path): errno \(errno)")
        }
    }

    /// The checkpoints in a file written by this sink, and the numbers of the lines that are not one (a
    /// line torn by a crash, or damage: the caller reports them).
    public static func read(_ path: String) throws -> (checkpoints: [AuditCheckpoint], unreadable: [Int]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw VivariumError(.notFound, "cannot read checkpoint file \(path)")
        }
        var out: [AuditCheckpoint] = []
        var bad: [Int] = []
        let decoder = WireCoding.decoder()
        for (i, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated()
        where !line.isEmpty {
            if let c = try? decoder.decode(AuditCheckpoint.self, from: Data(line)) {
                out.append(c)
            } else {
                bad.append(i + 1)
            }
        }
        return (out, bad)
    }
}

/// syslog (facility authpriv), for shipping checkpoints off the host with the system's log forwarding.
public struct SyslogCheckpointSink: CheckpointSink {
    public var name: String { "syslog" }
    public init() {}
    public func write(_ checkpoint: AuditCheckpoint) throws {
        let line = String(decoding: try WireCoding.encoder().encode(checkpoint), as: UTF8.self)
        withVaList([line]) { vsyslog(LOG_AUTHPRIV | LOG_NOTICE, "vivarium-audit-checkpoint %s", $0) }
    }
}
