import Foundation
import GRDB
import VivariumAudit
import VivariumCore

/// Where a sealed value lives: a version of a secret, or a sandbox's environment.
public enum SealedRow: Sendable, Equatable {
    case secret(tenant: String, name: SecretName, version: Int64)
    case env(SandboxID)
}

/// Secrets: every version sealed under its own data key. Values leave only as ciphertext; a sandbox's
/// `--env` values live beside its row, sealed the same way.
extension SQLiteStore {
    static func registerSecretMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("0008-secrets") { db in
            try db.execute(
                sql: """
                    CREATE TABLE secrets (
                        tenant TEXT NOT NULL,
                        name TEXT NOT NULL,
                        version INTEGER NOT NULL,
                        key_id TEXT NOT NULL,
                        wrapped_key BLOB NOT NULL,
                        ciphertext BLOB NOT NULL,
                        binding TEXT NOT NULL,
                        created_at REAL NOT NULL,
                        PRIMARY KEY (tenant, name, version)
                    );
                    CREATE INDEX secrets_key ON secrets(key_id);
                    ALTER TABLE sandboxes ADD COLUMN env_key_id TEXT;
                    ALTER TABLE sandboxes ADD COLUMN env_wrapped_key BLOB;
                    ALTER TABLE sandboxes ADD COLUMN env_ciphertext BLOB;
                    CREATE INDEX sandboxes_env_key ON sandboxes(env_key_id) WHERE env_key_id IS NOT NULL;
                    """)
        }
    }

    static let secretColumns = "tenant, name, version, key_id, binding, created_at"

    public func insertSecret(_ s: Secret, sealed: SealedValue, audit: AuditEvent) async throws {
        let binding = String(decoding: try JSONEncoder().encode(s.binding), as: UTF8.self)
        try await write("secret \(s.name)", audit: [audit]) { db in
            do {
                try db.execute(
                    sql: """
                        INSERT INTO secrets (tenant, name, version, key_id, wrapped_key, ciphertext, binding, created_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        s.tenant, s.name.rawValue, s.version, sealed.key.keyID, Data(sealed.key.bytes),
                        Data(sealed.ciphertext), binding, s.createdAt.timeIntervalSince1970,
                    ])
            } catch let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT {
                throw VivariumError(.alreadyExists, "secret \(s.name) version \(s.version) already exists")
            }
        }
    }

    /// The newest version of every secret (of `tenant`, when given), by tenant and name, with how many
    /// versions each keeps.
    public func secrets(tenant: String?) async throws -> [(Secret, versions: Int64)] {
        try await read("secrets") { db in
            let filter = tenant == nil ? "" : "WHERE tenant = ?"
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT \(Self.secretColumns), n FROM (
                        SELECT *, row_number() OVER w AS rn, count(*) OVER (PARTITION BY tenant, name) AS n
                        FROM secrets \(filter) WINDOW w AS (PARTITION BY tenant, name ORDER BY version DESC)
                    ) WHERE rn = 1 ORDER BY tenant, name
                    """, arguments: StatementArguments(tenant.map { [$0] } ?? []))
            return try rows.map { (try Self.secret($0), $0["n"]) }
        }
    }

    /// The newest version of a secret, with its sealed value.
    public func secret(tenant: String, name: SecretName) async throws -> (Secret, SealedValue)? {
        try await read("secret") { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT \(Self.secretColumns), wrapped_key, ciphertext FROM secrets
                    WHERE tenant = ? AND name = ? ORDER BY version DESC LIMIT 1
                    """, arguments: [tenant, name.rawValue]
            ).map { row in
                let s = try Self.secret(row)
                return (
                    s,
                    SealedValue(
                        key: WrappedKey(keyID: s.keyID, bytes: Array(row["wrapped_key"] as Data)),
                        ciphertext: Array(row["ciphertext"] as Data))
                )
            }
        }
    }

    /// Deletes every version of a secret, or with `keepLatest` every version but the newest; `not_found`
    /// when there is none. Returns the versions deleted.
    public func deleteSecret(tenant: String, name: SecretName, keepLatest: Bool, audit: AuditEvent) async throws
        -> Int
    {
        try await write("secret \(name)", audit: [audit]) { db in
            let latest = try Int64.fetchOne(
                db, sql: "SELECT max(version) FROM secrets WHERE tenant = ? AND name = ?",
                arguments: [tenant, name.rawValue])
            guard let latest else { throw VivariumError(.notFound, "secret \(name) not found") }
            try db.execute(
                sql: "DELETE FROM secrets WHERE tenant = ? AND name = ? AND version < ?",
                arguments: [tenant, name.rawValue, keepLatest ? latest : Int64.max])
            return db.changesCount
        }
    }

    /// How many data keys each key-encryption key still wraps.
    public func wrappedKeyCounts() async throws -> [String: Int64] {
        try await read("key use") { db in
            var out: [String: Int64] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT key_id, count(*) FROM secrets GROUP BY key_id
                    UNION ALL SELECT env_key_id, count(*) FROM sandboxes WHERE env_key_id IS NOT NULL GROUP BY env_key_id
                    """)
            {
                out[row[0], default: 0] += row[1]
            }
            return out
        }
    }

    /// Up to `limit` data keys wrapped by another key than `current`.
    public func wrappedKeys(notBy current: String, limit: Int) async throws -> [(SealedRow, WrappedKey)] {
        try await read("key use") { db in
            var out: [(SealedRow, WrappedKey)] = []
            for row in try Row.fetchAll(
                db,
                sql: "SELECT tenant, name, version, key_id, wrapped_key FROM secrets WHERE key_id != ? LIMIT ?",
                arguments: [current, limit])
            {
                guard let name = SecretName(rawValue: row[1]) else { continue }
                out.append(
                    (
                        .secret(tenant: row[0], name: name, version: row[2]),
                        WrappedKey(keyID: row[3], bytes: Array(row[4] as Data))
                    ))
            }
            for row in try Row.fetchAll(
                db,
                sql: "SELECT id, env_key_id, env_wrapped_key FROM sandboxes WHERE env_key_id != ? LIMIT ?",
                arguments: [current, max(limit - out.count, 0)])
            {
                guard let id = SandboxID(rawValue: row[0]) else { continue }
                out.append((.env(id), WrappedKey(keyID: row[1], bytes: Array(row[2] as Data))))
            }
            return out
        }
    }

    /// Replaces a data key's wrapping, if it is still wrapped by `old.keyID` (a value replaced meanwhile
    /// keeps its own). Not audited one by one: the rotation's records say what happened.
    public func replaceWrappedKey(_ row: SealedRow, old: WrappedKey, new: WrappedKey) async throws {
        switch row {
        case .secret(let tenant, let name, let version):
            try await write("secret \(name)", audit: []) { db in
                try db.execute(
                    sql: """
                        UPDATE secrets SET key_id = ?, wrapped_key = ?
                        WHERE tenant = ? AND name = ? AND version = ? AND key_id = ?
                        """,
                    arguments: [new.keyID, Data(new.bytes), tenant, name.rawValue, version, old.keyID])
            }
        case .env(let id):
            try await sqliteTransaction("sandbox env") { tx in
                _ = try await tx.updateSandbox(
                    id, "env_key_id = ?, env_wrapped_key = ?", [new.keyID, Data(new.bytes)]
                ) { r in
                    if r.sealedEnv?.key == old { r.sealedEnv?.key = new }
                }
            }
        }
    }

    /// Seals the environment of a sandbox stored before environments were sealed: the spec keeps the
    /// names, the values move into the sealed columns, in one statement.
    public func sealEnv(_ id: SandboxID, spec: SandboxSpec, sealed: SealedValue) async throws {
        let json = try Self.encode(spec)
        try await sqliteTransaction("sandbox env") { tx in
            _ = try await tx.updateSandbox(
                id, "spec = ?, env_key_id = ?, env_wrapped_key = ?, env_ciphertext = ?",
                [json, sealed.key.keyID, Data(sealed.key.bytes), Data(sealed.ciphertext)]
            ) { r in
                r.spec = spec
                r.sealedEnv = sealed
            }
        }
    }

    /// Copies the write-ahead log into the database and truncates it, so that page images of rows since
    /// rewritten (plain values sealed since) are gone from the disk too (`secure_delete` zeroes them in
    /// the database file).
    public func scrubLog() async throws {
        // Readers may hold the log a moment: a busy checkpoint is tried again, then reported.
        for attempt in 0..<50 {
            await writer.acquire()
            let busy: Bool
            do {
                busy = try await writer.execute { db in
                    try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)").map { ($0[0] as Int) != 0 } ?? true
                }
            } catch {
                await writer.release()
                throw Self.mapError("checkpoint", error)
            }
            await writer.release()
            if !busy { return }
            if attempt < 49 { try await Task.sleep(for: .milliseconds(20)) }
        }
        throw VivariumError(.unavailable, "the database log could not be checkpointed: readers keep it busy")
    }

    static func secret(_ row: Row) throws -> Secret {
        guard let name = SecretName(rawValue: row["name"]),
            let binding = try? JSONDecoder().decode(SecretBinding.self, from: Data((row["binding"] as String).utf8))
        else { throw VivariumError(.internalError, "a secrets row is malformed") }
        return Secret(
            tenant: row["tenant"], name: name, version: row["version"], binding: binding, keyID: row["key_id"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }
}
