import Foundation
import Glibc
import VivariumCore
import VivariumOS

import struct Crypto.SHA256

/// One archive on its way into the store: each chunk is written to the layer blob as received (the
/// copy kept for `image push`), hashed, and unpacked under `UnpackRules` at the same time. There is no
/// uncompressed staging copy.
public final class LayerIngest {
    let store: ImageStore
    let work: String
    let blob: String
    let blobFD: Int32
    let unpacker: Unpacker
    let rules: UnpackRules
    private var hash = SHA256()
    private var size: Int64 = 0

    public init(into store: ImageStore, rules: UnpackRules) throws {
        self.store = store
        self.rules = rules
        work = "\(store.root)/tmp/import-\(randomHex(bytes: 8))"
        try FileSystem.makeDirectory(work, mode: 0o700)
        try FileSystem.makeDirectory(work + "/rootfs", mode: 0o755)
        blob = work + "/layer"
        blobFD = open(blob, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard blobFD >= 0 else { throw VivariumError(.internalError, "cannot create \(blob): errno \(errno)") }
        unpacker = try Unpacker(root: work + "/rootfs", rules: rules)
    }

    deinit { close(blobFD) }

    /// The next bytes of the archive.
    public func feed(_ chunk: UnsafeRawBufferPointer) throws {
        size += Int64(chunk.count)
        guard size <= rules.maxBytes else {
            throw Unpacker.refuse("is larger than \(Quantity.formatBytes(rules.maxBytes)) (the unpack limit)")
        }
        hash.update(bufferPointer: chunk)
        try Unpacker.writeAll(blobFD, chunk, "the layer blob")
        try unpacker.feed(chunk)
    }

    /// Ends the archive and places the image in the store; on any failure call `abort()`.
    public func commit() async throws -> ImageStore.Imported {
        let summary = try unpacker.finish()
        guard fsync(blobFD) == 0 else {
            throw VivariumError(.unavailable, "cannot sync the layer blob: errno \(errno)")
        }
        let layer = Digest(sha256: hash.finalize())
        let imported = try await store.place(
            rootfs: work + "/rootfs", layerBlob: blob, layer: layer, layerSize: size, diffID: summary.diffID,
            mediaType: summary.mediaType)
        try await FileSystem.removeTree(work)
        return imported
    }

    public func abort() async { try? await FileSystem.removeTree(work) }

    /// Ingests `body`'s chunks, removing everything on failure.
    public static func run(
        into store: ImageStore, rules: UnpackRules,
        _ body: (_ feed: (UnsafeRawBufferPointer) throws -> Void) async throws -> Void
    ) async throws -> ImageStore.Imported {
        let ingest = try LayerIngest(into: store, rules: rules)
        do {
            try await body(ingest.feed)
            return try await ingest.commit()
        } catch {
            await ingest.abort()
            throw error
        }
    }
}
