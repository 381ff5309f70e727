import Foundation
import GRDB
import Logging
import Synchronization
import VivariumAudit
import VivariumCore

/// The embedded store: SQLite through GRDB, WAL mode, named migrations.
public final class SQLiteStore: Store {
    let pool: DatabasePool

    /// Write-through cache of sandbox records, updated when a transaction commits: this daemon is the only
    /// writer of its database (the state directory is locked), and a get or an exec should not wait on a
    /// database read.
    struct SandboxCache {
        var byID: [SandboxID: SandboxRecord] = [:]
        var byName: [String: SandboxID] = [:]
        static func key(_ tenant: String, _ name: String) -> String { tenant + "/" + name }
        mutating func put(_ r: SandboxRecord) {
            byID[r.id] = r
            byName[Self.key(r.tenant, r.name.rawValue)] = r.id
        }
        mutating func remove(_ id: SandboxID) {
            if let r = byID.removeValue(forKey: id) { byName[Self.key(r.tenant, r.name.rawValue)] = nil }
        }
    }
    let cache = Mutex(SandboxCache())
    let writer: SQLiteWriter
    public let auditMode: AuditMode
    /// Who hears of appended records (the checkpointer, audit followers), by registration id.
    let auditObservers = Mutex<(next: Int, all: [Int: @Sendable (Int64) -> Void])>((0, [:]))
    let logger: Logger
    let path: String

    public init(path: String, audit: AuditMode = .required, logger: Logger = Logger(label: "vivarium.store")) throws {
        auditMode = audit
        self.path = path
        self.logger = logger
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(5)
        // A transaction spans several accesses of the writer connection (it awaits between statements);
        // only `SQLiteWriter` opens one, and it always ends it.
        config.allowsUnsafeTransactions = true
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        do {
            let pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
            self.pool = pool
            writer = SQLiteWriter(pool: pool)
        } catch {
            throw VivariumError(.unavailable, "cannot open the database at \(path)", cause: error)
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("0001-tenants-images-sandboxes") { db in
            try db.execute(
                sql: """
                    CREATE TABLE tenants (
                        name TEXT PRIMARY KEY NOT NULL,
                        created_at REAL NOT NULL
                    );
                    INSERT INTO tenants (name, created_at) VALUES ('default', CAST(strftime('%s', 'now') AS REAL));
                    CREATE TABLE images (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        tenant TEXT NOT NULL REFERENCES tenants(name),
                        name TEXT NOT NULL,
                        digest TEXT NOT NULL,
                        rootfs TEXT NOT NULL,
                        size_bytes INTEGER NOT NULL,
                        created_at REAL NOT NULL,
                        UNIQUE (tenant, name)
                    );
                    CREATE TABLE sandboxes (
                        id TEXT PRIMARY KEY NOT NULL,
                        tenant TEXT NOT NULL REFERENCES tenants(name),
                        name TEXT NOT NULL,
                        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
                        image_name TEXT NOT NULL,
                        image_digest TEXT NOT NULL,
                        image_rootfs TEXT NOT NULL,
                        spec TEXT NOT NULL,
                        memory_bytes INTEGER NOT NULL,
                        milli_cpus INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        pid INTEGER,
                        uid_slot INTEGER NOT NULL UNIQUE,
                        bundle TEXT NOT NULL,
                        cgroup_path TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        expires_at REAL,
                        UNIQUE (tenant, name)
                    );
                    CREATE INDEX sandboxes_expires ON sandboxes(expires_at) WHERE expires_at IS NOT NULL;
                    """)
        }
        registerIdentityMigration(&m)
        registerAuditMigration(&m)
        // Disk quotas are summed at every create (host and tenant budgets): a column, like memory's, not
        // JSON parsed per row. Specs written before disk quotas count at the default, as they decode.
        m.registerMigration("0006-sandbox-disk-bytes") { db in
            try db.execute(
                sql: """
                    ALTER TABLE sandboxes ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
                    UPDATE sandboxes SET disk_bytes = coalesce(json_extract(spec, '$.limits.diskBytes'), ?);
                    """, arguments: [ResourceLimits.defaultDiskBytes])
        }
        registerRouteMigration(&m)
        registerSecretMigration(&m)
        m.registerMigration("0009-image-references") { db in
            try db.execute(
                sql: """
                    ALTER TABLE images ADD COLUMN reference TEXT;
                    CREATE UNIQUE INDEX images_reference ON images(tenant, reference) WHERE reference IS NOT NULL;
                    """)
        }
        return m
    }

    /// A database error as the API tells it: a constraint as `already_exists` or `invalid_state`, the rest
    /// as `unavailable`.
    static func mapError(_ what: String, _ error: any Error) -> any Error {
        switch error {
        case let e as VivariumError: return e
        case let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT:
            if e.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
                || e.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY
            {
                return VivariumError(.alreadyExists, "\(what) already exists")
            }
            return VivariumError(.invalidState, "\(what): constraint failed", cause: e)
        case is DatabaseError: return VivariumError(.unavailable, "store: \(what) failed", cause: error)
        // A transaction body's own error is its caller's.
        default: return error
        }
    }

    /// A read on one of the pool's reader connections (concurrent with the writer, WAL mode).
    func read<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do { return try await pool.read(body) } catch { throw Self.mapError(what, error) }
    }

