import Foundation
import VivariumAudit
import VivariumCore
import VivariumImages
import VivariumOCI

/// `image inspect` and `image push`: what the content store holds of an image, and publishing it.
extension Images {
    public func inspect(_ caller: Caller, reference: ImageReference) async throws -> ImageDetails {
        try await gate.perform(caller, .imageInspect, target: reference.description) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let rec = try await find(tenant: tenant, reference)
            let (manifest, _) = try stored(rec)
            return try details(rec, manifest)
        }
    }

    /// Publishes a local image under a tag of a registry: its blobs (those the repository lacks), then
    /// its manifest, byte for byte, so the registry's digest is the local one.
    public func push(_ caller: Caller, image: ImageReference, to destination: ImageReference) async throws
        -> ImageDetails
    {
        try await gate.perform(caller, .imagePush, target: destination.description) {
            let tenant = try writableTenant(caller, shared: false)
            let (puller, _) = try registry()
            let (full, registry) = try allowed(destination)
            guard full.digest == nil else {
                throw VivariumError(.invalidArgument, "push to a tag (\(full.repository):TAG), not a digest")
            }
            let tag = full.tag ?? "latest"
            let rec = try await find(tenant: tenant, image)
            let login = try await secrets.registryLogin(tenant: tenant, registry: registry)
            // Held as an ingest is: no garbage collection removes a blob on its way out.
            let manifest = try await ingesting.shared { [self] in
                let (manifest, data) = try stored(rec)
                for d in [manifest.config] + manifest.layers {
                    try await puller.client.pushBlob(full, file: content.blobPath(d.digest), d, login: login)
                }
                try await puller.client.pushManifest(
                    full, reference: tag, data, mediaType: manifest.mediaType ?? MediaType.ociManifest, login: login)
                return manifest
            }
            let destination = "\(registry)/\(full.repository):\(tag)"
            try await gate.audit.append([
                AuditEvent(
                    "image.push", target: destination, tenant: tenant,
                    details: ["digest": rec.digest.rawValue, "image": rec.reference ?? rec.name.rawValue])
            ])
            logger.info("image pushed", metadata: ["destination": "\(destination)", "digest": "\(rec.digest)"])
            var out = try details(rec, manifest)
            out.pushedTo = destination
            return out
        }
    }

    /// An image's manifest and its bytes, from the content store.
    func stored(_ rec: ImageRecord) throws -> (Manifest, Data) {
        guard let data = FileManager.default.contents(atPath: content.blobPath(rec.digest)),
            let manifest = try? JSONDecoder().decode(Manifest.self, from: data)
        else {
            throw VivariumError(.internalError, "the manifest \(rec.digest) of \(rec.name) is not in the store")
        }
        return (manifest, data)
    }

    func details(_ rec: ImageRecord, _ manifest: Manifest) throws -> ImageDetails {
        let config = try content.config(manifest.config.digest)
        return ImageDetails(
            image: rec.info, mediaType: manifest.mediaType ?? MediaType.ociManifest,
            configDigest: manifest.config.digest, architecture: config.architecture, os: config.os,
            env: config.config?.env ?? [], entrypoint: config.config?.entrypoint, cmd: config.config?.cmd,
            workingDir: config.config?.workingDir, user: config.config?.user,
            layers: manifest.layers.map { .init(digest: $0.digest, mediaType: $0.mediaType, sizeBytes: $0.size) })
    }
}
