import Crypto
import Foundation
import JWTKit
import Logging
import VivariumAudit
import VivariumCore
import VivariumStore

/// The claims of a Vivarium access token.
public struct AccessClaims: JWTPayload, Equatable {
    public var iss: IssuerClaim
    public var aud: AudienceClaim
    public var sub: SubjectClaim
    public var tenant: String
    public var scopes: [String]
    public var iat: IssuedAtClaim
    public var nbf: NotBeforeClaim
    public var exp: ExpirationClaim
    public var jti: IDClaim
    /// Token type: always "access". A refresh token is opaque and never a JWT.
    public var typ: String
    /// The refresh family this token came from, for reuse revocation.
    public var fam: String?
    /// A sandbox id this token is bound to.
    public var sbx: String?

    /// Claims are checked by `TokenService.verify`, which knows issuer, audience and clock.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Issues and verifies tokens: Ed25519 access JWTs (15 minutes by default), single-use refresh
/// tokens in families, API keys, and revocation that fails closed.
public final class TokenService: Sendable {
    public struct Configuration: Sendable {
        public var issuer: String
        public var audience: String
        public var accessLifetime: TimeInterval
        public var maxAccessLifetime: TimeInterval
        public var refreshLifetime: TimeInterval
        /// Requests are refused when the revocation state is older than this.
        public var revocationStaleness: TimeInterval
        public init(
            issuer: String = "vivarium", audience: String = "vivarium-api", accessLifetime: TimeInterval = 900,
            maxAccessLifetime: TimeInterval = 3600, refreshLifetime: TimeInterval = 30 * 86400,
            revocationStaleness: TimeInterval = 30
        ) {
            self.issuer = issuer
            self.audience = audience
            self.accessLifetime = accessLifetime
            self.maxAccessLifetime = maxAccessLifetime
            self.refreshLifetime = refreshLifetime
            self.revocationStaleness = revocationStaleness
        }
    }

    public let config: Configuration
    public let keys: SigningKeys
    let store: any IdentityStore
    let logger: Logger
    let revoked = LockedBox(RevocationSet())
    /// Verified tokens by SHA-256 of the token: skips the signature on repeat calls. Revocation and
    /// expiry are still checked on every request.
    let cache = LockedBox([String: (Principal, AccessClaims)]())

    struct RevocationSet: Sendable {
        var jtis: Set<String> = []
        var families: Set<String> = []
        var principals: [String: Date] = [:]
        var tenants: [String: Date] = [:]
        var loadedAt: Date?
    }

    public init(config: Configuration, keys: SigningKeys, store: any IdentityStore, logger: Logger) {
        self.config = config
        self.keys = keys
        self.store = store
        self.logger = logger
    }

    static func unauthorized() -> VivariumError { VivariumError(.unauthenticated, "invalid or expired credentials") }

    // MARK: Access tokens

    /// Signs an access token for a principal. `ttl` is capped at the configured maximum.
    public func issueAccess(
        _ p: PrincipalRecord, scopes: Set<Scope>, boundSandbox: SandboxID?, family: String?, ttl: TimeInterval? = nil,
        now: Date = Date()
    ) async throws -> (String, AccessClaims) {
        let life = min(ttl ?? config.accessLifetime, config.maxAccessLifetime)
        let claims = AccessClaims(
            iss: .init(value: config.issuer), aud: .init(value: [config.audience]), sub: .init(value: p.id),
            tenant: p.tenant, scopes: scopes.map(\.rawValue).sorted(), iat: .init(value: now), nbf: .init(value: now),
            exp: .init(value: now.addingTimeInterval(life)), jti: .init(value: randomHex(bytes: 16)), typ: "access",
            fam: family, sbx: boundSandbox?.rawValue)
        let key = keys.current
        let token = try await key.collection.sign(claims, kid: JWKIdentifier(string: key.kid))
        return (token, claims)
    }

