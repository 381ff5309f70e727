import Foundation
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumStore

extension Engine {
    // MARK: Tenants

    public func createTenant(_ req: CreateTenantRequest) throws -> TenantInfo {
        let name = try ResourceName.parse(req.name, what: "tenant name")
        let t = TenantRecord(name: name, createdAt: Date())
        try identity.insertTenant(t, audit: AuditEvent("tenant.create", target: name.rawValue, tenant: name.rawValue))
        logger.info("tenant created", metadata: ["tenant": "\(name)"])
        return TenantInfo(name: name.rawValue, createdAt: t.createdAt)
    }

    public func listTenants() throws -> [TenantInfo] {
        try identity.tenants().map { TenantInfo(name: $0.name.rawValue, createdAt: $0.createdAt) }
    }

    /// Deletes a tenant with its principals; refused while it holds sandboxes or images unless forced,
    /// which deletes them first. Every token of the tenant stops working.
    public func deleteTenant(_ name: String, force: Bool) async throws {
        let n = try ResourceName.parse(name, what: "tenant name")
        guard n != ResourceName(rawValue: Self.defaultTenant)! else {
            throw VivariumError(.invalidState, "the default tenant cannot be removed")
        }
        guard try identity.tenants().contains(where: { $0.name == n }) else {
            throw VivariumError(.notFound, "tenant \(n) not found")
        }
        if force {
            for s in try store.sandboxes(tenant: n.rawValue, after: nil, limit: 100_000) {
                try await delete(tenant: n.rawValue, name: s.name.rawValue, force: true)
            }
            for i in try store.images(tenant: n.rawValue) {
                try await removeImage(tenant: n.rawValue, name: i.name.rawValue)
            }
        }
        try identity.deleteTenant(
            n.rawValue,
            audit: AuditEvent("tenant.delete", target: n.rawValue, tenant: n.rawValue, details: ["force": "\(force)"]))
        try tokens.revoke(.tenant, n.rawValue, tenant: n.rawValue)
        logger.info("tenant removed", metadata: ["tenant": "\(n)"])
    }

    // MARK: Principals

    public func createPrincipal(caller: Principal, tenant: String, _ req: CreatePrincipalRequest) throws
        -> PrincipalInfo
    {
        let name = try ResourceName.parse(req.name, what: "principal name")
        guard let kind = PrincipalKind(rawValue: req.kind ?? "user") else {
            throw VivariumError(.invalidArgument, "kind must be user, agent or service")
        }
        guard let role = Role(rawValue: req.role ?? "member") else {
            throw VivariumError(.invalidArgument, "role must be admin, tenant-admin, member or auditor")
        }
        guard role <= caller.role else {
            throw VivariumError(.forbidden, "cannot create a principal with a role above your own")
        }
        let rec = PrincipalRecord(
            id: "pr_" + randomHex(bytes: 10), tenant: tenant, name: name, kind: kind, role: role, disabled: false,
            createdAt: Date())
        try identity.insertPrincipal(
            rec,
            audit: AuditEvent(
                "principal.create", target: name.rawValue, tenant: tenant,
                details: ["id": rec.id, "kind": kind.rawValue, "role": role.rawValue]))
        logger.info("principal created", metadata: ["principal": "\(name)", "tenant": "\(tenant)"])
        return Self.principalInfo(rec)
    }

    public func listPrincipals(tenant: String) throws -> [PrincipalInfo] {
        try identity.principals(tenant: tenant).map(Self.principalInfo)
    }

    /// A caller may act on a principal (keys, tokens, disable, delete, revoke) only up to its own role,
    /// and only an admin acts on an admin.
    func requireManageable(_ target: PrincipalRecord, by caller: Principal) throws {
        guard target.role <= caller.role, caller.role == .admin || target.role != .admin else {
            throw VivariumError(.forbidden, "principal \(target.name) has a role above what you may manage")
        }
    }

    func principalRecord(tenant: String, name: String) throws -> PrincipalRecord {
        let n = try ResourceName.parse(name, what: "principal name")
        guard let p = try identity.principal(tenant: tenant, name: n) else {
            throw VivariumError(.notFound, "principal \(n) not found")
        }
        return p
    }

    public func deletePrincipal(caller: Principal, tenant: String, name: String) throws {
        let p = try principalRecord(tenant: tenant, name: name)
        try requireManageable(p, by: caller)
        try identity.deletePrincipal(
            id: p.id,
            audit: AuditEvent("principal.delete", target: p.name.rawValue, tenant: tenant, details: ["id": p.id]))
        try tokens.revoke(.principal, p.id, tenant: tenant)
    }

    public func disablePrincipal(caller: Principal, tenant: String, name: String) throws -> PrincipalInfo {
        var p = try principalRecord(tenant: tenant, name: name)
        try requireManageable(p, by: caller)
        try tokens.disable(p)
        p.disabled = true
        return Self.principalInfo(p)
    }

