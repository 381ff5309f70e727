import Foundation

/// Wire types of the identity routes.
public struct TenantInfo: Codable, Sendable {
    public var name: String
    public var createdAt: Date
    /// `allow` or `deny`: whether the tenant's sandboxes reach each other.
    public var intraTenant: String
    public init(name: String, createdAt: Date, intraTenant: String = "deny") {
        self.name = name
        self.createdAt = createdAt
        self.intraTenant = intraTenant
    }
}

/// A tenant's settings.
public struct UpdateTenantRequest: Codable, Sendable {
    /// `allow` or `deny`.
    public var intraTenant: String
    public init(intraTenant: String) { self.intraTenant = intraTenant }
}

public struct CreateTenantRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

public struct PrincipalInfo: Codable, Sendable {
    public var id: String
    public var name: String
    public var tenant: String
    public var kind: String
    public var role: String
    public var disabled: Bool
    public var createdAt: Date
    public init(id: String, name: String, tenant: String, kind: String, role: String, disabled: Bool, createdAt: Date) {
        self.id = id
        self.name = name
        self.tenant = tenant
        self.kind = kind
        self.role = role
        self.disabled = disabled
        self.createdAt = createdAt
    }
}

public struct CreatePrincipalRequest: Codable, Sendable {
    public var name: String
    public var kind: String?
    public var role: String?
    public init(name: String, kind: String? = nil, role: String? = nil) {
        self.name = name
        self.kind = kind
        self.role = role
    }
}

public struct CreateAPIKeyRequest: Codable, Sendable {
    public var scopes: [String]?
    public var ttlSeconds: Int64?
    public init(scopes: [String]? = nil, ttlSeconds: Int64? = nil) {
        self.scopes = scopes
        self.ttlSeconds = ttlSeconds
    }
}

/// An API key, shown once.
public struct APIKeyInfo: Codable, Sendable {
    public var apiKey: String
    public var principal: String
    public var scopes: [String]
    public var expiresAt: Date
    public init(apiKey: String, principal: String, scopes: [String], expiresAt: Date) {
        self.apiKey = apiKey
        self.principal = principal
        self.scopes = scopes
        self.expiresAt = expiresAt
    }
}

/// `POST /v1/tokens`: `grant_type` is `api_key` (with `api_key`) or `refresh_token` (with `refresh_token`).
public struct TokenRequest: Codable, Sendable {
    public var grantType: String
    public var apiKey: String?
    public var refreshToken: String?
    public init(grantType: String, apiKey: String? = nil, refreshToken: String? = nil) {
        self.grantType = grantType
        self.apiKey = apiKey
        self.refreshToken = refreshToken
    }
}

public struct TokenPair: Codable, Sendable {
    public var accessToken: String
    public var refreshToken: String
    public var tokenType: String
    public var expiresIn: Int
    public init(accessToken: String, refreshToken: String, expiresIn: Int) {
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.tokenType = "Bearer"
        self.expiresIn = expiresIn
    }
}

/// `POST /v1/tokens/issue`: a least-privilege token for a principal, optionally bound to one sandbox.
public struct IssueTokenRequest: Codable, Sendable {
    public var principal: String
    public var sandbox: String?
    public var scopes: [String]
    public var ttlSeconds: Int64?
    public init(principal: String, sandbox: String? = nil, scopes: [String], ttlSeconds: Int64? = nil) {
        self.principal = principal
        self.sandbox = sandbox
        self.scopes = scopes
        self.ttlSeconds = ttlSeconds
    }
}

/// `POST /v1/tokens/revoke`: exactly one of the fields.
public struct RevokeRequest: Codable, Sendable {
    public var jti: String?
    public var principal: String?
    public var tenant: String?
    public init(jti: String? = nil, principal: String? = nil, tenant: String? = nil) {
        self.jti = jti
        self.principal = principal
        self.tenant = tenant
    }
}

/// The public token-signing keys (RFC 7517 set of RFC 8037 OKP keys).
public struct JWKSet: Codable, Sendable, Equatable {
    public struct Key: Codable, Sendable, Equatable {
        public var kty: String
        public var crv: String
        public var alg: String
        public var use: String
        public var kid: String
        public var x: String
        public init(kid: String, x: String) {
            self.kty = "OKP"
            self.crv = "Ed25519"
            self.alg = "EdDSA"
            self.use = "sig"
            self.kid = kid
            self.x = x
        }
    }
    public var keys: [Key]
    public init(keys: [Key]) { self.keys = keys }
}
