import Foundation
import VivariumAudit
import VivariumCore

/// A sandbox and the host resources it holds: its user-id slot, bundle directory (with the lower and
/// rootfs mount points, upper and work dirs inside) and cgroup path.
public struct SandboxRecord: Sendable, Equatable {
    public var id: SandboxID
    public var tenant: String
    public var name: ResourceName
    public var imageID: Int64
    public var imageName: ResourceName
    public var imageDigest: Digest
    public var imageRootfs: String
    public var spec: SandboxSpec
    public var state: SandboxState
    public var uidSlot: Int
    public var bundle: String
    public var cgroupPath: String
    public var createdAt: Date
    public var expiresAt: Date?
    /// The values of `spec.env`, sealed: the stored spec keeps only the names (with empty values).
    public var sealedEnv: SealedValue?

    public init(
        id: SandboxID, tenant: String, name: ResourceName, imageID: Int64, imageName: ResourceName,
        imageDigest: Digest, imageRootfs: String, spec: SandboxSpec, state: SandboxState, uidSlot: Int,
        bundle: String, cgroupPath: String, createdAt: Date, expiresAt: Date?, sealedEnv: SealedValue? = nil
    ) {
        self.sealedEnv = sealedEnv
        self.id = id
        self.tenant = tenant
        self.name = name
        self.imageID = imageID
        self.imageName = imageName
        self.imageDigest = imageDigest
        self.imageRootfs = imageRootfs
        self.spec = spec
        self.state = state
        self.uidSlot = uidSlot
        self.bundle = bundle
        self.cgroupPath = cgroupPath
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    public var lowerMount: String { bundle + "/lower" }
    public var rootfsMount: String { bundle + "/rootfs" }
    public var upperDir: String { bundle + "/upper" }
    public var workDir: String { bundle + "/work" }
}

/// Repository of sandboxes and images. Every change is one transaction (`Transactional`) with the audit
/// records that describe it. Sandbox changes are written once for every store, on top of the transaction
/// primitives (`insertSandbox`, `updateState`, `deleteSandbox` in Transaction.swift).
public protocol Store: Transactional {
    func sandbox(tenant: String, name: ResourceName) async throws -> SandboxRecord?
    func sandbox(id: SandboxID) async throws -> SandboxRecord?
    /// Sandboxes ordered by name after `after`, at most `limit`.
    func sandboxes(tenant: String?, after: String?, limit: Int) async throws -> [SandboxRecord]
    func allSandboxes() async throws -> [SandboxRecord]
    func expiredSandboxes(now: Date) async throws -> [SandboxRecord]
    func sandboxCount() async throws -> Int

    func insertImage(_ image: ImageRecord, audit: AuditEvent) async throws -> ImageRecord
    func image(tenant: String, name: ResourceName) async throws -> ImageRecord?
    func images(tenant: String?) async throws -> [ImageRecord]
    /// Deletes an image; `image_in_use` while a sandbox uses it.
    func deleteImage(tenant: String, name: ResourceName, audit: AuditEvent) async throws -> ImageRecord
    /// The manifests that image records and sandboxes name: what the image store keeps.
    func imageDigestsInUse() async throws -> Set<Digest>
    /// The image pulled by a reference (in full) in a tenant.
    func image(tenant: String, reference: String) async throws -> ImageRecord?
    /// Records a pull: inserts the image, or moves its reference to the new digest.
    func pinImage(_ image: ImageRecord, audit: AuditEvent) async throws -> ImageRecord

    /// Adds a route; `already_exists` when its key or host port is taken, `quota_exceeded` past
    /// `maxPerTenant` routes of its tenant.
    func insertRoute(_ route: PortRoute, maxPerTenant: Int, audit: AuditEvent) async throws
    func deleteRoute(key: String, tenant: String?, audit: AuditEvent) async throws -> PortRoute
    func route(key: String) async throws -> PortRoute?
    /// Every route (of `tenant`, when given), by key.
    func routes(tenant: String?) async throws -> [PortRoute]

    /// Adds a version; `already_exists` when that version exists.
    func insertSecret(_ s: Secret, sealed: SealedValue, audit: AuditEvent) async throws
    func secrets(tenant: String?) async throws -> [(Secret, versions: Int64)]
    func secret(tenant: String, name: SecretName) async throws -> (Secret, SealedValue)?
    func deleteSecret(tenant: String, name: SecretName, keepLatest: Bool, audit: AuditEvent) async throws -> Int
    /// Data keys per key-encryption key id, secrets and sandbox environments together.
    func wrappedKeyCounts() async throws -> [String: Int64]
    func wrappedKeys(notBy current: String, limit: Int) async throws -> [(SealedRow, WrappedKey)]
    func replaceWrappedKey(_ row: SealedRow, old: WrappedKey, new: WrappedKey) async throws
    func sealEnv(_ id: SandboxID, spec: SandboxSpec, sealed: SealedValue) async throws
    /// Rewrites the database's log, so that no page image of an older row version stays on disk.
    func scrubLog() async throws
}
