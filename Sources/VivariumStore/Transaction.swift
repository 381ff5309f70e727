import Foundation
import Logging
import Synchronization
import VivariumAudit
import VivariumCore

/// The newest record of the audit chain.
public struct AuditHead: Sendable, Equatable {
    public var seq: Int64
    public var hash: String

    public init(seq: Int64, hash: String) {
        self.seq = seq
        self.hash = hash
    }
}

/// What a tenant's sandboxes hold, for its quota.
public struct TenantUsage: Sendable, Equatable {
    public var sandboxes: Int
    public var memoryBytes: Int64
    public var milliCPUs: Int64
    public var diskBytes: Int64

    public init(sandboxes: Int, memoryBytes: Int64, milliCPUs: Int64, diskBytes: Int64 = 0) {
        self.sandboxes = sandboxes
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.diskBytes = diskBytes
    }
}

/// One write transaction of a store: the rows it reads and writes, nothing more. The rules (which uid
/// slot, whether a quota allows a sandbox, how the audit chain grows) are decided in Swift on top of
/// these (`StoreRules`, `appendAudit`), the same for every store. Everything done through a transaction
/// commits together or not at all.
public protocol StoreTransaction: Sendable {
    var auditMode: AuditMode { get }
    var logger: Logger { get }

    /// The uid slots sandboxes hold, ascending.
    func sandboxSlotsInUse() async throws -> [Int]
    func tenantUsage(_ tenant: String) async throws -> TenantUsage
    /// The limits of sandboxes that are not stopped (creating, running, being deleted), of one tenant
    /// or (nil) of all.
    func runningUsage(tenant: String?) async throws -> RunningUsage
    /// The disk quotas of every sandbox, whatever its state (a stopped sandbox keeps its files).
    func existingDiskBytes() async throws -> Int64
    func sandboxNameTaken(tenant: String, name: ResourceName) async throws -> Bool
    func insertSandboxRow(_ r: SandboxRecord) async throws
    /// False when there is no such sandbox.
    func setSandboxState(_ id: SandboxID, _ state: SandboxState) async throws -> Bool
    func deleteSandboxRow(_ id: SandboxID) async throws
    /// False when there is no such sandbox.
    func setSandboxSpec(_ id: SandboxID, _ spec: SandboxSpec) async throws -> Bool

    /// The newest audit record, locked until the transaction ends: no other transaction can append
    /// records until this one commits or rolls back. Throws when the head is unreadable (tampered with).
    func lockAuditHead() async throws -> AuditHead?
    func insertAuditRecords(_ records: [AuditRecord]) async throws
}

/// The domain rules of the store, decided in Swift.
public enum StoreRules {
    /// The lowest slot not in `used` (ascending), below `maxSlots`.
    public static func lowestFreeSlot(_ used: [Int], below maxSlots: Int) throws -> Int {
        var slot = 0
        for u in used {
            if u > slot { break }
            if u == slot { slot += 1 }
        }
        guard slot < maxSlots else {
            throw VivariumError(.resourceExhausted, "no free user-id range: \(maxSlots) sandboxes exist")
        }
        return slot
    }

    /// Refuses a sandbox with `limits` that would take the tenant past its quota.
    public static func checkQuota(
        _ usage: TenantUsage, adding limits: ResourceLimits, quota: TenantQuota, tenant: String
    )
        throws
    {
        if usage.sandboxes + 1 > quota.sandboxes {
            throw VivariumError(.quotaExceeded, "tenant \(tenant) may hold at most \(quota.sandboxes) sandboxes")
        }
        if usage.memoryBytes + limits.memoryBytes > quota.memoryBytes {
            throw VivariumError(
                .quotaExceeded,
                "tenant \(tenant) would exceed its memory quota of \(Quantity.formatBytes(quota.memoryBytes))")
        }
        if usage.milliCPUs + limits.milliCPUs > quota.milliCPUs {
            throw VivariumError(
                .quotaExceeded, "tenant \(tenant) would exceed its CPU quota of \(Double(quota.milliCPUs) / 1000) CPUs")
        }
        if usage.diskBytes + limits.diskBytes > quota.diskBytes {
            throw VivariumError(
                .quotaExceeded,
                "tenant \(tenant) would exceed its disk quota of \(Quantity.formatBytes(quota.diskBytes))")
        }
    }

    /// The records `events` become at the end of the chain after `head`: numbered on, each hash taking in
    /// the one before.
    public static func chain(_ events: [AuditEvent], after head: AuditHead?, timeMs: Int64) -> [AuditRecord] {
        var seq = head?.seq ?? 0
        var previous = head.flatMap { AuditChain.bytes(hex: $0.hash) } ?? AuditChain.genesis
        return events.map { e in
            seq += 1
            let r = e.seal(seq: seq, timeMs: timeMs, previousHash: previous)
            previous = AuditChain.bytes(hex: r.hash)!
            return r
        }
    }
}

/// Sandboxes being started: admitted to the host budget before their state says running.
public final class HostReservations: Sendable {
    let reserved = Mutex<[SandboxID: (tenant: String, limits: ResourceLimits)]>([:])
    public init() {}

