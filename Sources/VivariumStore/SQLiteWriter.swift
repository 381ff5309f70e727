import Foundation
import GRDB
import Logging
import Synchronization
import VivariumAudit
import VivariumCore

/// A serial executor on a thread of its own. The SQLite store's writes run there: a statement that waits
/// on the disk holds this thread, never one of Swift's cooperative threads.
final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []  // guarded by `condition`

    init(name: String) {
        let t = Thread { [self] in run() }
        t.name = name
        t.start()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let j = UnownedJob(job)
        condition.lock()
        jobs.append(j)
        condition.signal()
        condition.unlock()
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedSerialExecutor())
        }
    }
}

/// The one writer of a SQLite store: transactions take turns (FIFO), and their statements run on the
/// writer's own thread through GRDB's writer connection. A transaction spans several statements and
/// awaits between them, so GRDB is told that it may stay open between accesses; only this actor opens one.
actor SQLiteWriter {
    private let executor = ThreadExecutor(name: "vivarium-sqlite-writer")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let pool: DatabasePool
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(pool: DatabasePool) { self.pool = pool }

    /// Waits for the writer's turn.
    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }

    /// Runs statements on the writer connection (not interrupted by task cancellation: a transaction
    /// half-done is finished or rolled back by its owner, never cut by a cancelled request).
    func execute<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws -> T {
        try pool.writeWithoutTransaction(body)
    }

    /// Rolls back whatever is open and hands the writer to the next transaction.
    func rollbackAndRelease() {
        try? pool.writeWithoutTransaction { db in if db.isInsideTransaction { try db.rollback() } }
        release()
    }
}

/// A write transaction of the SQLite store. What it changes reaches the store's cache and the audit
/// observers only once it committed.
final class SQLiteTransaction: StoreTransaction {
    let store: SQLiteStore
    private let afterCommit = Mutex<[@Sendable () -> Void]>([])
    private let appended = Mutex<(count: Int, head: Int64?)>((0, nil))

    init(store: SQLiteStore) { self.store = store }

    var auditMode: AuditMode { store.auditMode }
    var logger: Logger { store.logger }

    func sql<T: Sendable>(_ body: @Sendable (Database) throws -> T) async throws -> T {
        try await store.writer.execute(body)
    }

    func onCommit(_ f: @escaping @Sendable () -> Void) { afterCommit.withLock { $0.append(f) } }

    func committed() {
        for f in afterCommit.withLock({ $0 }) { f() }
        let (n, head) = appended.withLock { $0 }
        store.appended(n, head: head)
    }

    func sandboxSlotsInUse() async throws -> [Int] {
        try await sql { db in try Int.fetchAll(db, sql: "SELECT uid_slot FROM sandboxes ORDER BY uid_slot") }
    }

