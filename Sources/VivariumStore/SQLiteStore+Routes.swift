import Foundation
import GRDB
import VivariumAudit
import VivariumCore

/// Published sandbox ports; a sandbox's routes go with its row.
extension SQLiteStore {
    static func registerRouteMigration(_ m: inout DatabaseMigrator) {
        m.registerMigration("0007-routes") { db in
            try db.execute(
                sql: """
                    CREATE TABLE routes (
                        key TEXT PRIMARY KEY NOT NULL,
                        tenant TEXT NOT NULL,
                        sandbox_id TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
                        port INTEGER NOT NULL,
                        access TEXT NOT NULL,
                        tcp_port INTEGER UNIQUE,
                        created_at REAL NOT NULL
                    );
                    CREATE INDEX routes_sandbox ON routes(sandbox_id);
                    """)
        }
    }

    static let routeColumns =
        "r.key, r.tenant, r.sandbox_id, s.name, r.port, r.access, r.tcp_port, r.created_at FROM routes r JOIN sandboxes s ON s.id = r.sandbox_id"

    public func insertRoute(_ route: PortRoute, maxPerTenant: Int, audit: AuditEvent) async throws {
        try await write("route \(route.key)", audit: [audit]) { db in
            let n =
                try Int.fetchOne(db, sql: "SELECT count(*) FROM routes WHERE tenant = ?", arguments: [route.tenant])
                ?? 0
            guard n < maxPerTenant else {
                throw VivariumError(.quotaExceeded, "tenant \(route.tenant) has \(n) routes, the most it may have")
            }
            try db.execute(
                sql: """
                    INSERT INTO routes (key, tenant, sandbox_id, port, access, tcp_port, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    route.key, route.tenant, route.sandbox.rawValue, route.port, route.access.rawValue, route.tcpPort,
                    route.createdAt.timeIntervalSince1970,
                ])
        }
    }

    /// Deletes a route of `tenant` (nil: any tenant's); `not_found` when there is none.
    public func deleteRoute(key: String, tenant: String?, audit: AuditEvent) async throws -> PortRoute {
        try await write("route", audit: [audit]) { db in
            guard
                let r = try Row.fetchOne(db, sql: "SELECT \(Self.routeColumns) WHERE r.key = ?", arguments: [key]).map(
                    Self.route),
                tenant == nil || r.tenant == tenant
            else { throw VivariumError(.notFound, "route \(key.prefix(253)) not found") }
            try db.execute(sql: "DELETE FROM routes WHERE key = ?", arguments: [key])
            return r
        }
    }

    public func route(key: String) async throws -> PortRoute? {
        try await read("route") { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.routeColumns) WHERE r.key = ?", arguments: [key]).map(Self.route)
        }
    }

    /// Every route (of `tenant`, when given), by key.
    public func routes(tenant: String?) async throws -> [PortRoute] {
        try await read("routes") { db in
            if let tenant {
                return try Row.fetchAll(
                    db, sql: "SELECT \(Self.routeColumns) WHERE r.tenant = ? ORDER BY r.key", arguments: [tenant]
                ).map(Self.route)
            }
            return try Row.fetchAll(db, sql: "SELECT \(Self.routeColumns) ORDER BY r.key").map(Self.route)
        }
    }

    static func route(_ row: Row) throws -> PortRoute {
        guard let id = SandboxID(rawValue: row[2]), let name = ResourceName(rawValue: row[3]),
            let access = RouteAccess(rawValue: row[5])
        else { throw VivariumError(.internalError, "a routes row is malformed") }
        return PortRoute(
            key: row[0], tenant: row[1], sandbox: id, sandboxName: name, port: row[4], access: access,
            tcpPort: row[6], createdAt: Date(timeIntervalSince1970: row[7]))
    }
}
