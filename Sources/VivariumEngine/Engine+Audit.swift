import Foundation
import VivariumAudit
import VivariumCore
import VivariumStore

extension Engine {
    /// A setting that weakens a default, recorded at every start.
    public struct WeakenedSetting: Sendable {
        public var key: String
        public var value: String
        public var secureDefault: String
        public init(key: String, value: String, secureDefault: String) {
            self.key = key
            self.value = value
            self.secureDefault = secureDefault
        }
    }

    /// Records the start (with what reconciliation did) and every weakened setting. Fails, and so stops
    /// the start, when the trail cannot be written, unless the audit mode says otherwise.
    public func recordStart(_ weakened: [WeakenedSetting], details: [String: String]) throws {
        try audit.append(
            [
                AuditEvent(
                    "daemon.start",
                    details: details.merging(
                        [
                            "version": VivariumVersion.string, "audit_mode": audit.auditMode.rawValue,
                            "audit_key": auditKey.keyID,
                        ]
                    ) { a, _ in a })
            ]
                + (auditKeyCreated
                    ? [
                        AuditEvent(
                            "audit.key_created", target: auditKey.keyID, outcome: .alert,
                            details: ["public_key": auditKey.publicKeyBase64])
                    ] : [])
                + weakened.map {
                    AuditEvent(
                        "config.weakened", target: $0.key, outcome: .alert,
                        details: ["value": $0.value, "default": $0.secureDefault])
                })
    }

    /// Records the stop and signs a last checkpoint; call once every request has finished.
    public func recordStop() {
        recordOutcome(AuditEvent("daemon.stop"))
        checkpointer.checkpoint()
    }

    /// Rotates the token signing keys, recorded before (no record, no rotation) and after.
    public func rotateKeys() async throws -> [String: [[String: String]]] {
        try audit.append([AuditEvent("keys.rotate", global: true, outcome: .started)])
        do {
            try await tokens.keys.rotate()
        } catch {
            recordOutcome(AuditEvent("keys.rotate", global: true, outcome: .failed, details: ["error": "\(error)"]))
            throw error
        }
        recordOutcome(AuditEvent("keys.rotate", global: true, details: ["kid": tokens.keys.current.kid]))
        return tokens.keys.jwks
    }

    /// A page of the trail in sequence order. `tenant` nil reads every tenant's records (admins).
    public func auditRecords(_ q: AuditQuery) throws -> Page<AuditRecord> {
        var q = q
        q.limit = min(max(q.limit, 1), 1000)
        let items = try audit.auditRecords(q)
        return Page(items: items, nextCursor: items.count == q.limit ? items.last.map { String($0.seq) } : nil)
    }

    public func auditCheckpoints() throws -> AuditCheckpointList {
        AuditCheckpointList(
            publicKey: auditKey.publicKeyBase64, keyId: auditKey.keyID, checkpoints: try audit.auditCheckpoints())
    }
}
