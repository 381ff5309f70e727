import Foundation
import Logging
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumStore

/// The identity use cases: tenants, principals, API keys, tokens and signing keys.
public final class Identity: Sendable {
    public static let defaultTenant = "default"

    let store: any IdentityStore
    let tokens: TokenService
    let gate: Gate
    let sandboxes: Sandboxes
    let images: Images
    let logger: Logger

    init(
        store: any IdentityStore, tokens: TokenService, gate: Gate, sandboxes: Sandboxes, images: Images,
        logger: Logger
    ) {
        self.store = store
        self.tokens = tokens
        self.gate = gate
        self.sandboxes = sandboxes
        self.images = images
        self.logger = logger
    }

    func tenant(_ caller: Caller) throws -> String {
        guard let t = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
        return t
    }

    // MARK: Tenants

    public func createTenant(_ caller: Caller, name: ResourceName) async throws -> TenantRecord {
        try await gate.perform(caller, .tenantCreate, target: name.rawValue) {
            let t = TenantRecord(name: name, createdAt: Date())
            try await store.insertTenant(
                t, audit: AuditEvent("tenant.create", target: name.rawValue, tenant: name.rawValue))
            logger.info("tenant created", metadata: ["tenant": "\(name)"])
            return t
        }
    }

    /// Whether the tenant's sandboxes reach each other; running sandboxes follow at once.
    public func setIntraTenant(_ caller: Caller, name: ResourceName, allow: Bool) async throws -> TenantRecord {
        try await gate.perform(caller, .tenantUpdate, target: name.rawValue) {
            try await store.setIntraTenant(
                name.rawValue, allow,
                audit: AuditEvent(
                    "tenant.update", target: name.rawValue, tenant: name.rawValue,
                    details: ["intra_tenant": allow ? "allow" : "deny"]))
            try sandboxes.config.network?.setIntraTenant(name.rawValue, allow)
            logger.info("tenant updated", metadata: ["tenant": "\(name)", "intra_tenant": "\(allow)"])
            guard let t = try await store.tenants().first(where: { $0.name == name }) else {
                throw VivariumError(.notFound, "tenant \(name) not found")
            }
            return t
        }
    }

    public func listTenants(_ caller: Caller) async throws -> [TenantRecord] {
        try await gate.perform(caller, .tenantList, target: nil) { try await store.tenants() }
    }

    /// Deletes a tenant with its principals; refused while it holds sandboxes or images unless forced,
    /// which deletes them first. Every token of the tenant stops working.
    public func deleteTenant(_ caller: Caller, name n: ResourceName, force: Bool) async throws {
        try await gate.perform(caller, .tenantDelete, target: n.rawValue) {
            guard n.rawValue != Self.defaultTenant else {
                throw VivariumError(.invalidState, "the default tenant cannot be removed")
            }
            guard try await store.tenants().contains(where: { $0.name == n }) else {
                throw VivariumError(.notFound, "tenant \(n) not found")
            }
            if force {
                for s in try await sandboxes.store.sandboxes(tenant: n.rawValue, after: nil, limit: 100_000) {
                    try await sandboxes.delete(tenant: n.rawValue, name: s.name, force: true)
                }
                for i in try await sandboxes.store.images(tenant: n.rawValue) {
                    try await images.remove(tenant: n.rawValue, name: i.name)
                }
            }
            try await store.deleteTenant(
                n.rawValue,
                audit: AuditEvent(
                    "tenant.delete", target: n.rawValue, tenant: n.rawValue, details: ["force": "\(force)"]))
            try await tokens.revoke(.tenant, n.rawValue, tenant: n.rawValue)
            logger.info("tenant removed", metadata: ["tenant": "\(n)"])
        }
    }

    // MARK: Principals

    public func createPrincipal(_ caller: Caller, name: ResourceName, kind: PrincipalKind, role: Role) async throws
        -> PrincipalRecord
    {
        try await gate.perform(caller, .principalCreate, target: name.rawValue) {
            let tenant = try tenant(caller)
            guard let own = caller.role, role <= own else {
                throw VivariumError(.forbidden, "cannot create a principal with a role above your own")
            }
            let rec = PrincipalRecord(
                id: "pr_" + randomHex(bytes: 10), tenant: tenant, name: name, kind: kind, role: role, disabled: false,
                createdAt: Date())
            try await store.insertPrincipal(
                rec,
                audit: AuditEvent(
                    "principal.create", target: name.rawValue, tenant: tenant,
                    details: ["id": rec.id, "kind": kind.rawValue, "role": role.rawValue]))
            logger.info("principal created", metadata: ["principal": "\(name)", "tenant": "\(tenant)"])
            return rec
        }
    }

    public func listPrincipals(_ caller: Caller) async throws -> [PrincipalRecord] {
        try await gate.perform(caller, .principalList, target: nil) {
            try await store.principals(tenant: try tenant(caller))
        }
    }

    public func deletePrincipal(_ caller: Caller, name: ResourceName) async throws {
        try await gate.perform(caller, .principalDelete, target: name.rawValue) {
            let tenant = try tenant(caller)
            let p = try await manageable(caller, name)
            try await store.deletePrincipal(
                id: p.id,
                audit: AuditEvent("principal.delete", target: p.name.rawValue, tenant: tenant, details: ["id": p.id]))
            try await tokens.revoke(.principal, p.id, tenant: tenant)
        }
    }

    public func disablePrincipal(_ caller: Caller, name: ResourceName) async throws -> PrincipalRecord {
        try await gate.perform(caller, .principalDisable, target: name.rawValue) {
            var p = try await manageable(caller, name)
            try await tokens.disable(p)
            p.disabled = true
            return p
        }
    }

