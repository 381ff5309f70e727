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
    public static let all: [Scope] = [
        .sandboxesRead, .sandboxesWrite, .exec, .imagesRead, .imagesWrite, .tenantsAdmin, .principalsAdmin,
        .tokensAdmin, .auditRead,
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

/// The authenticated caller of one request.
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

    public func has(_ scope: Scope) -> Bool { scopes.contains(scope) }
}

extension Set where Element == Scope {
    /// "exec,sandboxes:read": sorted and comma-separated, as stored and recorded.
    public var commaSeparated: String { map(\.rawValue).sorted().joined(separator: ",") }
}
