import Foundation

/// Who a principal is in its tenant. `admin` reaches every tenant; the others stay in their own.
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    case auditor
    case member
    case tenantAdmin = "tenant-admin"
    case admin

    var rank: Int {
        switch self {
        case .auditor: 0
        case .member: 1
        case .tenantAdmin: 2
        case .admin: 3
        }
    }
    public static func < (a: Role, b: Role) -> Bool { a.rank < b.rank }
}

public enum PrincipalKind: String, Codable, Sendable, CaseIterable {
    case user
    case agent
    case service
}

/// A permission a token carries. Routes require scopes; roles bound what a principal may hold.
public struct Scope: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: String
    public init?(rawValue: String) {
        guard Self.all.contains(where: { $0.rawValue == rawValue }) || rawValue == "*" else { return nil }
        self.rawValue = rawValue
    }
    init(_ raw: String) { rawValue = raw }

    public static let sandboxesRead = Scope("sandboxes:read")
    public static let sandboxesWrite = Scope("sandboxes:write")
    public static let exec = Scope("exec")
    public static let imagesRead = Scope("images:read")
    public static let imagesWrite = Scope("images:write")
    public static let tenantsAdmin = Scope("tenants:admin")
    public static let principalsAdmin = Scope("principals:admin")
    public static let tokensAdmin = Scope("tokens:admin")
    public static let auditRead = Scope("audit:read")
    public static let secretsRead = Scope("secrets:read")
    public static let secretsWrite = Scope("secrets:write")
    public static let kmsAdmin = Scope("kms:admin")
    /// Reading and changing the files inside a sandbox (the file API, `vivarium cp`).
    public static let filesRead = Scope("files:read")
    public static let filesWrite = Scope("files:write")
    public static let all: [Scope] = [
        .sandboxesRead, .sandboxesWrite, .exec, .imagesRead, .imagesWrite, .tenantsAdmin, .principalsAdmin,
        .tokensAdmin, .auditRead, .secretsRead, .secretsWrite, .kmsAdmin, .filesRead, .filesWrite,
    ]

    /// Parses a comma-separated list ("exec,sandboxes:read"); throws on an unknown scope.
    public static func parseList(_ s: String) throws -> Set<Scope> {
        var out: Set<Scope> = []
        for part in s.split(separator: ",") {
            let p = part.trimmingCharacters(in: .whitespaces)
            guard let scope = Scope(rawValue: p) else {
                throw VivariumError(
                    .invalidArgument,
                    "unknown scope '\(p.prefix(64))'; known: \(all.map(\.rawValue).joined(separator: ", "))")
            }
            out.insert(scope)
        }
        return out
    }

    public var description: String { rawValue }
    public static func < (a: Scope, b: Scope) -> Bool { a.rawValue < b.rawValue }
}

/// An authenticated identity: who a token (or the unix socket) speaks for, and what it may do.
public struct Principal: Sendable, Equatable {
    public var id: String
    public var name: String
    public var tenant: String
    public var kind: PrincipalKind
    public var role: Role
    public var scopes: Set<Scope>
    /// An agent token bound to one sandbox id may act on that sandbox only.
    public var boundSandbox: SandboxID?
    /// The access token's id, for revocation and the audit trail; nil for local root.
    public var tokenID: String?

    public init(
        id: String, name: String, tenant: String, kind: PrincipalKind, role: Role, scopes: Set<Scope>,
        boundSandbox: SandboxID? = nil, tokenID: String? = nil
    ) {
        self.id = id
        self.name = name
        self.tenant = tenant
        self.kind = kind
        self.role = role
        self.scopes = scopes
        self.boundSandbox = boundSandbox
        self.tokenID = tokenID
    }

    /// Root on the host, over the unix socket: the bootstrap administrator.
    public static let localRoot = Principal(
        id: "local-root", name: "local-root", tenant: "default", kind: .user, role: .admin, scopes: Set(Scope.all))
}

extension Set where Element == Scope {
    /// "exec,sandboxes:read": sorted and comma-separated, as stored and recorded.
    public var commaSeparated: String { map(\.rawValue).sorted().joined(separator: ",") }
}

/// The caller of one request or session, established once by the door it came through (the REST and
/// WebSocket API today; SSH, MCP and the e2b API later) and handed to every Engine entry point, which
/// decides through the one policy table and records under it.
public struct Caller: Sendable, Equatable {
    /// The front door a request came through (recorded with denials).
    public enum Door: String, Sendable, Equatable {
        case rest, websocket
        /// The ingress: a request to a sandbox port.
        case ingress
    }

    /// Who is calling; nil for an unauthenticated caller (public actions only).
    public var principal: Principal?
    /// A tenant named explicitly (an admin's `?tenant=`); otherwise the principal's own.
    public var requestedTenant: ResourceName?
    /// The client address as the trusted-source rules determined it, or "local" for the unix socket.
    public var source: String
    public var requestID: String
    public var door: Door
    /// Root on the host through the unix socket: never rate-limited, never source-restricted.
    public var isLocal: Bool

    public init(
        principal: Principal?, requestedTenant: ResourceName? = nil, source: String, requestID: String,
        door: Door = .rest, isLocal: Bool = false
    ) {
        self.principal = principal
        self.requestedTenant = requestedTenant
        self.source = source
        self.requestID = requestID
        self.door = door
        self.isLocal = isLocal
    }

    /// Local root over the unix socket.
    public static func localRoot(requestID: String, requestedTenant: ResourceName? = nil) -> Caller {
        Caller(
            principal: .localRoot, requestedTenant: requestedTenant, source: "local", requestID: requestID,
            isLocal: true)
    }

    public static func anonymous(source: String, requestID: String, door: Door = .rest) -> Caller {
        Caller(principal: nil, source: source, requestID: requestID, door: door)
    }

    /// The tenant the call acts in: the one named explicitly, else the principal's own.
    public var tenant: String? { requestedTenant?.rawValue ?? principal?.tenant }
    public var role: Role? { principal?.role }
    public var scopes: Set<Scope> { principal?.scopes ?? [] }
    public var boundSandbox: SandboxID? { principal?.boundSandbox }
    public var tokenID: String? { principal?.tokenID }
}

extension Role {
    /// Parses a role name at the boundary.
    public static func parse(_ s: String) throws -> Role {
        guard let r = Role(rawValue: s) else {
            throw VivariumError(.invalidArgument, "role must be admin, tenant-admin, member or auditor")
        }
        return r
    }
}

extension PrincipalKind {
    public static func parse(_ s: String) throws -> PrincipalKind {
        guard let k = PrincipalKind(rawValue: s) else {
            throw VivariumError(.invalidArgument, "kind must be user, agent or service")
        }
        return k
    }
}

/// How a caller proves who it is when it asks for a token pair.
public enum TokenGrant: Sendable, Equatable {
    case apiKey(String)
    case refreshToken(String)
}

/// What a revocation covers: one token, every token of a principal, or of a whole tenant.
public enum RevocationTarget: Sendable, Equatable {
    case jti(String)
    case principal(ResourceName)
    case tenant(ResourceName)
}

/// A new API key: the secret is shown once, only its hash is kept.
public struct NewAPIKey: Sendable, Equatable {
    public var key: String
    public var principal: ResourceName
    public var scopes: Set<Scope>
    public var expiresAt: Date
    public init(key: String, principal: ResourceName, scopes: Set<Scope>, expiresAt: Date) {
        self.key = key
        self.principal = principal
        self.scopes = scopes
        self.expiresAt = expiresAt
    }
}