    static let sandboxColumns = """
        id, tenant, name, image_id, image_name, image_digest, image_rootfs, spec, state, pid, uid_slot, bundle,
        cgroup_path, created_at, expires_at, env_key_id, env_wrapped_key, env_ciphertext
        """

    public func sandbox(tenant: String, name: ResourceName) async throws -> SandboxRecord? {
        if let r = cache.withLock({ c in c.byName[SandboxCache.key(tenant, name.rawValue)].flatMap { c.byID[$0] } }) {
            return r
        }
        return try await read("sandbox") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.sandboxColumns) FROM sandboxes WHERE tenant = ? AND name = ?",
                arguments: [tenant, name.rawValue]
            ).map(Self.sandbox)
        }?.cached(in: cache)
    }

    public func sandbox(id: SandboxID) async throws -> SandboxRecord? {
        if let r = cache.withLock({ $0.byID[id] }) { return r }
        return try await read("sandbox") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.sandboxColumns) FROM sandboxes WHERE id = ?", arguments: [id.rawValue]
            ).map(Self.sandbox)
        }?.cached(in: cache)
    }

    public func sandboxes(tenant: String?, after: String?, limit: Int) async throws -> [SandboxRecord] {
        try await read("sandboxes") { db in
            var sql = "SELECT \(Self.sandboxColumns) FROM sandboxes WHERE 1"
            var args: StatementArguments = []
            if let tenant {
                sql += " AND tenant = ?"
                _ = args.append(contentsOf: [tenant])
            }
            if let after {
                sql += " AND name > ?"
                _ = args.append(contentsOf: [after])
            }
            sql += " ORDER BY name, tenant LIMIT ?"
            _ = args.append(contentsOf: [limit])
            return try Row.fetchAll(db, sql: sql, arguments: args).map(Self.sandbox)
        }
    }

    public func allSandboxes() async throws -> [SandboxRecord] {
        try await read("sandboxes") { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.sandboxColumns) FROM sandboxes ORDER BY created_at").map(
                Self.sandbox)
        }
    }

    public func expiredSandboxes(now: Date) async throws -> [SandboxRecord] {
        try await read("sandboxes") { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT \(Self.sandboxColumns) FROM sandboxes WHERE expires_at IS NOT NULL AND expires_at <= ?",
                arguments: [now.timeIntervalSince1970]
            ).map(Self.sandbox)
        }
    }

    public func sandboxCount() async throws -> Int {
        try await read("sandboxes") { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM sandboxes") ?? 0 }
    }

    public func insertImage(_ image: ImageRecord, audit: AuditEvent) async throws -> ImageRecord {
        try await write("image \(image.name)", audit: [audit]) { db in
            try db.execute(
                sql: """
                    INSERT INTO images (tenant, name, digest, rootfs, size_bytes, created_at, reference)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    image.tenant, image.name.rawValue, image.digest.rawValue, image.rootfs, image.sizeBytes,
                    image.createdAt.timeIntervalSince1970, image.reference,
                ])
            var r = image
            r.id = db.lastInsertedRowID
            return r
        }
    }

    static let imageColumns = "id, tenant, name, digest, rootfs, size_bytes, created_at, reference"

    public func image(tenant: String, reference: String) async throws -> ImageRecord? {
        try await read("image") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.imageColumns) FROM images WHERE tenant = ? AND reference = ?",
                arguments: [tenant, reference]
            ).map(Self.image)
        }
    }

    /// Records a pull: a new image for a new reference, or the reference moved to what it names now
    /// (sandboxes keep the digest they run).
    public func pinImage(_ image: ImageRecord, audit: AuditEvent) async throws -> ImageRecord {
        guard let reference = image.reference else { return try await insertImage(image, audit: audit) }
        return try await write("image \(reference)", audit: [audit]) { db in
            if let id = try Int64.fetchOne(
                db, sql: "SELECT id FROM images WHERE tenant = ? AND reference = ?",
                arguments: [image.tenant, reference])
            {
                try db.execute(
                    sql: "UPDATE images SET digest = ?, rootfs = ?, size_bytes = ?, created_at = ? WHERE id = ?",
                    arguments: [
                        image.digest.rawValue, image.rootfs, image.sizeBytes, image.createdAt.timeIntervalSince1970, id,
                    ])
                var r = image
                r.id = id
                return r
            }
            try db.execute(
                sql: """
                    INSERT INTO images (tenant, name, digest, rootfs, size_bytes, created_at, reference)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    image.tenant, image.name.rawValue, image.digest.rawValue, image.rootfs, image.sizeBytes,
                    image.createdAt.timeIntervalSince1970, reference,
                ])
            var r = image
            r.id = db.lastInsertedRowID
            return r
        }
    }

    public func image(tenant: String, name: ResourceName) async throws -> ImageRecord? {
        try await read("image") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.imageColumns) FROM images WHERE tenant = ? AND name = ?",
                arguments: [tenant, name.rawValue]
            ).map(Self.image)
        }
    }

    public func images(tenant: String?) async throws -> [ImageRecord] {
        try await read("images") { db in
            if let tenant {
                return try Row.fetchAll(
                    db, sql: "SELECT \(Self.imageColumns) FROM images WHERE tenant = ? ORDER BY name",
                    arguments: [tenant]
                ).map(Self.image)
            }
            return try Row.fetchAll(db, sql: "SELECT \(Self.imageColumns) FROM images ORDER BY name").map(
                Self.image)
        }
    }

    public func deleteImage(tenant: String, name: ResourceName, audit: AuditEvent) async throws -> ImageRecord {
        try await write("image", audit: [audit]) { db in
            guard
                let img = try Row.fetchOne(
                    db, sql: "SELECT \(Self.imageColumns) FROM images WHERE tenant = ? AND name = ?",
                    arguments: [tenant, name.rawValue]
                ).map(Self.image)
            else { throw VivariumError(.imageNotFound, "image \(name) not found") }
            let users =
                try String.fetchAll(
                    db, sql: "SELECT name FROM sandboxes WHERE image_id = ? ORDER BY name LIMIT 5",
                    arguments: [img.id])
            guard users.isEmpty else {
                throw VivariumError(
                    .imageInUse, "image \(name) is used by sandbox \(users.joined(separator: ", "))")
            }
            try db.execute(sql: "DELETE FROM images WHERE id = ?", arguments: [img.id])
            return img
        }
    }

    public func imageDigestsInUse() async throws -> Set<Digest> {
        try await read("images") { db in
            Set(
                try String.fetchAll(db, sql: "SELECT digest FROM images UNION SELECT image_digest FROM sandboxes")
                    .compactMap(Digest.init(rawValue:)))
        }
    }

    static func encode(_ spec: SandboxSpec) throws -> String {
        String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
    }

    static func sandbox(_ row: Row) throws -> SandboxRecord {
        let spec = try JSONDecoder().decode(SandboxSpec.self, from: Data((row["spec"] as String).utf8))
        guard let id = SandboxID(rawValue: row["id"]), let name = ResourceName(rawValue: row["name"]),
            let imageName = ResourceName(rawValue: row["image_name"]),
            let digest = Digest(rawValue: row["image_digest"])
        else { throw VivariumError(.internalError, "corrupt sandbox row") }
        let expires: Double? = row["expires_at"]
        var env: SealedValue?
        if let keyID: String = row["env_key_id"], let wrapped: Data = row["env_wrapped_key"],
            let ciphertext: Data = row["env_ciphertext"]
        {
            env = SealedValue(key: WrappedKey(keyID: keyID, bytes: Array(wrapped)), ciphertext: Array(ciphertext))
        }
        return SandboxRecord(
            id: id, tenant: row["tenant"], name: name, imageID: row["image_id"], imageName: imageName,
            imageDigest: digest, imageRootfs: row["image_rootfs"], spec: spec,
            state: try SandboxState(name: row["state"], pid: row["pid"]), uidSlot: row["uid_slot"],
            bundle: row["bundle"], cgroupPath: row["cgroup_path"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            expiresAt: expires.map { Date(timeIntervalSince1970: $0) }, sealedEnv: env)
    }

    static func image(_ row: Row) throws -> ImageRecord {
        guard let name = ResourceName(rawValue: row["name"]), let digest = Digest(rawValue: row["digest"]) else {
            throw VivariumError(.internalError, "corrupt image row")
        }
        return ImageRecord(
            id: row["id"], tenant: row["tenant"], name: name, digest: digest, rootfs: row["rootfs"],
            sizeBytes: row["size_bytes"], createdAt: Date(timeIntervalSince1970: row["created_at"]),
            reference: row["reference"])
    }
}

extension SandboxRecord {
    /// Stores the record in the cache and returns it.
    func cached(in cache: borrowing Mutex<SQLiteStore.SandboxCache>) -> SandboxRecord {
        cache.withLock { $0.put(self) }
        return self
    }
}
