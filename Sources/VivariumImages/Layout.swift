import Foundation
import Glibc
import VivariumCore
import VivariumOCI
import VivariumOS

import struct Crypto.SHA256

extension ImportFormat {
    /// The format of a directory: an image layout when its marker file is there, else a root.
    static func of(directory dir: String) -> ImportFormat {
        if FileSystem.exists(dir + "/oci-layout") && FileSystem.exists(dir + "/index.json") { return .oci }
        if FileSystem.exists(dir + "/manifest.json") && !FileSystem.exists(dir + "/bin")
            && !FileSystem.exists(dir + "/etc")
        {
            return .dockerArchive
        }
        return .rootfs
    }

    /// The format of an archive: reads its headers only (skipping the members' bytes) for an image's
    /// marker file at its top; a compressed archive is a root.
    static func of(archive path: String) throws -> ImportFormat {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VivariumError(.invalidArgument, "cannot read \(path): errno \(errno)") }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 512)
        var names: Set<String> = []
        var offset: off_t = 0
        for _ in 0..<100_000 {
            guard pread(fd, &header, 512, offset) == 512 else { break }
            if header[0] == 0x1f && header[1] == 0x8b { return .rootfs }
            if header.allSatisfy({ $0 == 0 }) { break }
            let name = String(decoding: header[0..<100].prefix { $0 != 0 }, as: UTF8.self)
            let sizeField = String(decoding: header[124..<136].prefix { $0 != 0 && $0 != 0x20 }, as: UTF8.self)
            guard let size = off_t(sizeField, radix: 8) else { break }
            var clean = Substring(name)
            while clean.hasPrefix("./") { clean = clean.dropFirst(2) }
            names.insert(String(clean))
            if names.contains("oci-layout") { return .oci }
            offset += 512 + (size + 511) / 512 * 512
        }
        if names.contains("manifest.json") && !names.contains(where: { $0 == "bin" || $0.hasPrefix("bin/") }) {
            return .dockerArchive
        }
        return .rootfs
    }
}

extension ImageStore {
    /// Imports an OCI image layout or a docker-archive, a directory or a tar of one (`format` says
    /// which; `auto` looks). Blobs enter the store only after their digests matched; the layers are then
    /// applied as a pulled image's are. Returns nil for `auto` on a root file system.
    public func importImage(
        _ path: String, format: ImportFormat, rules: UnpackRules
    ) async throws -> Imported? {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw VivariumError(.invalidArgument, "no such file or directory: \(path)") }
        let isDirectory = st.st_mode & S_IFMT == S_IFDIR
        let found =
            format != .auto
            ? format : isDirectory ? ImportFormat.of(directory: path) : try ImportFormat.of(archive: path)
        guard found == .oci || found == .dockerArchive else { return nil }
        if isDirectory { return try await importImage(directory: path, found, rules: rules) }
        // An archive is unpacked (blobs, not layers: the layers stay compressed) into the store's tmp.
        let work = "\(root)/tmp/archive-\(randomHex(bytes: 8))"
        try FileSystem.makeDirectory(work, mode: 0o700)
        do {
            _ = try Self.unpack(file: path, into: work, rules: rules, whiteouts: false)
            let imported = try await importImage(directory: work, found, rules: rules)
            try await FileSystem.removeTree(work)
            return imported
        } catch {
            try? await FileSystem.removeTree(work)
            throw error
        }
    }

    func importImage(directory dir: String, _ format: ImportFormat, rules: UnpackRules) async throws -> Imported {
        let rootFD = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw VivariumError(.invalidArgument, "cannot open \(dir): errno \(errno)") }
        defer { close(rootFD) }
        let source = LayoutReader(fd: rootFD, label: dir)
        let (manifest, data) =
            format == .oci ? try ociManifest(source) : try dockerArchiveManifest(source)
        let digest = Digest.of(data)
        if FileSystem.exists(rootfsPath(digest)) {
            return Imported(
                digest: digest, rootfs: rootfsPath(digest), sizeBytes: await FileSystem.diskUsage(rootfsPath(digest)))
        }
        return try await assemble(manifest, data: data, digest: digest, rules: rules, label: dir)
    }

    /// The manifest of an OCI layout for this host (through an index, for its platform), its config and
    /// layers copied into the store.
    func ociManifest(_ source: LayoutReader) throws -> (Manifest, Data) {
        let layout = try source.data("oci-layout", limit: 4096)
        guard (try? JSONSerialization.jsonObject(with: layout) as? [String: Any])?["imageLayoutVersion"] != nil else {
            throw VivariumError(.invalidArgument, "\(source.label)/oci-layout is not an OCI image layout marker")
        }
        var index = try Self.decode(Index.self, try source.data("index.json", limit: 4 << 20), "index.json")
        for _ in 0..<4 {
            let arch = Self.architecture
            let ours = index.manifests.filter { $0.platform?.os == "linux" && $0.platform?.architecture == arch }
            guard let d = ours.first ?? (index.manifests.count == 1 ? index.manifests.first : nil) else {
                throw VivariumError(
                    .imageNotFound,
                    "\(source.label) holds \(index.manifests.count) images and none for linux/\(arch): import a layout of one"
                )
            }
            let data = try source.blob(d)
            if d.mediaType == MediaType.ociIndex || d.mediaType == MediaType.dockerManifestList {
                index = try Self.decode(Index.self, data, "the index \(d.digest)")
                continue
            }
            let manifest = try Self.decode(Manifest.self, data, "the manifest \(d.digest)")
            try copyBlobs(manifest, from: source)
            return (manifest, data)
        }
        throw VivariumError(.invalidArgument, "\(source.label) nests indexes more than 4 deep")
    }

    /// A docker-archive's first image as an OCI manifest over the same config and layer blobs.
    func dockerArchiveManifest(_ source: LayoutReader) throws -> (Manifest, Data) {
        struct Entry: Decodable {
            var Config: String
            var Layers: [String]
        }
        let entries = try Self.decode([Entry].self, try source.data("manifest.json", limit: 4 << 20), "manifest.json")
        guard let entry = entries.first else {
            throw VivariumError(.invalidArgument, "\(source.label)/manifest.json names no image")
        }
        let config = try source.copy(entry.Config, into: self)
        var layers: [Descriptor] = []
        for path in entry.Layers {
            let d = try source.copy(path, into: self)
            let head = (try? source.prefix(path, 4)) ?? []
            let type =
                head.starts(with: [0x1f, 0x8b])
                ? MediaType.ociLayerGzip : head == ZstdDecoder.magic ? MediaType.ociLayerZstd : MediaType.ociLayer
            layers.append(Descriptor(mediaType: type, digest: d.digest, size: d.size))
        }
        let manifest = Manifest(
            config: Descriptor(mediaType: MediaType.ociConfig, digest: config.digest, size: config.size), layers: layers
        )
        return (manifest, try JSONEncoder().encode(manifest))
    }

    /// Copies a manifest's config and layers from an OCI layout into the store, each checked.
    func copyBlobs(_ manifest: Manifest, from source: LayoutReader) throws {
        for d in [manifest.config] + manifest.layers where !FileSystem.exists(blobPath(d.digest)) {
            let got = try source.copy("blobs/sha256/\(d.digest.hex)", into: self)
            guard got.digest == d.digest, got.size == d.size else {
                throw VivariumError(
                    .digestMismatch, "blob \(d.digest) of \(source.label) holds \(got.digest) (\(got.size) bytes)")
            }
        }
    }
}

