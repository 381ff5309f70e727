import Foundation
import Logging
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumOS
import VivariumStore

/// The audit use cases: reading and following the trail, its checkpoints, and the daemon's own records
/// of its start and stop.
public final class AuditTrail: Sendable {
    let store: any AuditStore
    public let key: AuditKey
    /// The audit key was made at this start (recorded with the start).
    let keyCreated: Bool
    public let checkpointer: AuditCheckpointer
    let gate: Gate
    let logger: Logger

    init(
        store: any AuditStore, key: AuditKey, keyCreated: Bool, checkpointer: AuditCheckpointer, gate: Gate,
        logger: Logger
    ) {
        self.store = store
        self.key = key
        self.keyCreated = keyCreated
        self.checkpointer = checkpointer
        self.gate = gate
        self.logger = logger
    }

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
    public func recordStart(_ weakened: [WeakenedSetting], details: [String: String]) async throws {
        try await store.append(
            [
                AuditEvent(
                    "daemon.start",
                    details: details.merging(
                        [
                            "version": VivariumVersion.string, "audit_mode": store.auditMode.rawValue,
                            "audit_key": key.keyID,
                        ]
                    ) { a, _ in a })
            ]
                + (keyCreated
                    ? [
                        AuditEvent(
                            "audit.key_created", target: key.keyID, outcome: .alert,
                            details: ["public_key": key.publicKeyBase64])
                    ] : [])
                + weakened.map {
                    AuditEvent(
                        "config.weakened", target: $0.key, outcome: .alert,
                        details: ["value": $0.value, "default": $0.secureDefault])
                })
    }

    /// Records the stop and signs a last checkpoint; call once every request has finished.
    public func recordStop() async {
        do { try await store.append([AuditEvent("daemon.stop")]) } catch {
            logger.critical("cannot record the stop", metadata: ["error": "\(error)"])
        }
        await checkpointer.checkpoint()
    }

    /// The tenant whose records a caller reads: admins every tenant's (nil) unless they name one;
    /// everyone else their own.
    func readableTenant(_ caller: Caller) -> String? {
        caller.role == .admin ? caller.requestedTenant?.rawValue : caller.principal?.tenant
    }

    /// A page of the trail in sequence order.
    public func records(_ caller: Caller, _ query: AuditQuery) async throws -> Page<AuditRecord> {
        try await gate.perform(caller, .auditList, target: nil) {
            var q = query
            q.tenant = readableTenant(caller)
            q.limit = min(max(q.limit, 1), 1000)
            let items = try await store.auditRecords(q)
            return Page(items: items, nextCursor: items.count == q.limit ? items.last.map { String($0.seq) } : nil)
        }
    }

    public func checkpoints(_ caller: Caller) async throws -> AuditCheckpointList {
        try await gate.perform(caller, .auditCheckpoints, target: nil) {
            await AuditCheckpointList(
                publicKey: key.publicKeyBase64, keyId: key.keyID, checkpoints: try store.auditCheckpoints())
        }
    }

    /// The records the caller may read that are appended after `after` (default: the current head), as
    /// they are appended. `stillValid` is asked before every batch and at least every `recheck`: when it
    /// says no (a revoked or expired token), the feed ends.
    public func follow(
        _ caller: Caller, after: Int64?, recheck: Duration = .seconds(5),
        stillValid: @escaping @Sendable () async -> Bool
    ) async throws -> AuditFeed {
        try await gate.perform(caller, .auditFollow, target: nil) {
            var start = after ?? 0
            if after == nil { start = try await store.auditHead()?.seq ?? 0 }
            return AuditFeed(
                store: store, tenant: readableTenant(caller), after: start, recheck: recheck, stillValid: stillValid)
        }
    }
}

/// New audit records as they are appended, in sequence order, filtered to one tenant (nil: all). It
/// wakes on the store's append notifications (never by polling the database) and reads in pages of
/// 100; it stops observing the store when it is released.
public final class AuditFeed: Sendable {
    let store: any AuditStore
    let tenant: String?
    let recheck: Duration
    let stillValid: @Sendable () async -> Bool
    let observer: Int
    let wake = WakeSignal()
    let state: Mutex<(after: Int64, pending: [AuditRecord])>

    init(
        store: any AuditStore, tenant: String?, after: Int64, recheck: Duration,
        stillValid: @escaping @Sendable () async -> Bool
    ) {
        self.store = store
        self.tenant = tenant
        self.recheck = recheck
        self.stillValid = stillValid
        state = Mutex((after, []))
        let wake = self.wake
        observer = store.onAppend { _ in wake.signal() }
    }

    deinit { store.removeObserver(observer) }

    /// The next record; nil when the caller's credentials stopped being valid or the task was cancelled.
    public func next() async throws -> AuditRecord? {
        while !Task.isCancelled {
            if let r = state.withLock({ $0.pending.isEmpty ? nil : $0.pending.removeFirst() }) { return r }
            guard await stillValid() else { return nil }
            let after = state.withLock { $0.after }
            let page = try await store.auditRecords(AuditQuery(tenant: tenant, after: after, limit: 100))
            if let last = page.last {
                state.withLock {
                    $0.after = last.seq
                    $0.pending = page
                }
                continue
            }
            // Nothing new: wait for an append, or the recheck interval.
            let (wake, recheck) = (self.wake, self.recheck)
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await wake.wait() }
                group.addTask { try? await Task.sleep(for: recheck) }
                await group.next()
                group.cancelAll()
            }
        }
        return nil
    }
}