    func tenantUsage(_ tenant: String) async throws -> TenantUsage {
        try await sql { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT count(*) AS n, coalesce(sum(memory_bytes), 0) AS mem, coalesce(sum(milli_cpus), 0) AS cpu,
                           coalesce(sum(disk_bytes), 0) AS disk
                    FROM sandboxes WHERE tenant = ?
                    """, arguments: [tenant])!
            return TenantUsage(
                sandboxes: row["n"], memoryBytes: row["mem"], milliCPUs: row["cpu"], diskBytes: row["disk"])
        }
    }

    func runningUsage(tenant: String?) async throws -> RunningUsage {
        try await sql { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT coalesce(sum(json_extract(spec, '$.limits.pids')), 0) AS pids,
                           coalesce(sum(memory_bytes), 0) AS mem, coalesce(sum(milli_cpus), 0) AS cpu
                    FROM sandboxes WHERE state != 'stopped' AND (? IS NULL OR tenant = ?)
                    """, arguments: [tenant, tenant])!
            return RunningUsage(pids: row["pids"], memoryBytes: row["mem"], milliCPUs: row["cpu"])
        }
    }

    func existingDiskBytes() async throws -> Int64 {
        try await sql { db in try Int64.fetchOne(db, sql: "SELECT coalesce(sum(disk_bytes), 0) FROM sandboxes") ?? 0 }
    }

    func sandboxNameTaken(tenant: String, name: ResourceName) async throws -> Bool {
        try await sql { db in
            try Bool.fetchOne(
                db, sql: "SELECT 1 FROM sandboxes WHERE tenant = ? AND name = ?", arguments: [tenant, name.rawValue])
                == true
        }
    }

    func insertSandboxRow(_ r: SandboxRecord) async throws {
        let spec = try SQLiteStore.encode(r.spec)
        try await sql { db in
            try db.execute(
                sql: """
                    INSERT INTO sandboxes (id, tenant, name, image_id, image_name, image_digest, image_rootfs, spec,
                        memory_bytes, milli_cpus, disk_bytes, state, pid, uid_slot, bundle, cgroup_path, created_at,
                        expires_at, env_key_id, env_wrapped_key, env_ciphertext)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    r.id.rawValue, r.tenant, r.name.rawValue, r.imageID, r.imageName.rawValue, r.imageDigest.rawValue,
                    r.imageRootfs, spec, r.spec.limits.memoryBytes, r.spec.limits.milliCPUs, r.spec.limits.diskBytes,
                    r.state.name, r.state.pid,
                    r.uidSlot, r.bundle, r.cgroupPath, r.createdAt.timeIntervalSince1970,
                    r.expiresAt?.timeIntervalSince1970, r.sealedEnv?.key.keyID, r.sealedEnv.map { Data($0.key.bytes) },
                    r.sealedEnv.map { Data($0.ciphertext) },
                ])
        }
        let store = store
        onCommit { store.cache.withLock { $0.put(r) } }
    }

    func setSandboxSpec(_ id: SandboxID, _ spec: SandboxSpec) async throws -> Bool {
        let json = try SQLiteStore.encode(spec)
        return try await updateSandbox(id, "spec = ?", [json]) { $0.spec = spec }
    }

    func setSandboxState(_ id: SandboxID, _ state: SandboxState) async throws -> Bool {
        try await updateSandbox(id, "state = ?, pid = ?", [state.name, state.pid]) { $0.state = state }
    }

    /// Updates one sandbox row (`assignments` with their `arguments`), and its cached record the same way
    /// once the transaction commits. False when there is no such sandbox.
    func updateSandbox(
        _ id: SandboxID, _ assignments: String, _ arguments: [(any DatabaseValueConvertible)?],
        cached change: @escaping @Sendable (inout SandboxRecord) -> Void
    ) async throws -> Bool {
        let args = StatementArguments(arguments + [id.rawValue])
        let changed = try await sql { db in
            try db.execute(sql: "UPDATE sandboxes SET \(assignments) WHERE id = ?", arguments: args)
            return db.changesCount == 1
        }
        let store = store
        onCommit {
            store.cache.withLock { c in
                if var r = c.byID[id] {
                    change(&r)
                    c.byID[id] = r
                }
            }
        }
        return changed
    }

    func deleteSandboxRow(_ id: SandboxID) async throws {
        try await sql { db in try db.execute(sql: "DELETE FROM sandboxes WHERE id = ?", arguments: [id.rawValue]) }
        let store = store
        onCommit { store.cache.withLock { $0.remove(id) } }
    }

    /// The write transaction (BEGIN IMMEDIATE) holds the database's write lock from its first statement:
    /// the head read here stays the head until it ends.
    func lockAuditHead() async throws -> AuditHead? {
        try await sql { db in try SQLiteStore.head(db) }
    }

    func insertAuditRecords(_ records: [AuditRecord]) async throws {
        let rows = try records.map { r in (r, try SQLiteStore.encodeDetails(r.details)) }
        try await sql { db in
            for (r, details) in rows {
                try db.execute(
                    sql: """
                        INSERT INTO audit_records (seq, time_ms, actor, actor_name, actor_tenant, token_id, source, tenant,
                            action, target, outcome, request_id, details, hash)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        r.seq, r.timeMs, r.actor, r.actorName, r.actorTenant, r.tokenId, r.source, r.tenant, r.action,
                        r.target, r.outcome, r.requestId, details, r.hash,
                    ])
            }
        }
        if let last = records.last { appended.withLock { $0 = ($0.count + records.count, last.seq) } }
    }
}
