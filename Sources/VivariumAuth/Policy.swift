import VivariumCore

/// How an action relates the caller to the resource it names.
public enum Ownership: Sendable, Equatable {
    /// No credentials needed (health, JWKS, the API document, the token exchange itself).
    case publicAction
    /// Acts in the caller's own tenant; another tenant's resource answers 404 (no existence leak). A
    /// token bound to a sandbox reaches that sandbox only.
    case tenant
    /// Like `tenant`, and a token bound to a sandbox is refused.
    case tenantUnbound
    /// Only the `admin` role, whatever the tenant.
    case admin
}

/// One row of the policy table.
public struct Policy: Sendable, Equatable {
    public let scopes: Set<Scope>
    public let minimumRole: Role
    public let ownership: Ownership
    /// Changes something: a failure is recorded even when nothing else was, and a success that changed
    /// nothing leaves a record too.
    public let mutating: Bool

    public init(_ scopes: Set<Scope>, role: Role = .auditor, _ ownership: Ownership, mutating: Bool) {
        self.scopes = scopes
        self.minimumRole = role
        self.ownership = ownership
        self.mutating = mutating
    }
}

/// The one policy table: every action, whichever door asks for it, maps to the scopes it needs, the
/// lowest role allowed, its ownership rule and whether it changes state. The switch is exhaustive, so
/// an action without a row does not compile (default deny by construction).
public enum PolicyTable {
    public static func policy(_ action: Action) -> Policy {
        switch action {
        case .health, .apiDescribe, .jwks: .init([], .publicAction, mutating: false)
        case .tokenExchange: .init([], .publicAction, mutating: true)
        case .tokenIssue, .tokenRevoke: .init([.tokensAdmin], role: .tenantAdmin, .tenantUnbound, mutating: true)
        case .keysRotate: .init([.tokensAdmin], role: .admin, .admin, mutating: true)

        case .tenantList: .init([.tenantsAdmin], role: .admin, .admin, mutating: false)
        case .tenantCreate, .tenantDelete, .tenantUpdate: .init([.tenantsAdmin], role: .admin, .admin, mutating: true)

        case .principalList: .init([.principalsAdmin], role: .tenantAdmin, .tenantUnbound, mutating: false)
        case .principalCreate, .principalDelete, .principalDisable, .apiKeyCreate:
            .init([.principalsAdmin], role: .tenantAdmin, .tenantUnbound, mutating: true)

        case .sandboxList: .init([.sandboxesRead], role: .auditor, .tenantUnbound, mutating: false)
        case .sandboxCreate: .init([.sandboxesWrite], role: .member, .tenantUnbound, mutating: true)
        case .sandboxRun: .init([.sandboxesWrite, .exec], role: .member, .tenantUnbound, mutating: true)
        case .sandboxGet: .init([.sandboxesRead], role: .auditor, .tenant, mutating: false)
        case .sandboxDelete, .sandboxStart, .sandboxStop, .sandboxNetwork:
            .init([.sandboxesWrite], role: .member, .tenant, mutating: true)
        case .sandboxExec: .init([.exec], role: .member, .tenant, mutating: true)
        // Talking to a sandbox's own server is a member's, like exec; only its refusals are recorded
        // (every proxied request would flood the trail).
        case .sandboxConnect: .init([.sandboxesRead], role: .member, .tenant, mutating: false)
        // As exec: a member's, of its tenant's boxes; a token bound to a box reaches that box's files only.
        case .filesRead: .init([.filesRead], role: .member, .tenant, mutating: false)
        case .filesWrite: .init([.filesWrite], role: .member, .tenant, mutating: true)
        // A detached process is an exec that outlives its call: the same scope, and its output is as
        // private as an exec's.
        case .processList: .init([.exec], role: .member, .tenant, mutating: false)
        case .processControl: .init([.exec], role: .member, .tenant, mutating: true)

        case .imagePull, .imageSign, .imagePush: .init([.imagesWrite], role: .member, .tenantUnbound, mutating: true)
        case .imageSigningPayload: .init([.imagesRead], role: .member, .tenantUnbound, mutating: false)
        case .secretSet, .secretDelete: .init([.secretsWrite], role: .member, .tenantUnbound, mutating: true)
        case .secretList: .init([.secretsRead], role: .auditor, .tenantUnbound, mutating: false)
        case .kmsShow: .init([.kmsAdmin], role: .admin, .admin, mutating: false)
        case .kmsRotate, .kmsRetire: .init([.kmsAdmin], role: .admin, .admin, mutating: true)
        case .routeCreate: .init([.sandboxesWrite], role: .member, .tenant, mutating: true)
        case .routeList: .init([.sandboxesRead], role: .auditor, .tenantUnbound, mutating: false)
        case .routeDelete: .init([.sandboxesWrite], role: .member, .tenantUnbound, mutating: true)

        case .imageList, .imageSBOM, .imageScan, .imageInspect:
            .init([.imagesRead], role: .auditor, .tenantUnbound, mutating: false)
        // Host paths are for local root (the engine refuses remote callers); uploads and deletes are a
        // member's within its tenant, and only an admin's for the shared images of the default tenant.
        case .imageImport, .vulndbImport: .init([.imagesWrite], role: .admin, .admin, mutating: true)
        case .imageUpload, .imageDelete: .init([.imagesWrite], role: .member, .tenantUnbound, mutating: true)

        // Tenant auditors read their tenant's records; verifying the chain needs all of them (admin).
        case .auditList, .auditFollow: .init([.auditRead], role: .auditor, .tenantUnbound, mutating: false)
        case .auditCheckpoints: .init([.auditRead], role: .admin, .admin, mutating: false)
        }
    }

    public enum Decision: Equatable, Sendable {
        case allow
        /// 401: no or invalid credentials.
        case unauthenticated
        /// 403: authenticated but the role, scopes, binding or tenant do not allow this action.
        case forbidden(String)
    }

    /// The decision for a caller. Ownership of a named resource is decided where it is looked up (in
    /// the caller's tenant, so another tenant's name is simply not found; a bound token's sandbox by id).
    public static func decide(_ action: Action, for caller: Caller) -> Decision {
        let p = policy(action)
        if p.ownership == .publicAction { return .allow }
        guard let principal = caller.principal else { return .unauthenticated }
        if p.ownership == .admin && principal.role != .admin { return .forbidden("this action needs the admin role") }
        if principal.role < p.minimumRole { return .forbidden("this action needs the \(p.minimumRole.rawValue) role") }
        let missing = p.scopes.subtracting(principal.scopes)
        if !missing.isEmpty {
            return .forbidden("the token lacks scope \(missing.map(\.rawValue).sorted().joined(separator: ", "))")
        }
        if principal.boundSandbox != nil && p.ownership != .tenant {
            return .forbidden("a sandbox-bound token reaches its sandbox only")
        }
        if let t = caller.requestedTenant, t.rawValue != principal.tenant, principal.role != .admin {
            return .forbidden("only an admin acts in another tenant")
        }
        return .allow
    }
}