    public func createAPIKey(caller: Principal, tenant: String, principal name: String, _ req: CreateAPIKeyRequest)
        throws -> APIKeyInfo
    {
        let p = try principalRecord(tenant: tenant, name: name)
        try requireManageable(p, by: caller)
        let requested =
            try req.scopes.map { try Scope.parseList($0.joined(separator: ",")) } ?? TokenService.allowedScopes(p.role)
        let ttl = req.ttlSeconds ?? 90 * 86400
        guard (60...Int64(TokenService.maxAPIKeyLifetime)).contains(ttl) else {
            throw VivariumError(.invalidArgument, "ttl must be between 1 minute and 366 days")
        }
        let scopes = requested.intersection(caller.scopes).intersection(TokenService.allowedScopes(p.role))
        let key = try tokens.createAPIKey(for: p, scopes: scopes, ttl: TimeInterval(ttl))
        return APIKeyInfo(
            apiKey: key, principal: p.name.rawValue, scopes: scopes.map(\.rawValue).sorted(),
            expiresAt: Date().addingTimeInterval(TimeInterval(ttl)))
    }

    // MARK: Tokens

    public func token(_ req: TokenRequest) async throws -> TokenPair {
        switch req.grantType {
        case "api_key":
            guard let k = req.apiKey else { throw VivariumError(.invalidArgument, "api_key is missing") }
            return try await tokens.exchange(apiKey: k)
        case "refresh_token":
            guard let r = req.refreshToken else { throw VivariumError(.invalidArgument, "refresh_token is missing") }
            return try await tokens.refresh(r)
        default:
            throw VivariumError(.invalidArgument, "grant_type must be api_key or refresh_token")
        }
    }

    /// A least-privilege token for a principal of the caller's tenant, optionally bound to the id of
    /// one sandbox (a sandbox re-created under the same name is not covered).
    public func issueToken(caller: Principal, tenant: String, _ req: IssueTokenRequest) async throws -> TokenPair {
        let p = try principalRecord(tenant: tenant, name: req.principal)
        try requireManageable(p, by: caller)
        guard !p.disabled else { throw VivariumError(.invalidState, "principal \(p.name) is disabled") }
        let scopes = try Scope.parseList(req.scopes.joined(separator: ","))
        guard scopes.isSubset(of: caller.scopes), scopes.isSubset(of: TokenService.allowedScopes(p.role)) else {
            throw VivariumError(.forbidden, "cannot grant scopes beyond your own or the principal's role")
        }
        let bound = try req.sandbox.map { try record(tenant: tenant, name: $0).id }
        let ttl = req.ttlSeconds.map(TimeInterval.init) ?? tokens.config.accessLifetime
        guard ttl >= 1 else { throw VivariumError(.invalidArgument, "ttl must be positive") }
        // The whole session ends with the requested lifetime: refreshing cannot extend it.
        return try await tokens.issuePair(
            p, scopes: scopes, boundSandbox: bound, family: nil, ttl: ttl, sessionEnd: Date().addingTimeInterval(ttl),
            action: "token.issue")
    }

    public func revoke(caller: Principal, tenant: String, _ req: RevokeRequest) throws {
        let given = [req.jti, req.principal, req.tenant].compactMap { $0 }
        guard given.count == 1 else {
            throw VivariumError(.invalidArgument, "give exactly one of jti, principal, tenant")
        }
        if let jti = req.jti {
            // A jti names no tenant: only an admin revokes by it.
            guard caller.role == .admin else { throw VivariumError(.forbidden, "only an admin revokes by jti") }
            guard jti.utf8.count == 32, jti.allSatisfy(\.isHexDigit) else {
                throw VivariumError(.invalidArgument, "invalid jti")
            }
            try tokens.revoke(.jti, jti, tenant: nil)
        } else if let name = req.principal {
            let p = try principalRecord(tenant: tenant, name: name)
            try requireManageable(p, by: caller)
            try tokens.revoke(.principal, p.id, tenant: tenant)
        } else if let t = req.tenant {
            guard caller.role == .admin || t == caller.tenant else {
                throw VivariumError(.forbidden, "only an admin revokes another tenant's tokens")
            }
            let name = try ResourceName.parse(t, what: "tenant").rawValue
            try tokens.revoke(.tenant, name, tenant: name)
        }
    }

    /// For sandbox-bound tokens: the sandbox named must be the one the token is bound to; anything else
    /// answers as not found.
    public func checkBinding(_ caller: Principal, tenant: String, sandbox name: String) throws {
        guard let bound = caller.boundSandbox else { return }
        guard let r = try? record(tenant: tenant, name: name), r.id == bound else {
            throw VivariumError(.notFound, "sandbox \(name.prefix(63)) not found")
        }
    }

    static func principalInfo(_ p: PrincipalRecord) -> PrincipalInfo {
        PrincipalInfo(
            id: p.id, name: p.name.rawValue, tenant: p.tenant, kind: p.kind.rawValue, role: p.role.rawValue,
            disabled: p.disabled, createdAt: p.createdAt)
    }
}
