import Foundation
import Logging
import VivariumCore
import VivariumOCI
import VivariumOS

import struct Crypto.SHA256

/// A content-addressed local image store laid out like an OCI image layout:
///
///     <root>/blobs/sha256/<hex>     layers, image configs and manifests, named by their digest
///     <root>/rootfs/<manifest-hex>  the unpacked root file system of a manifest, read-only lower
///
/// An image is known by its manifest digest; names live in the store (database). Importing the same
/// content twice yields the same digest and shares the unpacked root.
public struct ImageStore: Sendable {
    public let root: String
    let logger: Logger

    public struct Imported: Sendable {
        public var digest: Digest
        public var rootfs: String
        public var sizeBytes: Int64
    }

    public init(root: String, logger: Logger) throws {
        self.root = root
        self.logger = logger
        for d in [root, root + "/blobs", root + "/blobs/sha256", root + "/rootfs", root + "/tmp"] {
            try FileSystem.makeDirectory(d, mode: 0o700)
        }
    }

    public func blobPath(_ d: Digest) -> String { "\(root)/blobs/sha256/\(d.hex)" }
    public func rootfsPath(_ manifest: Digest) -> String { "\(root)/rootfs/\(manifest.hex)" }

    /// Imports a root file system from a tar archive (gzip or plain) on this host, streamed.
    public func importArchive(file path: String, rules: UnpackRules) async throws -> Imported {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw VivariumError(.invalidArgument, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        return try await LayerIngest.run(into: self, rules: rules) { feed in try FileSystem.readChunks(fd, path, feed) }
    }

    /// Imports a directory of this host: walked without following symlinks or entering `skip` (a
    /// directory's device and inode: the state directory, however it is reached), archived as a tar
    /// layer and unpacked under the same rules as any archive.
    public func importDirectory(_ path: String, skip: [(dev_t, ino_t)], rules: UnpackRules) async throws -> Imported {
        try await LayerIngest.run(into: self, rules: rules) { feed in
            try withoutActuallyEscaping(feed) { feed in
                var writer = TarWriter(feed)
                try DirectoryWalk(root: path, skip: skip).walk { try writer.add($0) }
                try writer.finish()
            }
        }
    }

    /// Places an unpacked root and its layer blob in the store under a new manifest.
    func place(
        rootfs unpacked: String, layerBlob: String, layer layerDigest: Digest, layerSize: Int64, diffID: Digest,
        mediaType: String
    ) async throws -> Imported {
        let config: [String: Any] = [
            "architecture": Self.architecture, "os": "linux",
            "rootfs": ["type": "layers", "diff_ids": [diffID.rawValue]],
            "config": ["Env": [HardenedSpecDefaults.path]],
        ]
        let configData = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys])
        let configDigest = Digest.of(configData)
        let manifest: [String: Any] = [
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": [
                "mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest.rawValue,
                "size": configData.count,
            ],
            "layers": [
                [
                    "mediaType": mediaType,
                    "digest": layerDigest.rawValue, "size": layerSize,
                ]
            ],
        ]
        let manifestData = try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys])
        let manifestDigest = Digest.of(manifestData)

        try storeBlob(file: layerBlob, digest: layerDigest)
        try storeBlob(data: configData, digest: configDigest)
        try storeBlob(data: manifestData, digest: manifestDigest)
        let final = rootfsPath(manifestDigest)
        if !FileSystem.exists(final) {
            _ = chmod(unpacked, 0o755)
            guard rename(unpacked, final) == 0 else { throw VivariumError(.internalError, "cannot place \(final)") }
        }
        let size = await FileSystem.diskUsage(final)
        logger.info("imported image", metadata: ["digest": "\(manifestDigest)", "bytes": "\(size)"])
        return Imported(digest: manifestDigest, rootfs: final, sizeBytes: size)
    }

    /// The layers' uncompressed digests the config names, one per layer of the manifest.
    static func diffIDs(_ manifest: Manifest, _ config: ImageConfig, _ label: String) throws -> [Digest] {
        let ids = config.rootfs.diffIds
        guard ids.count == manifest.layers.count else {
            throw VivariumError(
                .invalidArgument, "\(label) has \(manifest.layers.count) layers but its config names \(ids.count)")
        }
        return ids
    }

    /// Applies a manifest's stored layers in order (whiteouts included) into a new root under the unpack
    /// rules, each layer's uncompressed digest checked against the config's diff ids; then stores the
    /// manifest and places the root.
    func assemble(
        _ manifest: Manifest, data: Data, digest: Digest, rules: UnpackRules, label: String
    ) async throws -> Imported {
        let ids = try Self.diffIDs(manifest, try config(manifest.config.digest), label)
        let work = "\(root)/tmp/assemble-\(randomHex(bytes: 8))"
        try FileSystem.makeDirectory(work, mode: 0o700)
        try FileSystem.makeDirectory(work + "/rootfs", mode: 0o755)
        do {
            var total: Int64 = 0
            for (i, layer) in manifest.layers.enumerated() {
                let summary = try apply(layer, into: work + "/rootfs", rules: rules)
                total += summary.tarBytes
                guard total <= rules.maxBytes else {
                    throw VivariumError(
                        .invalidArgument, "\(label) unpacks to more than \(Quantity.formatBytes(rules.maxBytes))")
                }
                if ids[i] != summary.diffID {
                    throw VivariumError(
                        .digestMismatch,
                        "layer \(i + 1) of \(label) unpacks to \(summary.diffID), its config says \(ids[i])")
                }
            }
            try storeBlob(data: data, digest: digest)
            let final = rootfsPath(digest)
            if !FileSystem.exists(final) {
                guard rename(work + "/rootfs", final) == 0 else {
                    throw VivariumError(.internalError, "cannot place \(final)")
                }
            }
            try await FileSystem.removeTree(work)
            return Imported(digest: digest, rootfs: final, sizeBytes: await FileSystem.diskUsage(final))
        } catch {
            try? await FileSystem.removeTree(work)
            throw error
        }
    }

    /// Applies one stored layer over the root under the unpack rules.
    func apply(_ layer: Descriptor, into root: String, rules: UnpackRules) throws -> Unpacker.Summary {
        guard FileSystem.exists(blobPath(layer.digest)) else {
            throw VivariumError(.internalError, "the layer \(layer.digest) is not in the store")
        }
        return try Self.unpack(file: blobPath(layer.digest), into: root, rules: rules, whiteouts: true)
    }

    /// Unpacks an archive file of this host (gzip, zstd or plain) into `root` under the unpack rules.
    static func unpack(file path: String, into root: String, rules: UnpackRules, whiteouts: Bool) throws
        -> Unpacker.Summary
    {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw VivariumError(.invalidArgument, "cannot read \(path): errno \(errno)") }
        defer { close(fd) }
        let unpacker = try Unpacker(root: root, rules: rules, whiteouts: whiteouts)
        try FileSystem.readChunks(fd, path) { try unpacker.feed($0) }
        return try unpacker.finish()
    }

    /// A stored manifest, or nil when the store lacks it.
    public func manifest(_ d: Digest) -> Manifest? {
        FileManager.default.contents(atPath: blobPath(d)).flatMap { try? JSONDecoder().decode(Manifest.self, from: $0) }
    }

    /// A stored image config.
    public func config(_ d: Digest) throws -> ImageConfig {
        guard let data = FileManager.default.contents(atPath: blobPath(d)) else {
            throw VivariumError(.internalError, "the image config \(d) is not in the store")
        }
        return try Self.decode(ImageConfig.self, data, "the image config")
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data, _ what: String) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: data) } catch {
            throw VivariumError(.invalidArgument, "\(what) is not valid JSON of its type")
        }
    }

    public struct Collected: Sendable, Equatable {
        public var blobs = 0
        public var roots = 0
        public var bytes: Int64 = 0
    }

    /// Garbage collection: removes every blob and unpacked root that no manifest in `keep` names, and
    /// what interrupted work left in the store's tmp. The caller holds off every ingest meanwhile.
    public func collect(keeping keep: Set<Digest>) async -> Collected {
        var marked = keep
        for m in keep {
            guard let manifest = manifest(m) else { continue }
            marked.insert(manifest.config.digest)
            for l in manifest.layers { marked.insert(l.digest) }
        }
        var out = Collected()
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: root + "/blobs/sha256")) ?? [] {
            if let d = Digest(rawValue: "sha256:" + name), marked.contains(d) { continue }
            let path = root + "/blobs/sha256/" + name
            var st = stat()
            if lstat(path, &st) == 0 { out.bytes += Int64(st.st_size) }
            if unlink(path) == 0 { out.blobs += 1 }
        }
        for name in (try? fm.contentsOfDirectory(atPath: root + "/rootfs")) ?? [] {
            if let d = Digest(rawValue: "sha256:" + name), keep.contains(d) { continue }
            let path = root + "/rootfs/" + name
            out.bytes += await FileSystem.diskUsage(path)
            if (try? await FileSystem.removeTree(path)) != nil { out.roots += 1 }
        }
        for name in (try? fm.contentsOfDirectory(atPath: root + "/tmp")) ?? [] {
            try? await FileSystem.removeTree(root + "/tmp/" + name)
        }
        if out != Collected() {
            logger.info(
                "image store collected",
                metadata: ["blobs": "\(out.blobs)", "roots": "\(out.roots)", "bytes": "\(out.bytes)"])
        }
        return out
    }

    func storeBlob(file: String, digest: Digest) throws {
        let dest = blobPath(digest)
        if FileSystem.exists(dest) {
            unlink(file)
            return
        }
        guard rename(file, dest) == 0 else { throw VivariumError(.internalError, "cannot store blob \(digest)") }
        _ = chmod(dest, 0o444)
    }

    func storeBlob(data: Data, digest: Digest) throws {
        let dest = blobPath(digest)
        if FileSystem.exists(dest) { return }
        try FileSystem.writeAtomically(data, to: dest, mode: 0o444)
    }

    static var architecture: String {
        #if arch(arm64)
            "arm64"
        #else
            "amd64"
        #endif
    }

    /// Builds the default `base` root file system from the host's static busybox.
    public static func buildBusyboxRootfs(at dir: String, busybox: String) async throws {
        let fm = FileManager.default
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "proc", "sys", "dev", "run", "home", "var/tmp",
        ] {
            try fm.createDirectory(atPath: dir + "/" + d, withIntermediateDirectories: true)
        }
        _ = chmod(dir + "/tmp", 0o1777)
        _ = chmod(dir + "/var/tmp", 0o1777)
        _ = chmod(dir + "/root", 0o700)
        try fm.copyItem(atPath: busybox, toPath: dir + "/bin/busybox")
        let list = try await Reaper.shared.run(Command(busybox, ["--list-full"]))
        guard list.status == .exited(0) else { throw VivariumError(.internalError, "busybox --list-full failed") }
        for applet in list.stdoutString.split(separator: "\n") where !applet.isEmpty && applet != "bin/busybox" {
            let path = dir + "/" + applet
            if FileSystem.exists(path) { continue }
            _ = symlink("/bin/busybox", path)
        }
        let files = [
            "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            "etc/group": "root:x:0:\nnogroup:x:65534:\n",
            "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
            "etc/os-release": "NAME=\"Vivarium base (busybox)\"\nID=vivarium-base\n",
        ]
        for (p, c) in files { try Data(c.utf8).write(to: URL(fileURLWithPath: dir + "/" + p)) }
    }
}

/// Defaults shared with the runtime spec without importing the runtime.
enum HardenedSpecDefaults {
    static let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
