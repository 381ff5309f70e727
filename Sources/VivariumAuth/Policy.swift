import VivariumCore

/// How a route relates the caller to the resource it names.
public enum Ownership: Sendable, Equatable {
    /// No credentials needed (health, JWKS, the token exchange itself).
    case publicRoute
    /// Acts in the caller's own tenant; another tenant's resource answers 404 (no existence leak). A
    /// token bound to a sandbox reaches that sandbox only.
    case tenant
    /// Like `tenant`, and a token bound to a sandbox is refused.
    case tenantUnbound
    /// Only the `admin` role, whatever the tenant.
    case admin
}

/// One row of the policy table.
public struct RoutePolicy: Sendable, Equatable {
    public let scopes: Set<Scope>
    public let minimumRole: Role
    public let ownership: Ownership
    /// The route's name in the audit trail (denials and failures are recorded under it).
    public let action: String
    public init(_ scopes: Set<Scope>, role: Role = .auditor, _ ownership: Ownership, _ action: String) {
        self.scopes = scopes
        self.minimumRole = role
        self.ownership = ownership
        self.action = action
    }
}

/// The one policy table: every route the API serves maps to the scopes it needs, the lowest role
/// allowed, and its ownership rule. The router refuses to register a route without an entry.
public enum PolicyTable {
    public static let routes: [String: RoutePolicy] = [
        "GET /healthz": .init([], .publicRoute, "health"),
        "GET /.well-known/jwks.json": .init([], .publicRoute, "keys.jwks"),
        "POST /v1/tokens": .init([], .publicRoute, "token.exchange"),
        "POST /v1/tokens/issue": .init([.tokensAdmin], role: .tenantAdmin, .tenantUnbound, "token.issue"),
        "POST /v1/tokens/revoke": .init([.tokensAdmin], role: .tenantAdmin, .tenantUnbound, "token.revoke"),
        "POST /v1/keys/rotate": .init([.tokensAdmin], role: .admin, .admin, "keys.rotate"),

        "GET /v1/tenants": .init([.tenantsAdmin], role: .admin, .admin, "tenant.list"),
        "POST /v1/tenants": .init([.tenantsAdmin], role: .admin, .admin, "tenant.create"),
        "DELETE /v1/tenants/:name": .init([.tenantsAdmin], role: .admin, .admin, "tenant.delete"),

        "GET /v1/principals": .init([.principalsAdmin], role: .tenantAdmin, .tenantUnbound, "principal.list"),
        "POST /v1/principals": .init([.principalsAdmin], role: .tenantAdmin, .tenantUnbound, "principal.create"),
        "DELETE /v1/principals/:name": .init(
            [.principalsAdmin], role: .tenantAdmin, .tenantUnbound, "principal.delete"),
        "POST /v1/principals/:name/disable": .init(
            [.principalsAdmin], role: .tenantAdmin, .tenantUnbound, "principal.disable"),
        "POST /v1/principals/:name/keys": .init(
            [.principalsAdmin], role: .tenantAdmin, .tenantUnbound, "apikey.create"),

        "GET /v1/sandboxes": .init([.sandboxesRead], role: .auditor, .tenantUnbound, "sandbox.list"),
        "POST /v1/sandboxes": .init([.sandboxesWrite], role: .member, .tenantUnbound, "sandbox.create"),
        "GET /v1/sandboxes/:name": .init([.sandboxesRead], role: .auditor, .tenant, "sandbox.get"),
        "DELETE /v1/sandboxes/:name": .init([.sandboxesWrite], role: .member, .tenant, "sandbox.delete"),
        "POST /v1/sandboxes/:name/start": .init([.sandboxesWrite], role: .member, .tenant, "sandbox.start"),
        "POST /v1/sandboxes/:name/stop": .init([.sandboxesWrite], role: .member, .tenant, "sandbox.stop"),
        "POST /v1/sandboxes/:name/exec": .init([.exec], role: .member, .tenant, "sandbox.exec"),

        "GET /v1/images": .init([.imagesRead], role: .auditor, .tenantUnbound, "image.list"),
        "POST /v1/images": .init([.imagesWrite], role: .admin, .admin, "image.import"),
        "DELETE /v1/images/:name": .init([.imagesWrite], role: .admin, .admin, "image.delete"),

        // Tenant auditors read their tenant's records; verifying the chain needs all of them (admin).
        "GET /v1/audit": .init([.auditRead], role: .auditor, .tenantUnbound, "audit.list"),
        "GET /v1/audit/checkpoints": .init([.auditRead], role: .admin, .admin, "audit.checkpoints"),
    ]

    public static func policy(_ method: String, _ path: String) -> RoutePolicy? { routes["\(method) \(path)"] }

    public enum Decision: Equatable, Sendable {
        case allow
        /// 401: no or invalid credentials.
        case unauthenticated
        /// 403: authenticated but the role, scopes or binding do not allow this route.
        case forbidden(String)
    }

    /// The route-level decision. Ownership of a named resource is decided where it is looked up (in
    /// the caller's tenant, so another tenant's name is simply not found).
    public static func decide(_ p: RoutePolicy, principal: Principal?) -> Decision {
        if p.ownership == .publicRoute { return .allow }
        guard let principal else { return .unauthenticated }
        if p.ownership == .admin && principal.role != .admin { return .forbidden("this route needs the admin role") }
        if principal.role < p.minimumRole { return .forbidden("this route needs the \(p.minimumRole.rawValue) role") }
        let missing = p.scopes.subtracting(principal.scopes)
        if !missing.isEmpty {
            return .forbidden("the token lacks scope \(missing.map(\.rawValue).sorted().joined(separator: ", "))")
        }
        if principal.boundSandbox != nil && p.ownership != .tenant {
            return .forbidden("a sandbox-bound token reaches its sandbox only")
        }
        return .allow
    }
}
