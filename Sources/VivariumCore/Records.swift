import Foundation

/// A tenant: the unit of isolation and quota.
public struct TenantRecord: Sendable, Equatable {
    public var name: ResourceName
    public var createdAt: Date
    /// Whether the tenant's sandboxes reach each other (never another tenant's); denied by default.
    public var intraTenant: Bool
    public init(name: ResourceName, createdAt: Date, intraTenant: Bool = false) {
        self.name = name
        self.createdAt = createdAt
        self.intraTenant = intraTenant
    }
}

/// A user, agent or service of a tenant.
public struct PrincipalRecord: Sendable, Equatable {
    public var id: String
    public var tenant: String
    public var name: ResourceName
    public var kind: PrincipalKind
    public var role: Role
    public var disabled: Bool
    public var createdAt: Date
    public init(
        id: String, tenant: String, name: ResourceName, kind: PrincipalKind, role: Role, disabled: Bool,
        createdAt: Date
    ) {
        self.id = id
        self.tenant = tenant
        self.name = name
        self.kind = kind
        self.role = role
        self.disabled = disabled
        self.createdAt = createdAt
    }
}

/// An image: a read-only root file system on the host, content-addressed by its digest.
public struct ImageRecord: Sendable, Equatable {
    public var id: Int64
    public var tenant: String
    public var name: ResourceName
    public var digest: Digest
    /// The unpacked, read-only root file system on the host.
    public var rootfs: String
    public var sizeBytes: Int64
    public var createdAt: Date
    /// A pulled image: the registry reference it was pulled by, in full (`registry/repository:tag` or
    /// `@digest`), pinned to `digest` until the next pull.
    public var reference: String?

    public init(
        id: Int64 = 0, tenant: String, name: ResourceName, digest: Digest, rootfs: String, sizeBytes: Int64,
        createdAt: Date, reference: String? = nil
    ) {
        self.reference = reference
        self.id = id
        self.tenant = tenant
        self.name = name
        self.digest = digest
        self.rootfs = rootfs
        self.sizeBytes = sizeBytes
        self.createdAt = createdAt
    }
}