    /// Verifies an access token and returns its principal. Every failure is the same generic 401.
    /// The header is checked before any key is touched: `alg` must be EdDSA and `kid` one of ours
    /// (jwt-kit would otherwise fall back to a default key and not tie `alg` to the key).
    public func verify(_ token: String, now: Date = Date()) async throws -> Principal {
        try checkRevocationFresh(now: now)
        let digest = Self.hash(token)
        if let (p, claims) = cache.get()[digest] {
            try checkTimes(claims, now: now)
            try checkNotRevoked(claims, tenant: p.tenant, now: now)
            return p
        }
        guard token.utf8.count <= 8192 else { throw Self.unauthorized() }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = base64urlDecode(parts[0]),
            let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
            header["alg"] as? String == "EdDSA", let kid = header["kid"] as? String, let key = keys.key(kid: kid),
            header["crit"] == nil
        else { throw Self.unauthorized() }
        let claims: AccessClaims
        do {
            claims = try await key.collection.verify(token, as: AccessClaims.self)
        } catch {
            throw Self.unauthorized()
        }
        guard claims.typ == "access", claims.iss.value == config.issuer, claims.aud.value.contains(config.audience)
        else { throw Self.unauthorized() }
        try checkTimes(claims, now: now)
        try checkNotRevoked(claims, tenant: claims.tenant, now: now)
        guard let rec = try? await store.principal(id: claims.sub.value), !rec.disabled, rec.tenant == claims.tenant
        else {
            throw Self.unauthorized()
        }
        var scopes: Set<Scope> = []
        for s in claims.scopes {
            guard let scope = Scope(rawValue: s) else { throw Self.unauthorized() }
            scopes.insert(scope)
        }
        let bound: SandboxID?
        if let s = claims.sbx {
            guard let id = SandboxID(rawValue: s) else { throw Self.unauthorized() }
            bound = id
        } else {
            bound = nil
        }
        let p = Principal(
            id: rec.id, name: rec.name.rawValue, tenant: rec.tenant, kind: rec.kind, role: rec.role,
            scopes: scopes.intersection(Self.allowedScopes(rec.role)), boundSandbox: bound, tokenID: claims.jti.value)
        cache.update { c in
            if c.count > 10_000 { c.removeAll() }
            c[digest] = (p, claims)
        }
        return p
    }

    func checkTimes(_ c: AccessClaims, now: Date) throws {
        guard c.exp.value > now, c.nbf.value <= now.addingTimeInterval(1),
            c.exp.value.timeIntervalSince(c.iat.value) <= config.maxAccessLifetime + 1
        else { throw Self.unauthorized() }
    }

    // MARK: Revocation

    /// Loads the revocation state from the store. Call at start and on an interval; while it is stale
    /// every request is refused (fail closed).
    public func refreshRevocations(now: Date = Date()) async {
        do {
            let rows = try await store.revocations(now: now)
            var set = RevocationSet()
            for r in rows { Self.apply(r, to: &set) }
            set.loadedAt = now
            revoked.set(set)
        } catch {
            logger.error("cannot load revocations: refusing tokens until it works", metadata: ["error": "\(error)"])
        }
    }

    static func apply(_ r: RevocationRecord, to set: inout RevocationSet) {
        switch r.kind {
        case .jti: set.jtis.insert(r.value)
        case .family: set.families.insert(r.value)
        case .principal: set.principals[r.value] = max(set.principals[r.value] ?? .distantPast, r.at)
        case .tenant: set.tenants[r.value] = max(set.tenants[r.value] ?? .distantPast, r.at)
        }
    }

    func checkRevocationFresh(now: Date) throws {
        guard let at = revoked.get().loadedAt, now.timeIntervalSince(at) <= config.revocationStaleness else {
            throw VivariumError(.unavailable, "revocation state unavailable")
        }
    }

    func checkNotRevoked(_ c: AccessClaims, tenant: String, now: Date) throws {
        let set = revoked.get()
        if set.jtis.contains(c.jti.value) { throw Self.unauthorized() }
        if let f = c.fam, set.families.contains(f) { throw Self.unauthorized() }
        if let at = set.principals[c.sub.value], c.iat.value <= at { throw Self.unauthorized() }
        if let at = set.tenants[tenant], c.iat.value <= at { throw Self.unauthorized() }
    }

    /// Records a revocation and applies it at once. `value` is a jti, family, principal id or tenant; a
    /// jti issued with a refresh token ends its family too.
    /// Principal- and tenant-wide revocations also end every refresh family in the store and are kept as
    /// long as the longest-lived API key, so that nothing issued before them comes back.
    public func revoke(_ kind: RevocationKind, _ value: String, tenant: String?, now: Date = Date()) async throws {
        try await revoke(
            kind, value, now: now,
            audit: AuditEvent(
                "token.revoke", target: "\(kind.rawValue):\(value)", tenant: tenant, global: tenant == nil))
    }

