import Foundation
import GRDB
import VivariumAudit
import VivariumCore

extension SQLiteStore {
    static func registerIdentityMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("0002-identity") { db in
            try db.execute(
                sql: """
                    CREATE TABLE principals (
                        id TEXT PRIMARY KEY NOT NULL,
                        tenant TEXT NOT NULL REFERENCES tenants(name),
                        name TEXT NOT NULL,
                        kind TEXT NOT NULL,
                        role TEXT NOT NULL,
                        disabled INTEGER NOT NULL DEFAULT 0,
                        created_at REAL NOT NULL,
                        UNIQUE (tenant, name)
                    );
                    CREATE TABLE api_keys (
                        id TEXT PRIMARY KEY NOT NULL,
                        principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
                        secret_hash TEXT NOT NULL,
                        scopes TEXT NOT NULL,
                        expires_at REAL NOT NULL,
                        created_at REAL NOT NULL
                    );
                    CREATE TABLE refresh_tokens (
                        hash TEXT PRIMARY KEY NOT NULL,
                        family TEXT NOT NULL,
                        principal_id TEXT NOT NULL REFERENCES principals(id) ON DELETE CASCADE,
                        scopes TEXT NOT NULL,
                        bound_sandbox TEXT,
                        expires_at REAL NOT NULL,
                        used_at REAL
                    );
                    CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
                    CREATE TABLE refresh_families (
                        id TEXT PRIMARY KEY NOT NULL,
                        revoked_at REAL
                    );
                    CREATE TABLE revocations (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        kind TEXT NOT NULL CHECK (kind IN ('jti', 'family', 'principal', 'tenant')),
                        value TEXT NOT NULL,
                        at REAL NOT NULL,
                        expires_at REAL NOT NULL
                    );
                    CREATE INDEX revocations_expiry ON revocations(expires_at);
                    """)
        }
        m.registerMigration("0004-refresh-access-jti") { db in
            try db.execute(
                sql: """
                    ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;
                    CREATE INDEX refresh_tokens_access_jti ON refresh_tokens(access_jti) WHERE access_jti IS NOT NULL;
                    """)
        }
        m.registerMigration("0005-tenant-intra") { db in
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN intra_tenant INTEGER NOT NULL DEFAULT 0")
        }
    }

    public func insertTenant(_ t: TenantRecord, audit: AuditEvent) async throws {
        try await write("tenant \(t.name)", audit: [audit]) { db in
            try db.execute(
                sql: "INSERT INTO tenants (name, created_at) VALUES (?, ?)",
                arguments: [t.name.rawValue, t.createdAt.timeIntervalSince1970])
        }
    }

    public func tenants() async throws -> [TenantRecord] {
        try await read("tenants") { db in
            try Row.fetchAll(db, sql: "SELECT name, created_at, intra_tenant FROM tenants ORDER BY name").compactMap {
                row in
                guard let n = ResourceName(rawValue: row["name"]) else { return nil }
                return TenantRecord(
                    name: n, createdAt: Date(timeIntervalSince1970: row["created_at"]), intraTenant: row["intra_tenant"]
                )
            }
        }
    }

    public func setIntraTenant(_ name: String, _ allow: Bool, audit: AuditEvent) async throws {
        try await write("tenant", audit: [audit]) { db in
            try db.execute(
                sql: "UPDATE tenants SET intra_tenant = ? WHERE name = ?", arguments: [allow ? 1 : 0, name])
            guard db.changesCount == 1 else { throw VivariumError(.notFound, "tenant \(name) not found") }
        }
    }

    public func deleteTenant(_ name: String, audit: AuditEvent) async throws {
        try await write("tenant", audit: [audit]) { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE name = ?", arguments: [name]) == true
            else {
                throw VivariumError(.notFound, "tenant \(name) not found")
            }
            let sandboxes =
                try Int.fetchOne(db, sql: "SELECT count(*) FROM sandboxes WHERE tenant = ?", arguments: [name]) ?? 0
            let images =
                try Int.fetchOne(db, sql: "SELECT count(*) FROM images WHERE tenant = ?", arguments: [name]) ?? 0
            guard sandboxes == 0, images == 0 else {
                throw VivariumError(
                    .invalidState,
                    "tenant \(name) holds \(sandboxes) sandboxes and \(images) images: remove them or force")
            }
            try db.execute(sql: "DELETE FROM principals WHERE tenant = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM tenants WHERE name = ?", arguments: [name])
        }
    }

    static let principalColumns = "id, tenant, name, kind, role, disabled, created_at"

    static func principal(_ row: Row) throws -> PrincipalRecord {
        guard let name = ResourceName(rawValue: row["name"]), let kind = PrincipalKind(rawValue: row["kind"]),
            let role = Role(rawValue: row["role"])
        else { throw VivariumError(.internalError, "corrupt principal row") }
        return PrincipalRecord(
            id: row["id"], tenant: row["tenant"], name: name, kind: kind, role: role, disabled: row["disabled"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    public func insertPrincipal(_ p: PrincipalRecord, audit: AuditEvent) async throws {
        try await write("principal \(p.name)", audit: [audit]) { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE name = ?", arguments: [p.tenant]) == true
            else {
                throw VivariumError(.notFound, "tenant \(p.tenant) not found")
            }
            try db.execute(
                sql: "INSERT INTO principals (\(Self.principalColumns)) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [
                    p.id, p.tenant, p.name.rawValue, p.kind.rawValue, p.role.rawValue, p.disabled,
                    p.createdAt.timeIntervalSince1970,
                ])
        }
    }

    public func principal(id: String) async throws -> PrincipalRecord? {
        try await read("principal") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.principalColumns) FROM principals WHERE id = ?", arguments: [id]
            )
            .map(Self.principal)
        }
    }

    public func principal(tenant: String, name: ResourceName) async throws -> PrincipalRecord? {
        try await read("principal") { db in
            try Row.fetchOne(
                db, sql: "SELECT \(Self.principalColumns) FROM principals WHERE tenant = ? AND name = ?",
                arguments: [tenant, name.rawValue]
            ).map(Self.principal)
        }
    }

    public func principals(tenant: String?) async throws -> [PrincipalRecord] {
        try await read("principals") { db in
            if let tenant {
                return try Row.fetchAll(
                    db, sql: "SELECT \(Self.principalColumns) FROM principals WHERE tenant = ? ORDER BY name",
                    arguments: [tenant]
                ).map(Self.principal)
            }
            return try Row.fetchAll(
                db, sql: "SELECT \(Self.principalColumns) FROM principals ORDER BY tenant, name"
            )
            .map(Self.principal)
        }
    }

    public func setPrincipalDisabled(id: String, _ disabled: Bool, audit: AuditEvent) async throws {
        try await write("principal", audit: [audit]) { db in
            try db.execute(sql: "UPDATE principals SET disabled = ? WHERE id = ?", arguments: [disabled, id])
            guard db.changesCount == 1 else { throw VivariumError(.notFound, "principal not found") }
        }
    }

    public func deletePrincipal(id: String, audit: AuditEvent) async throws {
        try await write("principal", audit: [audit]) { db in
            try db.execute(sql: "DELETE FROM principals WHERE id = ?", arguments: [id])
            guard db.changesCount == 1 else { throw VivariumError(.notFound, "principal not found") }
        }
    }

    static func scopes(_ s: String) -> Set<Scope> {
        Set(s.split(separator: ",").compactMap { Scope(rawValue: String($0)) })
    }

    public func insertAPIKey(_ k: APIKeyRecord, audit: AuditEvent) async throws {
        try await write("api key", audit: [audit]) { db in
            try db.execute(
                sql: """
                    INSERT INTO api_keys (id, principal_id, secret_hash, scopes, expires_at, created_at)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    k.id, k.principalID, k.secretHash, k.scopes.commaSeparated, k.expiresAt.timeIntervalSince1970,
                    k.createdAt.timeIntervalSince1970,
                ])
        }
    }

    public func apiKey(id: String) async throws -> APIKeyRecord? {
        try await read("api key") { db in
            try Row.fetchOne(
                db,
                sql:
                    "SELECT id, principal_id, secret_hash, scopes, expires_at, created_at FROM api_keys WHERE id = ?",
                arguments: [id]
            ).map { row in
                APIKeyRecord(
                    id: row["id"], principalID: row["principal_id"], secretHash: row["secret_hash"],
                    scopes: Self.scopes(row["scopes"]), expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
                    createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }

    public func insertRefresh(_ r: RefreshRecord, audit: AuditEvent) async throws {
        try await write("refresh token", audit: [audit]) { db in
            try db.execute(sql: "INSERT OR IGNORE INTO refresh_families (id) VALUES (?)", arguments: [r.family])
            try db.execute(
                sql: """
                    INSERT INTO refresh_tokens
                        (hash, family, principal_id, scopes, bound_sandbox, expires_at, used_at, access_jti)
                    VALUES (?, ?, ?, ?, ?, ?, NULL, ?)
                    """,
                arguments: [
                    r.hash, r.family, r.principalID, r.scopes.commaSeparated, r.boundSandbox,
                    r.expiresAt.timeIntervalSince1970, r.accessJTI,
                ])
        }
    }

    public func useRefresh(
        hash: String, now: Date, audit: @escaping @Sendable (RefreshOutcome, PrincipalRecord?) -> AuditEvent?
    ) async throws -> RefreshOutcome {
        try await sqliteTransaction("refresh token") { tx in
            let (outcome, p) = try await tx.sql { db in try Self.useRefreshRows(db, hash: hash, now: now) }
            if let e = audit(outcome, p) { try await tx.appendAudit([e]) }
            return outcome
        }
    }

    /// Marks the token used, or its family revoked, and reads the principal it belongs to.
    static func useRefreshRows(_ db: Database, hash: String, now: Date) throws -> (RefreshOutcome, PrincipalRecord?) {
        let outcome = try Self.useRefresh(db, hash: hash, now: now)
        let principalID: String? =
            switch outcome {
            case .invalid: nil
            case .reused(_, let id): id
            case .rotated(let r): r.principalID
            }
        let p = try principalID.flatMap {
            try Row.fetchOne(
                db, sql: "SELECT \(Self.principalColumns) FROM principals WHERE id = ?", arguments: [$0]
            ).map(Self.principal)
        }
        return (outcome, p)
    }

    static func useRefresh(_ db: Database, hash: String, now: Date) throws -> RefreshOutcome {
        guard
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT t.hash, t.family, t.principal_id, t.scopes, t.bound_sandbox, t.expires_at, t.used_at,
                           f.revoked_at
                    FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family WHERE t.hash = ?
                    """, arguments: [hash])
        else { return .invalid }
        let family: String = row["family"]
        let principalID: String = row["principal_id"]
        let used: Double? = row["used_at"]
        let revoked: Double? = row["revoked_at"]
        if revoked != nil { return .invalid }  // a replay into a dead family: nothing more to do
        if used != nil {
            try db.execute(
                sql: "UPDATE refresh_families SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                arguments: [now.timeIntervalSince1970, family])
            return .reused(family: family, principalID: principalID)
        }
        guard revoked == nil, (row["expires_at"] as Double) > now.timeIntervalSince1970 else { return .invalid }
        try db.execute(
            sql: "UPDATE refresh_tokens SET used_at = ? WHERE hash = ?",
            arguments: [now.timeIntervalSince1970, hash])
        return .rotated(
            RefreshRecord(
                hash: hash, family: family, principalID: principalID, scopes: Self.scopes(row["scopes"]),
                boundSandbox: row["bound_sandbox"], expiresAt: Date(timeIntervalSince1970: row["expires_at"]),
                usedAt: now))
    }

    public func refreshFamily(accessJTI: String) async throws -> String? {
        try await read("refresh family") { db in
            try String.fetchOne(
                db, sql: "SELECT family FROM refresh_tokens WHERE access_jti = ? LIMIT 1", arguments: [accessJTI])
        }
    }

    public func revoke(_ rs: [RevocationRecord], audit: AuditEvent) async throws {
        try await write("revocation", audit: [audit]) { db in
            for r in rs {
                let families: String? =
                    switch r.kind {
                    case .jti: nil
                    case .family: "?"
                    case .principal: "SELECT family FROM refresh_tokens WHERE principal_id = ?"
                    case .tenant:
                        """
                        SELECT t.family FROM refresh_tokens t JOIN principals p ON p.id = t.principal_id
                        WHERE p.tenant = ?
                        """
                    }
                try db.execute(
                    sql: "INSERT INTO revocations (kind, value, at, expires_at) VALUES (?, ?, ?, ?)",
                    arguments: [
                        r.kind.rawValue, r.value, r.at.timeIntervalSince1970, r.expiresAt.timeIntervalSince1970,
                    ])
                if let families {
                    try db.execute(
                        sql: """
                            UPDATE refresh_families SET revoked_at = coalesce(revoked_at, ?) WHERE id IN (\(families))
                            """,
                        arguments: [r.at.timeIntervalSince1970, r.value])
                }
            }
        }
    }

    public func revocations(now: Date) async throws -> [RevocationRecord] {
        try await read("revocations") { db in
            try Row.fetchAll(
                db, sql: "SELECT kind, value, at, expires_at FROM revocations WHERE expires_at > ?",
                arguments: [now.timeIntervalSince1970]
            ).compactMap { row in
                guard let kind = RevocationKind(rawValue: row["kind"]) else { return nil }
                return RevocationRecord(
                    kind: kind, value: row["value"], at: Date(timeIntervalSince1970: row["at"]),
                    expiresAt: Date(timeIntervalSince1970: row["expires_at"]))
            }
        }
    }
}

extension SQLiteStore: IdentityStore {}
