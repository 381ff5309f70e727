import Foundation
import Logging
import VivariumAudit
import VivariumCore
import VivariumImages
import VivariumOS
import VivariumStore

/// The image use cases: list, import from a host path, remove, and the `base` image made at first start.
public final class Images: Sendable {
    let config: EngineConfiguration
    let store: any Store
    let content: ImageStore
    let gate: Gate
    let logger: Logger
    let locks = KeyedLock()

    init(config: EngineConfiguration, store: any Store, content: ImageStore, gate: Gate, logger: Logger) {
        self.config = config
        self.store = store
        self.content = content
        self.gate = gate
        self.logger = logger
    }

    /// The caller's tenant's images and the shared ones of the default tenant (which every tenant may use).
    public func list(_ caller: Caller) async throws -> [ImageRecord] {
        try await gate.perform(caller, .imageList, target: nil) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let shared = await tenant == Identity.defaultTenant ? [] : try store.images(tenant: Identity.defaultTenant)
            return try await store.images(tenant: tenant) + shared
        }
    }

    /// Imports a root file system from a directory or tar archive on the daemon's host.
    public func importRootfs(_ caller: Caller, path: String, name: ResourceName) async throws -> ImageRecord {
        try await gate.perform(caller, .imageImport, target: name.rawValue) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            return try await importRootfs(tenant: tenant, path: path, name: name)
        }
    }

    public func remove(_ caller: Caller, name: ResourceName) async throws {
        try await gate.perform(caller, .imageDelete, target: name.rawValue) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            try await remove(tenant: tenant, name: name)
        }
    }

    func importRootfs(tenant: String, path: String, name: ResourceName) async throws -> ImageRecord {
        guard path.hasPrefix("/"), path.utf8.count <= 4096 else {
            throw VivariumError(.invalidArgument, "path must be an absolute path on the daemon's host")
        }
        return try await locks.withLock("image:\(tenant)/\(name)") { [self] in
            if try await store.image(tenant: tenant, name: name) != nil {
                throw VivariumError(.alreadyExists, "an image named \(name) already exists")
            }
            let imported = try await content.importRootfs(from: path)
            let rec = try await store.insertImage(
                ImageRecord(
                    tenant: tenant, name: name, digest: imported.digest, rootfs: imported.rootfs,
                    sizeBytes: imported.sizeBytes, createdAt: Date()),
                audit: AuditEvent(
                    "image.import", target: name.rawValue, tenant: tenant,
                    details: [
                        "digest": imported.digest.rawValue, "size_bytes": String(imported.sizeBytes), "path": path,
                    ]))
            logger.info("image imported", metadata: ["image": "\(name)", "digest": "\(imported.digest)"])
            return rec
        }
    }

    func remove(tenant: String, name: ResourceName) async throws {
        try await locks.withLock("image:\(tenant)/\(name)") { [self] in
            let rec = try await store.deleteImage(
                tenant: tenant, name: name, audit: AuditEvent("image.delete", target: name.rawValue, tenant: tenant))
            if try await !store.imageRootfsInUse(rec.rootfs) {
                try await content.remove(manifest: rec.digest)
            }
            logger.info("image removed", metadata: ["image": "\(name)"])
        }
    }

    /// Creates the default `base` image (static busybox) on first start.
    public func ensureBase() async throws {
        let base = Sandboxes.defaultImage
        guard try await store.image(tenant: Identity.defaultTenant, name: base) == nil else { return }
        let dir = config.imagesDir + "/tmp/base-" + randomHex(bytes: 6)
        try FileSystem.makeDirectory(dir, mode: 0o755)
        do {
            try await ImageStore.buildBusyboxRootfs(at: dir, busybox: config.busybox)
            _ = try await importRootfs(tenant: Identity.defaultTenant, path: dir, name: base)
        } catch {
            try? await FileSystem.removeTree(dir)
            throw error
        }
        try await FileSystem.removeTree(dir)
    }
}