    func revoke(_ kind: RevocationKind, _ value: String, now: Date, audit: AuditEvent) async throws {
        let keep: TimeInterval
        switch kind {
        case .jti: keep = config.maxAccessLifetime
        case .family: keep = config.refreshLifetime
        case .principal, .tenant: keep = Self.maxAPIKeyLifetime
        }
        var records = [
            RevocationRecord(kind: kind, value: value, at: now, expiresAt: now.addingTimeInterval(keep + 60))
        ]
        // An access token issued with a refresh token takes its family with it: the refresh token, and
        // every access token rotated from it, end too.
        if kind == .jti, let family = try await store.refreshFamily(accessJTI: value) {
            records.append(
                RevocationRecord(
                    kind: .family, value: family, at: now,
                    expiresAt: now.addingTimeInterval(config.refreshLifetime + 60)))
        }
        // In force before it is stored: nothing (a stream woken by the revocation's own record included)
        // may still pass with the token once the store has it. A failed write errs on the side of refusing.
        revoked.update { set in for r in records { Self.apply(r, to: &set) } }
        try await store.revoke(records, audit: audit)
    }

    /// The longest lifetime an API key may have.
    public static let maxAPIKeyLifetime: TimeInterval = 366 * 86400

    /// Disables a principal and revokes every token it holds, effective on its next request.
    public func disable(_ p: PrincipalRecord, now: Date = Date()) async throws {
        try await store.setPrincipalDisabled(
            id: p.id, true, audit: AuditEvent("principal.disable", target: p.name.rawValue, tenant: p.tenant))
        try await revoke(.principal, p.id, tenant: p.tenant, now: now)
    }

    // MARK: Refresh tokens and API keys

    /// A new access + refresh pair; `family` continues a rotation, nil starts one.
    /// The family's refresh tokens expire at `sessionEnd` (default: the refresh lifetime from now), an
    /// absolute end that rotation never extends; no access token outlives it.
    /// The pair is recorded in the audit trail as `action` (token.issue, token.exchange, token.refresh).
    public func issuePair(
        _ p: PrincipalRecord, scopes: Set<Scope>, boundSandbox: SandboxID?, family: String?, ttl: TimeInterval? = nil,
        sessionEnd: Date? = nil, action: String, details: [String: String] = [:], now: Date = Date()
    ) async throws -> TokenPair {
        let fam = family ?? randomHex(bytes: 16)
        let end = sessionEnd ?? now.addingTimeInterval(config.refreshLifetime)
        let life = min(ttl ?? config.accessLifetime, end.timeIntervalSince(now))
        guard life > 0 else { throw Self.unauthorized() }
        let (access, claims) = try await issueAccess(
            p, scopes: scopes, boundSandbox: boundSandbox, family: fam, ttl: life, now: now)
        let refresh = "vivr_" + randomHex(bytes: 32)
        try await store.insertRefresh(
            RefreshRecord(
                hash: Self.hash(refresh), family: fam, principalID: p.id, scopes: scopes,
                boundSandbox: boundSandbox?.rawValue, expiresAt: end, usedAt: nil, accessJTI: claims.jti.value),
            audit: AuditEvent(
                action, target: p.name.rawValue, tenant: p.tenant,
                details: details.merging(
                    [
                        "jti": claims.jti.value, "family": fam, "scopes": scopes.commaSeparated,
                        "expires_in": String(Int(claims.exp.value.timeIntervalSince(now))),
                    ].merging(boundSandbox.map { ["sandbox": $0.rawValue] } ?? [:]) { a, _ in a }
                ) { a, _ in a }))
        return TokenPair(
            accessToken: access, refreshToken: refresh, expiresIn: Int(claims.exp.value.timeIntervalSince(now)))
    }

