import Foundation
import GRDB
import Glibc
import VivariumAudit
import VivariumCore

/// The audit trail's storage. Records that describe a state change are appended by the store method
/// that makes the change, in its transaction; `append` is for records that stand alone (an exec's
/// intent, a denial).
public protocol AuditStore: Transactional {
    var auditMode: AuditMode { get }
    /// The newest record's sequence number and hash.
    func auditHead() async throws -> AuditHead?
    func auditRecords(_ q: AuditQuery) async throws -> [AuditRecord]
    /// Makes every committed record durable before a checkpoint signs it.
    func syncAudit() async throws
    func insertCheckpoint(_ c: AuditCheckpoint) async throws
    func auditCheckpoints() async throws -> [AuditCheckpoint]
    /// Calls `observer` after every commit that appended records, with the newest sequence number,
    /// until `removeObserver` is given the returned id.
    @discardableResult
    func onAppend(_ observer: @escaping @Sendable (Int64) -> Void) -> Int
    func removeObserver(_ id: Int)
}

extension SQLiteStore: AuditStore {
    static func registerAuditMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("0003-audit") { db in
            // The triggers keep the daemon's own code honest; whoever can write the file can drop them,
            // which is what the hash chain and the checkpoints outside the database are for.
            try db.execute(
                sql: """
                    CREATE TABLE audit_records (
                        seq INTEGER PRIMARY KEY NOT NULL,
                        time_ms INTEGER NOT NULL,
                        actor TEXT NOT NULL,
                        actor_name TEXT,
                        actor_tenant TEXT,
                        token_id TEXT,
                        source TEXT,
                        tenant TEXT,
                        action TEXT NOT NULL,
                        target TEXT,
                        outcome TEXT NOT NULL,
                        request_id TEXT,
                        details TEXT NOT NULL,
                        hash TEXT NOT NULL
                    );
                    CREATE INDEX audit_records_tenant ON audit_records(tenant, seq);
                    CREATE INDEX audit_records_time ON audit_records(time_ms);
                    CREATE INDEX audit_records_action ON audit_records(action, seq);
                    CREATE INDEX audit_records_target ON audit_records(target, seq);
                    CREATE INDEX audit_records_actor ON audit_records(actor, seq);
                    CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
                        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
                    CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
                        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
                    CREATE TABLE audit_checkpoints (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        seq INTEGER NOT NULL,
                        hash TEXT NOT NULL,
                        time_ms INTEGER NOT NULL,
                        key_id TEXT NOT NULL,
                        signature TEXT NOT NULL
                    );
                    """)
        }
    }

    /// Runs `body` and appends `audit` in one write transaction: neither the change nor its records
    /// exist without the other.
    func write<T: Sendable>(_ what: String, audit: [AuditEvent], _ body: @escaping @Sendable (Database) throws -> T)
        async throws -> T
    {
        try await sqliteTransaction(what) { tx in
            let value = try await tx.sql(body)
            try await tx.appendAudit(audit)
            return value
        }
    }

    /// One write transaction. Committed when `body` returns, rolled back when it throws.
    func sqliteTransaction<T: Sendable>(_ what: String, _ body: @Sendable (SQLiteTransaction) async throws -> T)
        async throws -> T
    {
        await writer.acquire()
        let tx = SQLiteTransaction(store: self)
        do {
            try await writer.execute { db in try db.beginTransaction(.immediate) }
            let value = try await body(tx)
            try await writer.execute { db in try db.commit() }
            await writer.release()
            tx.committed()
            return value
        } catch {
            await writer.rollbackAndRelease()
            throw Self.mapError(what, error)
        }
    }

    public func transaction<T: Sendable>(
        _ what: String, _ body: @Sendable (any StoreTransaction) async throws -> T
    ) async throws -> T {
        try await sqliteTransaction(what) { tx in try await body(tx) }
    }

    func appended(_ n: Int, head: Int64?) {
        guard let head else { return }
        AuditContext.current.tally?.add(n)
        for o in auditObservers.withLock({ Array($0.all.values) }) { o(head) }
    }

    @discardableResult
    public func onAppend(_ observer: @escaping @Sendable (Int64) -> Void) -> Int {
        auditObservers.withLock { o in
            o.next += 1
            o.all[o.next] = observer
            return o.next
        }
    }

    public func removeObserver(_ id: Int) { _ = auditObservers.withLock { $0.all.removeValue(forKey: id) } }

    public func auditHead() async throws -> AuditHead? {
        try await read("audit") { db in try Self.head(db) }
    }

    /// The newest record's sequence number and hash; an unreadable one (a tampered row) stops appends.
    static func head(_ db: Database) throws -> AuditHead? {
        guard let row = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
        else { return nil }
        guard case .int64(let seq) = (row["seq"] as DatabaseValue).storage, let hash = text(row["hash"]),
            AuditChain.bytes(hex: hash)?.count == 32
        else { throw VivariumError(.unavailable, "the newest audit record is unreadable: the trail was tampered with") }
        return AuditHead(seq: seq, hash: hash)
    }

    /// Column values of audit rows, read without trapping on a row someone rewrote with the wrong types:
    /// such a record then simply fails verification.
    static func text(_ v: DatabaseValue) -> String? {
        switch v.storage {
        case .null: nil
        case .string(let s): s
        case .int64(let i): String(i)
        case .double(let d): String(d)
        case .blob(let b): String(decoding: b, as: UTF8.self)
        }
    }

    static func int(_ v: DatabaseValue) -> Int64 {
        if case .int64(let i) = v.storage { return i }
        return Int64.min
    }

    public func auditRecords(_ q: AuditQuery) async throws -> [AuditRecord] {
        var sql = """
            SELECT seq, time_ms, actor, actor_name, actor_tenant, token_id, source, tenant, action, target, outcome,
                request_id, details, hash FROM audit_records WHERE 1
            """
        var args: [(any DatabaseValueConvertible)?] = []
        func add(_ clause: String, _ values: (any DatabaseValueConvertible)?...) {
            sql += " AND " + clause
            args += values
        }
        if let v = q.tenant { add("tenant = ?", v) }
        if let v = q.after { add("seq > ?", v) }
        if let v = q.sinceMs { add("time_ms >= ?", v) }
        if let v = q.untilMs { add("time_ms < ?", v) }
        if let v = q.actor { add("(actor = ? OR actor_name = ?)", v, v) }
        if let v = q.action { add("action = ?", v) }
        if let v = q.target { add("target = ?", v) }
        if let v = q.outcome { add("outcome = ?", v) }
        sql += " ORDER BY seq LIMIT ?"
        args.append(q.limit)
        let arguments = StatementArguments(args)
        let query = sql
        return try await read("audit") { db in
            try Row.fetchAll(db, sql: query, arguments: arguments).map { row in
                AuditRecord(
                    seq: Self.int(row["seq"]), timeMs: Self.int(row["time_ms"]),
                    actor: Self.text(row["actor"]) ?? "",
                    actorName: Self.text(row["actor_name"]), actorTenant: Self.text(row["actor_tenant"]),
                    tokenId: Self.text(row["token_id"]), source: Self.text(row["source"]),
                    tenant: Self.text(row["tenant"]), action: Self.text(row["action"]) ?? "",
                    target: Self.text(row["target"]), outcome: Self.text(row["outcome"]) ?? "",
                    requestId: Self.text(row["request_id"]),
                    details: Self.decodeDetails(Self.text(row["details"]) ?? ""),
                    hash: Self.text(row["hash"]) ?? "")
            }
        }
    }

    /// Makes every committed record durable (synchronous=NORMAL leaves the WAL's newest commits to the OS
    /// until a checkpoint): call before signing a head that leaves the host.
    public func syncAudit() async throws {
        do {
            try await writer.execute { db in try db.execute(sql: "PRAGMA wal_checkpoint(PASSIVE)") }
        } catch { throw Self.mapError("audit sync", error) }
        for file in [path + "-wal", path] {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard fsync(fd) == 0 else { throw VivariumError(.unavailable, "cannot sync \(file): errno \(errno)") }
        }
    }

    public func insertCheckpoint(_ c: AuditCheckpoint) async throws {
        try await write("audit checkpoint", audit: []) { db in
            try db.execute(
                sql: "INSERT INTO audit_checkpoints (seq, hash, time_ms, key_id, signature) VALUES (?, ?, ?, ?, ?)",
                arguments: [c.seq, c.hash, c.timeMs, c.keyId, c.signature])
        }
    }

    public func auditCheckpoints() async throws -> [AuditCheckpoint] {
        try await read("audit checkpoints") { db in
            try Row.fetchAll(
                db, sql: "SELECT seq, hash, time_ms, key_id, signature FROM audit_checkpoints ORDER BY id"
            )
            .map {
                AuditCheckpoint(
                    seq: $0["seq"], hash: $0["hash"], timeMs: $0["time_ms"], keyId: $0["key_id"],
                    signature: $0["signature"])
            }
        }
    }

    static func encodeDetails(_ d: [String: String]) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(d), as: UTF8.self)
    }

    static func decodeDetails(_ s: String) -> [String: String] {
        do {
            return try JSONDecoder().decode([String: String].self, from: Data(s.utf8))
        } catch {
            // A row someone edited into something else: show it, and let the chain say it was altered.
            return ["unreadable": String(s.prefix(256))]
        }
    }
}