    /// An API key for a principal; its scopes are what was asked for (default: all the role allows),
    /// cut down to the caller's own and the principal's role.
    public func createAPIKey(_ caller: Caller, principal name: ResourceName, scopes: Set<Scope>?, ttl: Duration?)
        async throws -> NewAPIKey
    {
        try await gate.perform(caller, .apiKeyCreate, target: name.rawValue) {
            let p = try await manageable(caller, name)
            let ttl = ttl ?? .seconds(90 * 86400)
            guard ttl >= .seconds(60), ttl <= .seconds(Int64(TokenService.maxAPIKeyLifetime)) else {
                throw VivariumError(.invalidArgument, "ttl must be between 1 minute and 366 days")
            }
            let granted = (scopes ?? TokenService.allowedScopes(p.role)).intersection(caller.scopes)
                .intersection(TokenService.allowedScopes(p.role))
            let seconds = TimeInterval(ttl.components.seconds)
            let key = try await tokens.createAPIKey(for: p, scopes: granted, ttl: seconds)
            return NewAPIKey(
                key: key, principal: p.name, scopes: granted, expiresAt: Date().addingTimeInterval(seconds))
        }
    }

    /// The principal `name` of the caller's tenant, if the caller may act on it: only up to its own
    /// role, and only an admin acts on an admin.
    func manageable(_ caller: Caller, _ n: ResourceName) async throws -> PrincipalRecord {
        let tenant = try tenant(caller)
        guard let p = try await store.principal(tenant: tenant, name: n) else {
            throw VivariumError(.notFound, "principal \(n) not found")
        }
        guard let role = caller.role, p.role <= role, role == .admin || p.role != .admin else {
            throw VivariumError(.forbidden, "principal \(p.name) has a role above what you may manage")
        }
        return p
    }

    // MARK: Tokens

    /// A token pair for an API key or a refresh token (single use).
    public func exchange(_ caller: Caller, _ grant: TokenGrant) async throws -> TokenPair {
        try await gate.perform(caller, .tokenExchange, target: nil) {
            switch grant {
            case .apiKey(let k): try await tokens.exchange(apiKey: k)
            case .refreshToken(let r): try await tokens.refresh(r)
            }
        }
    }

    /// A least-privilege token for a principal of the caller's tenant, optionally bound to the id of
    /// one sandbox (a sandbox re-created under the same name is not covered).
    public func issueToken(
        _ caller: Caller, principal name: ResourceName, sandbox: ResourceName?, scopes: Set<Scope>, ttl: Duration?
    ) async throws -> TokenPair {
        try await gate.perform(caller, .tokenIssue, target: name.rawValue) {
            let p = try await manageable(caller, name)
            guard !p.disabled else { throw VivariumError(.invalidState, "principal \(p.name) is disabled") }
            guard scopes.isSubset(of: caller.scopes), scopes.isSubset(of: TokenService.allowedScopes(p.role)) else {
                throw VivariumError(.forbidden, "cannot grant scopes beyond your own or the principal's role")
            }
            var bound: SandboxID?
            if let sandbox { bound = try await sandboxes.record(caller, sandbox).id }
            let life = ttl.map { TimeInterval($0.components.seconds) } ?? tokens.config.accessLifetime
            let most = tokens.config.maxAccessLifetime
            guard life >= 1, life <= most else {
                throw VivariumError(.invalidArgument, "ttl must be between 1 and \(Int(most)) seconds")
            }
            // The whole session ends with the requested lifetime: refreshing cannot extend it.
            return try await tokens.issuePair(
                p, scopes: scopes, boundSandbox: bound, family: nil, ttl: life,
                sessionEnd: Date().addingTimeInterval(life), action: "token.issue")
        }
    }

    public func revoke(_ caller: Caller, _ target: RevocationTarget) async throws {
        try await gate.perform(caller, .tokenRevoke, target: nil) {
            switch target {
            case .jti(let jti):
                // A jti names no tenant: only an admin revokes by it.
                guard caller.role == .admin else { throw VivariumError(.forbidden, "only an admin revokes by jti") }
                guard jti.utf8.count == 32, jti.allSatisfy(\.isHexDigit) else {
                    throw VivariumError(.invalidArgument, "invalid jti")
                }
                try await tokens.revoke(.jti, jti, tenant: nil)
            case .principal(let name):
                let p = try await manageable(caller, name)
                try await tokens.revoke(.principal, p.id, tenant: p.tenant)
            case .tenant(let t):
                guard caller.role == .admin || t.rawValue == caller.principal?.tenant else {
                    throw VivariumError(.forbidden, "only an admin revokes another tenant's tokens")
                }
                try await tokens.revoke(.tenant, t.rawValue, tenant: t.rawValue)
            }
        }
    }

    // MARK: Signing keys

    public func jwks(_ caller: Caller) async throws -> JWKSet {
        try await gate.perform(caller, .jwks, target: nil) { tokens.keys.jwks }
    }

    /// Rotates the token signing keys, recorded before (no record, no rotation) and after.
    public func rotateKeys(_ caller: Caller) async throws -> JWKSet {
        try await gate.perform(caller, .keysRotate, target: nil) {
            try await gate.audit.append([AuditEvent("keys.rotate", global: true, outcome: .started)])
            do {
                try await tokens.keys.rotate()
            } catch {
                await sandboxes.recordOutcome(
                    AuditEvent("keys.rotate", global: true, outcome: .failed, details: ["error": "\(error)"]))
                throw error
            }
            await sandboxes.recordOutcome(
                AuditEvent("keys.rotate", global: true, details: ["kid": tokens.keys.current.kid]))
            return tokens.keys.jwks
        }
    }
}