    func usage(tenant: String?) -> RunningUsage {
        reserved.withLock { r in
            r.values.filter { tenant == nil || $0.tenant == tenant }.reduce(RunningUsage()) { $0 + $1.limits }
        }
    }
    func add(_ r: SandboxRecord) { reserved.withLock { $0[r.id] = (r.tenant, r.spec.limits) } }
    public func remove(_ id: SandboxID) { _ = reserved.withLock { $0.removeValue(forKey: id) } }
}

extension StoreTransaction {
    /// Refuses running `r` beyond the host budget, counting what runs and what is being started.
    func admit(_ r: SandboxRecord, budget: HostBudget, pending: HostReservations?) async throws {
        var tenant = try await runningUsage(tenant: r.tenant)
        var host = try await runningUsage(tenant: nil)
        if let pending {
            tenant = tenant + pending.usage(tenant: r.tenant)
            host = host + pending.usage(tenant: nil)
        }
        try budget.admit(r.spec.limits, tenant: r.tenant, tenantUsage: tenant, hostUsage: host)
    }

    /// Appends records describing this transaction's change at the end of the audit chain, its head
    /// locked. A failure refuses the change, unless the operator chose `fail-open` (the change goes ahead,
    /// the loss is logged). Returns the records appended.
    @discardableResult
    public func appendAudit(_ events: [AuditEvent]) async throws -> [AuditRecord] {
        guard auditMode != .off, !events.isEmpty else { return [] }
        do {
            let head = try await lockAuditHead()
            let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
            let records = StoreRules.chain(events.map { $0.redacted() }, after: head, timeMs: now)
            try await insertAuditRecords(records)
            return records
        } catch {
            guard auditMode == .failOpen else {
                throw VivariumError(.unavailable, "the audit trail cannot be written, so the action was refused")
            }
            logger.critical(
                "audit record lost (audit_mode fail-open)",
                metadata: ["actions": "\(events.map(\.action))", "error": "\(error)"])
            return []
        }
    }
}

/// A store's transactions: `transaction` runs `body` in one, committed when it returns and rolled back
/// when it throws. Writers are serialised.
public protocol Transactional: Sendable {
    func transaction<T: Sendable>(_ what: String, _ body: @Sendable (any StoreTransaction) async throws -> T)
        async throws -> T
}

extension Store {
    /// Allocates the lowest free user-id slot below `maxSlots` and inserts the record `make` builds for
    /// it, in one transaction with its audit record. Throws `already_exists` for a duplicate name,
    /// `resource_exhausted` when no slot is free, `quota_exceeded` when the tenant's quota would be exceeded.
    public func insertSandbox(
        maxSlots: Int, quota: TenantQuota?, budget: HostBudget? = nil, pending: HostReservations? = nil,
        audit: AuditEvent, _ make: @escaping @Sendable (Int) -> SandboxRecord
    ) async throws -> SandboxRecord {
        try await transaction("sandbox") { tx in
            let r = make(try StoreRules.lowestFreeSlot(try await tx.sandboxSlotsInUse(), below: maxSlots))
            if let quota {
                try StoreRules.checkQuota(
                    try await tx.tenantUsage(r.tenant), adding: r.spec.limits, quota: quota, tenant: r.tenant)
            }
            if let budget {
                try await tx.admit(r, budget: budget, pending: pending)
                try budget.admitDisk(r.spec.limits, existingDiskBytes: try await tx.existingDiskBytes())
            }
            guard try await !tx.sandboxNameTaken(tenant: r.tenant, name: r.name) else {
                throw VivariumError(.alreadyExists, "a sandbox named \(r.name) already exists")
            }
            try await tx.insertSandboxRow(r)
            try await tx.appendAudit([audit])
            return r
        }
    }

    /// Admits a stopped sandbox to the host budget and holds its place in `pending` until the caller
    /// removes it (once its state says running, or the start failed).
    public func reserveStart(_ r: SandboxRecord, budget: HostBudget, pending: HostReservations) async throws {
        try await transaction("sandbox start") { tx in
            try await tx.admit(r, budget: budget, pending: pending)
            pending.add(r)
        }
    }

    public func updateState(_ id: SandboxID, _ state: SandboxState, audit: AuditEvent) async throws {
        try await transaction("sandbox state") { tx in
            guard try await tx.setSandboxState(id, state) else {
                throw VivariumError(.notFound, "sandbox \(id) not found")
            }
            try await tx.appendAudit([audit])
        }
    }

    public func updateSpec(_ id: SandboxID, _ spec: SandboxSpec, audit: AuditEvent) async throws {
        try await transaction("sandbox spec") { tx in
            guard try await tx.setSandboxSpec(id, spec) else {
                throw VivariumError(.notFound, "sandbox \(id) not found")
            }
            try await tx.appendAudit([audit])
        }
    }

    public func deleteSandbox(_ id: SandboxID, audit: AuditEvent) async throws {
        try await transaction("sandbox") { tx in
            try await tx.deleteSandboxRow(id)
            try await tx.appendAudit([audit])
        }
    }
}

extension AuditStore {
    /// Appends records that stand alone (an exec's intent, a denial) in a transaction of their own.
    public func append(_ events: [AuditEvent]) async throws {
        _ = try await transaction("audit record") { tx in try await tx.appendAudit(events) }
    }
}
