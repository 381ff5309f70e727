import Foundation
import VivariumAudit
import VivariumCore
import VivariumImages
import VivariumOS
import VivariumStore

extension Engine {
    public func importImage(tenant: String, _ req: ImportImageRequest) async throws -> ImageInfo {
        let name = try ResourceName.parse(req.name, what: "image name")
        guard req.path.hasPrefix("/"), req.path.utf8.count <= 4096 else {
            throw VivariumError(.invalidArgument, "path must be an absolute path on the daemon's host")
        }
        return try await locks.withLock("image:\(tenant)/\(name)") { [self] in
            if try store.image(tenant: tenant, name: name) != nil {
                throw VivariumError(.alreadyExists, "an image named \(name) already exists")
            }
            let imported = try await images.importRootfs(from: req.path)
            let rec = try store.insertImage(
                ImageRecord(
                    tenant: tenant, name: name, digest: imported.digest, rootfs: imported.rootfs,
                    sizeBytes: imported.sizeBytes, createdAt: Date()),
                audit: AuditEvent(
                    "image.import", target: name.rawValue, tenant: tenant,
                    details: [
                        "digest": imported.digest.rawValue, "size_bytes": String(imported.sizeBytes), "path": req.path,
                    ]))
            logger.info("image imported", metadata: ["image": "\(name)", "digest": "\(imported.digest)"])
            return Self.imageInfo(rec)
        }
    }

    /// The tenant's own images and the shared ones of the default tenant (which every tenant may use).
    public func listImages(tenant: String) throws -> [ImageInfo] {
        let shared = tenant == Self.defaultTenant ? [] : try store.images(tenant: Self.defaultTenant)
        return try (store.images(tenant: tenant) + shared).map(Self.imageInfo)
    }

    public func removeImage(tenant: String, name: String) async throws {
        let n = try ResourceName.parse(name, what: "image name")
        try await locks.withLock("image:\(tenant)/\(n)") { [self] in
            let rec = try store.deleteImage(
                tenant: tenant, name: n, audit: AuditEvent("image.delete", target: n.rawValue, tenant: tenant))
            if try !store.imageRootfsInUse(rec.rootfs) {
                try await images.remove(manifest: rec.digest)
            }
            logger.info("image removed", metadata: ["image": "\(n)"])
        }
    }

    /// Creates the default `base` image (static busybox) on first start.
    public func ensureBaseImage() async throws {
        guard try store.image(tenant: Self.defaultTenant, name: Self.defaultImage) == nil else { return }
        let dir = config.imagesDir + "/tmp/base-" + randomHex(bytes: 6)
        try FileSystem.makeDirectory(dir, mode: 0o755)
        do {
            try await ImageStore.buildBusyboxRootfs(at: dir, busybox: config.busybox)
            _ = try await importImage(
                tenant: Self.defaultTenant, ImportImageRequest(path: dir, name: Self.defaultImage.rawValue))
        } catch {
            try? await FileSystem.removeTree(dir)
            throw error
        }
        try await FileSystem.removeTree(dir)
    }

    static func imageInfo(_ r: ImageRecord) -> ImageInfo {
        ImageInfo(
            name: r.name.rawValue, tenant: r.tenant, digest: r.digest.rawValue, sizeBytes: r.sizeBytes,
            createdAt: r.createdAt)
    }
}
