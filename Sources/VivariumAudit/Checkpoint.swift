import Crypto
import Foundation
import Glibc
import VivariumCore

/// A signed statement that the trail held `seq` records ending in `hash` at `timeMs`. Once a checkpoint
/// is outside the database, rewriting or cutting the trail at or before `seq` is detectable.
public struct AuditCheckpoint: Codable, Sendable, Equatable {
    public var seq: Int64
    public var hash: String
    public var timeMs: Int64
    /// First 16 hex digits of SHA-256 of the raw public key.
    public var keyId: String
    /// Base64 Ed25519 signature of `message`.
    public var signature: String

    public init(seq: Int64, hash: String, timeMs: Int64, keyId: String, signature: String) {
        self.seq = seq
        self.hash = hash
        self.timeMs = timeMs
        self.keyId = keyId
        self.signature = signature
    }

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
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot write the audit key \(path): errno \(errno)") }
        let raw = Array(key.privateKey.rawRepresentation)
        let ok = raw.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == raw.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw VivariumError(.unavailable, "cannot write the audit key \(path)")
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

/// The checkpoints the store holds and the key that signs them, as served to verifiers.
public struct AuditCheckpointList: Codable, Sendable {
    public var publicKey: String
    public var keyId: String
    public var checkpoints: [AuditCheckpoint]
    public init(publicKey: String, keyId: String, checkpoints: [AuditCheckpoint]) {
        self.publicKey = publicKey
        self.keyId = keyId
        self.checkpoints = checkpoints
    }
}