/// Reads the files of an image layout inside its directory (openat2 RESOLVE_IN_ROOT): no name in it,
/// symlink or `..`, reaches outside.
struct LayoutReader {
    let fd: Int32
    let label: String

    func open(_ path: String) throws -> Int32 {
        let f = FileSystem.openInRoot(fd, path, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { throw VivariumError(.invalidArgument, "\(label) has no readable \(path)") }
        var st = stat()
        guard fstat(f, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            close(f)
            throw VivariumError(.invalidArgument, "\(label)/\(path) is not a regular file")
        }
        return f
    }

    func data(_ path: String, limit: Int) throws -> Data {
        let f = try open(path)
        defer { close(f) }
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = read(f, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw VivariumError(.invalidArgument, "cannot read \(label)/\(path)") }
            if n == 0 { return out }
            out.append(contentsOf: buffer[0..<n])
            guard out.count <= limit else {
                throw VivariumError(.invalidArgument, "\(label)/\(path) is larger than \(limit) bytes")
            }
        }
    }

    func prefix(_ path: String, _ count: Int) throws -> [UInt8] {
        let f = try open(path)
        defer { close(f) }
        var b = [UInt8](repeating: 0, count: count)
        return Array(b[0..<max(0, read(f, &b, count))])
    }

    /// A manifest or index blob, checked against its descriptor.
    func blob(_ d: Descriptor) throws -> Data {
        guard d.size <= 4 << 20 else { throw VivariumError(.invalidArgument, "manifest \(d.digest) is too large") }
        let data = try self.data("blobs/sha256/\(d.digest.hex)", limit: 4 << 20)
        guard Digest.of(data) == d.digest else {
            throw VivariumError(.digestMismatch, "blob \(d.digest) of \(label) holds \(Digest.of(data))")
        }
        return data
    }

    /// Copies a file into the store's tmp while hashing it, then stores it under the digest it has.
    func copy(_ path: String, into store: ImageStore) throws -> (digest: Digest, size: Int64) {
        let f = try open(path)
        defer { close(f) }
        let tmp = "\(store.root)/tmp/blob-\(randomHex(bytes: 8))"
        let out = Glibc.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw VivariumError(.internalError, "cannot create \(tmp): errno \(errno)") }
        var kept = false
        defer {
            close(out)
            if !kept { unlink(tmp) }
        }
        var hash = SHA256()
        var size: Int64 = 0
        try FileSystem.readChunks(f, "\(label)/\(path)") { chunk in
            hash.update(bufferPointer: chunk)
            try Unpacker.writeAll(out, chunk, tmp)
            size += Int64(chunk.count)
        }
        guard fsync(out) == 0 else { throw VivariumError(.unavailable, "cannot sync \(tmp): errno \(errno)") }
        let digest = Digest(sha256: hash.finalize())
        try store.storeBlob(file: tmp, digest: digest)
        kept = true
        return (digest, size)
    }
}
