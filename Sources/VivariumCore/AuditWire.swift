import Foundation

/// One record of the trail, as stored and as served.
public struct AuditRecord: Codable, Sendable, Equatable {
    public var seq: Int64
    /// Milliseconds since the Unix epoch (hashed exactly).
    public var timeMs: Int64
    public var actor: String
    public var actorName: String?
    public var actorTenant: String?
    public var tokenId: String?
    public var source: String?
    public var tenant: String?
    public var action: String
    public var target: String?
    public var outcome: String
    public var requestId: String?
    public var details: [String: String]
    /// Hex SHA-256 linking this record to the one before (see `AuditChain`).
    public var hash: String

    public init(
        seq: Int64, timeMs: Int64, actor: String, actorName: String?, actorTenant: String?, tokenId: String?,
        source: String?, tenant: String?, action: String, target: String?, outcome: String, requestId: String?,
        details: [String: String], hash: String
    ) {
        self.seq = seq
        self.timeMs = timeMs
        self.actor = actor
        self.actorName = actorName
        self.actorTenant = actorTenant
        self.tokenId = tokenId
        self.source = source
        self.tenant = tenant
        self.action = action
        self.target = target
        self.outcome = outcome
        self.requestId = requestId
        self.details = details
        self.hash = hash
    }

    public var time: Date { Date(timeIntervalSince1970: Double(timeMs) / 1000) }
}

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