    /// Exchanges a refresh token (single use) for a new pair. A second use of the same token revokes
    /// its whole family, access tokens included, and is logged as an alert.
    public func refresh(_ token: String, now: Date = Date()) async throws -> TokenPair {
        try checkRevocationFresh(now: now)
        guard token.hasPrefix("vivr_"), token.utf8.count == 69 else { throw Self.unauthorized() }
        let outcome = try await store.useRefresh(hash: Self.hash(token), now: now) { outcome, p in
            switch outcome {
            case .invalid: nil
            case .reused(let family, let principalID):
                AuditEvent(
                    "token.refresh_reuse", target: p?.name.rawValue ?? principalID, tenant: p?.tenant,
                    outcome: .alert, details: ["family": family, "principal_id": principalID])
            case .rotated(let r):
                AuditEvent(
                    "token.refresh", target: p?.name.rawValue ?? r.principalID, tenant: p?.tenant, outcome: .started,
                    details: ["family": r.family])
            }
        }
        switch outcome {
        case .invalid:
            throw Self.unauthorized()
        case .reused(let family, let principalID):
            try await revoke(.family, family, tenant: try? store.principal(id: principalID)?.tenant, now: now)
            logger.critical(
                "refresh token reuse: family revoked", metadata: ["family": "\(family)", "principal": "\(principalID)"])
            throw Self.unauthorized()
        case .rotated(let r):
            // Principal- and tenant-wide revocations ended this family in the store already.
            guard let p = try await store.principal(id: r.principalID), !p.disabled else { throw Self.unauthorized() }
            let bound = r.boundSandbox.flatMap(SandboxID.init(rawValue:))
            return try await AuditContext.$current.withValue(AuditContext.current.acting(as: Self.actor(p))) {
                try await issuePair(
                    p, scopes: r.scopes.intersection(Self.allowedScopes(p.role)), boundSandbox: bound, family: r.family,
                    sessionEnd: r.expiresAt, action: "token.refresh", now: now)
            }
        }
    }

    /// Creates an API key: `viv_<id>_<secret>` with 256 random bits of secret, shown once; only the
    /// SHA-256 of the secret is stored.
    public func createAPIKey(
        for p: PrincipalRecord, scopes: Set<Scope>, ttl: TimeInterval, now: Date = Date()
    ) async throws -> String {
        let id = randomHex(bytes: 6)
        let secret = randomHex(bytes: 32)
        let granted = scopes.intersection(Self.allowedScopes(p.role))
        try await store.insertAPIKey(
            APIKeyRecord(
                id: id, principalID: p.id, secretHash: Self.hash(secret), scopes: granted,
                expiresAt: now.addingTimeInterval(ttl), createdAt: now),
            audit: AuditEvent(
                "apikey.create", target: p.name.rawValue, tenant: p.tenant,
                details: ["key_id": id, "scopes": granted.commaSeparated, "expires_in": String(Int(ttl))]))
        return "viv_\(id)_\(secret)"
    }

    /// Exchanges an API key for a token pair.
    public func exchange(apiKey: String, now: Date = Date()) async throws -> TokenPair {
        try checkRevocationFresh(now: now)
        let parts = apiKey.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "viv", parts[1].utf8.count == 12, parts[2].utf8.count == 64,
            let key = try await store.apiKey(id: String(parts[1])),
            Self.constantTimeEqual(key.secretHash, Self.hash(String(parts[2]))), key.expiresAt > now,
            let p = try await store.principal(id: key.principalID), !p.disabled
        else { throw Self.unauthorized() }
        let set = revoked.get()
        if let at = set.principals[p.id], key.createdAt <= at { throw Self.unauthorized() }
        if let at = set.tenants[p.tenant], key.createdAt <= at { throw Self.unauthorized() }
        return try await AuditContext.$current.withValue(AuditContext.current.acting(as: Self.actor(p))) {
            try await issuePair(
                p, scopes: key.scopes, boundSandbox: nil, family: nil, action: "token.exchange",
                details: ["key_id": key.id], now: now)
        }
    }

    /// A principal as the actor of audit records.
    public static func actor(_ p: PrincipalRecord) -> AuditActor {
        AuditActor(id: p.id, name: p.name.rawValue, tenant: p.tenant)
    }

    static func hash(_ s: String) -> String { Digest.of(Array(s.utf8)).hex }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var d: UInt8 = 0
        for i in 0..<x.count { d |= x[i] ^ y[i] }
        return d == 0
    }

    /// The scopes a role may hold at most.
    public static func allowedScopes(_ role: Role) -> Set<Scope> {
        switch role {
        case .admin: Set(Scope.all)
        case .tenantAdmin: Set(Scope.all).subtracting([.tenantsAdmin, .kmsAdmin])
        case .member:
            [
                .sandboxesRead, .sandboxesWrite, .exec, .imagesRead, .imagesWrite, .secretsRead, .secretsWrite,
                .filesRead, .filesWrite,
            ]
        case .auditor: [.sandboxesRead, .imagesRead, .auditRead, .secretsRead]
        }
    }
}
