import Foundation
import VivariumAudit
import VivariumCore

/// An API key: only the SHA-256 of its secret is stored.
public struct APIKeyRecord: Sendable, Equatable {
    public var id: String
    public var principalID: String
    public var secretHash: String
    public var scopes: Set<Scope>
    public var expiresAt: Date
    public var createdAt: Date
    public init(
        id: String, principalID: String, secretHash: String, scopes: Set<Scope>, expiresAt: Date, createdAt: Date
    ) {
        self.id = id
        self.principalID = principalID
        self.secretHash = secretHash
        self.scopes = scopes
        self.expiresAt = expiresAt
        self.createdAt = createdAt
    }
}

/// A single-use refresh token (stored hashed) in a family that a reuse revokes whole.
public struct RefreshRecord: Sendable, Equatable {
    public var hash: String
    public var family: String
    public var principalID: String
    public var scopes: Set<Scope>
    public var boundSandbox: String?
    public var expiresAt: Date
    public var usedAt: Date?
    /// The jti of the access token issued with this refresh token, so that revoking it ends the family.
    public var accessJTI: String?
    public init(
        hash: String, family: String, principalID: String, scopes: Set<Scope>, boundSandbox: String?,
        expiresAt: Date, usedAt: Date?, accessJTI: String? = nil
    ) {
        self.accessJTI = accessJTI
        self.hash = hash
        self.family = family
        self.principalID = principalID
        self.scopes = scopes
        self.boundSandbox = boundSandbox
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }
}

public enum RevocationKind: String, Sendable, Codable {
    case jti
    /// Every access token issued from a refresh family.
    case family
    case principal
    case tenant
}

/// Revokes one token (`jti`), a refresh family's access tokens, or every token of a principal or
/// tenant issued up to `at`.
public struct RevocationRecord: Sendable, Equatable, Hashable {
    public var kind: RevocationKind
    public var value: String
    public var at: Date
    public var expiresAt: Date
    public init(kind: RevocationKind, value: String, at: Date, expiresAt: Date) {
        self.kind = kind
        self.value = value
        self.at = at
        self.expiresAt = expiresAt
    }
}

/// What a refresh attempt found.
public enum RefreshOutcome: Sendable, Equatable {
    /// The token was valid and is now used: issue a new pair in `record.family`.
    case rotated(RefreshRecord)
    /// The token was used before: its family is now revoked.
    case reused(family: String, principalID: String)
    case invalid
}

/// Tenants, principals, API keys, refresh tokens and revocations. Every method is one transaction; every
/// change is appended to the audit trail (`audit`) in that transaction.
public protocol IdentityStore: Transactional {
    func insertTenant(_ t: TenantRecord, audit: AuditEvent) async throws
    func tenants() async throws -> [TenantRecord]
    /// Whether the tenant's sandboxes reach each other; `not_found` for an unknown tenant.
    func setIntraTenant(_ name: String, _ allow: Bool, audit: AuditEvent) async throws
    /// Deletes a tenant; `invalid_state` while it holds sandboxes or principals (the caller removes
    /// them first when forced).
    func deleteTenant(_ name: String, audit: AuditEvent) async throws

    func insertPrincipal(_ p: PrincipalRecord, audit: AuditEvent) async throws
    func principal(id: String) async throws -> PrincipalRecord?
    func principal(tenant: String, name: ResourceName) async throws -> PrincipalRecord?
    func principals(tenant: String?) async throws -> [PrincipalRecord]
    func setPrincipalDisabled(id: String, _ disabled: Bool, audit: AuditEvent) async throws
    func deletePrincipal(id: String, audit: AuditEvent) async throws

    func insertAPIKey(_ k: APIKeyRecord, audit: AuditEvent) async throws
    func apiKey(id: String) async throws -> APIKeyRecord?

    func insertRefresh(_ r: RefreshRecord, audit: AuditEvent) async throws
    /// Marks the token used if it is valid and unused; on a second use revokes the whole family. The
    /// record `audit` makes of the outcome (and the token's principal) is appended in the same transaction.
    func useRefresh(
        hash: String, now: Date, audit: @escaping @Sendable (RefreshOutcome, PrincipalRecord?) -> AuditEvent?
    ) async throws -> RefreshOutcome

    /// Records a revocation and, for a family, principal or tenant, ends the refresh families it covers.
    /// The refresh family of the access token with this jti, if it was issued with a refresh token.
    func refreshFamily(accessJTI: String) async throws -> String?
    func revoke(_ rs: [RevocationRecord], audit: AuditEvent) async throws
    /// Revocations not yet expired.
    func revocations(now: Date) async throws -> [RevocationRecord]
}
