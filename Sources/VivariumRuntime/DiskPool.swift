import Foundation
import Glibc
import Logging
import VivariumCore
import VivariumOS

/// Where sandboxes' writable layers live when their size is enforced: one volume per sandbox, holding
/// its overlay upper and work dirs, with a kernel-enforced quota (data and metadata). `BtrfsPool` is the
/// implementation; XFS or ext4 project quotas could be a second one, but this kernel has neither, so
/// none is shipped untested.
public protocol DiskQuotas: Sendable {
    /// The pool's size in bytes (what the disk budget is measured against).
    var sizeBytes: Int64 { get }
    /// Creates the sandbox's volume with a quota of `limitBytes`; returns its directory.
    func create(_ id: SandboxID, limitBytes: Int64) throws -> String
    /// The directory of the sandbox's volume, or nil when it has none (a sandbox made before the pool).
    func directory(_ id: SandboxID) -> String?
    /// Deletes the volume and its quota; gone is success.
    func destroy(_ id: SandboxID) throws
    /// Bytes the volume holds as its quota counts them, or nil when unknown.
    func usage(_ id: SandboxID) -> Int64?
    /// Removes volumes no id in `live` owns, and quota groups left by deleted volumes; returns how many.
    func removeOrphans(live: Set<String>) -> Int
}

/// A btrfs file system with one subvolume per sandbox, its qgroup limited to the sandbox's disk quota.
/// Everything per sandbox is an ioctl; only the pool image is formatted once with `mkfs.btrfs`.
public final class BtrfsPool: DiskQuotas {
    public enum Source: Sendable, Equatable {
        /// A preallocated image file, loop-mounted on the mount point (the default, under the state dir).
        case image(path: String, sizeBytes: Int64)
        /// A block device holding btrfs (made by the operator), mounted on the mount point.
        case device(String)
        /// A directory on a btrfs file system the operator mounted, for this instance alone.
        case directory(String)
    }

    /// The directory the subvolumes are made in.
    public let root: String
    public let sizeBytes: Int64
    let dir: Btrfs.Directory
    let logger: Logger

    init(root: String, sizeBytes: Int64, logger: Logger) throws {
        self.root = root
        self.sizeBytes = sizeBytes
        self.logger = logger
        dir = try Btrfs.Directory(root)
    }

    /// Opens the pool, making and mounting it when needed (a pool still mounted from an earlier daemon
    /// is used as it is), and enables quotas. Throws `unavailable` naming what is missing.
    public static func open(_ source: Source, mountPoint: String, logger: Logger) async throws -> BtrfsPool {
        do {
            let root: String
            switch source {
            case .directory(let path):
                guard Btrfs.isBtrfs(path) else { throw VivariumError(.unavailable, "\(path) is not on btrfs") }
                root = path
            case .device(let device):
                if !(Mounts.isMountRoot(mountPoint) && Btrfs.isBtrfs(mountPoint)) {
                    try FileSystem.makeDirectory(mountPoint, mode: 0o700)
                    try Btrfs.mount(device: device, on: mountPoint)
                }
                root = mountPoint
            case .image(let path, let size):
                if !(Mounts.isMountRoot(mountPoint) && Btrfs.isBtrfs(mountPoint)) {
                    if !FileSystem.exists(path) { try await makeImage(path, sizeBytes: size, logger: logger) }
                    try FileSystem.makeDirectory(mountPoint, mode: 0o700)
                    try LoopDevice.mountImage(path, fstype: "btrfs", on: mountPoint)
                }
                root = mountPoint
            }
            let d = try Btrfs.Directory(root)
            try d.enableQuotas()
            var st = statvfs()
            guard statvfs(root, &st) == 0 else { throw VivariumError(.unavailable, "statvfs \(root) failed") }
            let size: Int64
            if case .image(_, let s) = source { size = s } else { size = Int64(st.f_blocks) * Int64(st.f_frsize) }
            return try BtrfsPool(root: root, sizeBytes: size, logger: logger)
        } catch {
            throw VivariumError(
                .unavailable,
                "the disk quota pool cannot be set up (\(error)); it needs btrfs in the kernel and, for the default "
                    + "pool image, loop devices and mkfs.btrfs (btrfs-progs). Set disk_pool = off to run without "
                    + "disk quotas (sandboxes can then fill the host's disk)", cause: error)
        }
    }

    /// Creates the image: preallocated (fallocate, not sparse) so that filling the pool can never fill the
    /// file system under it, then formatted. Made under a temporary name so a failure leaves nothing.
    static func makeImage(_ path: String, sizeBytes: Int64, logger: Logger) async throws {
        let tmp = path + ".new"
        unlink(tmp)
        try FileSystem.createPreallocated(tmp, size: sizeBytes)
        let candidates: [String] = ["/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs", "/usr/bin/mkfs.btrfs"]
        let mkfs = candidates.first { (path: String) in access(path, X_OK) == 0 }
        guard let mkfs else {
            unlink(tmp)
            throw VivariumError(.unavailable, "mkfs.btrfs is not installed (apt-get install btrfs-progs)")
        }
        let out = try await Reaper.shared.run(Command(mkfs, ["-q", "-L", "vivarium", tmp]))
        guard out.status == .exited(0) else {
            unlink(tmp)
            throw VivariumError(
                .unavailable, "mkfs.btrfs \(tmp) failed: \(String(decoding: out.stderr, as: UTF8.self).prefix(500))")
        }
        guard rename(tmp, path) == 0 else { throw VivariumError(.unavailable, "cannot rename \(tmp) to \(path)") }
        logger.notice(
            "disk pool image made", metadata: ["path": "\(path)", "size": "\(Quantity.formatBytes(sizeBytes))"])
    }

    public func create(_ id: SandboxID, limitBytes: Int64) throws -> String {
        try dir.createSubvolume(id.rawValue, limitBytes: limitBytes)
        return root + "/" + id.rawValue
    }

    public func directory(_ id: SandboxID) -> String? {
        let path = root + "/" + id.rawValue
        return FileSystem.exists(path) ? path : nil
    }

    public func destroy(_ id: SandboxID) throws { try dir.destroySubvolume(id.rawValue) }

    public func usage(_ id: SandboxID) -> Int64? {
        guard let sub = dir.subvolumeID(id.rawValue) else { return nil }
        // Qgroup counters move at each transaction commit: commit first, so the figure is current.
        dir.sync()
        return dir.usage(subvolume: sub).map { Int64($0.referenced) }
    }

    public func removeOrphans(live: Set<String>) -> Int {
        var removed = 0
        for e in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where !live.contains(e) {
            guard dir.subvolumeID(e) != nil else { continue }
            do {
                try dir.destroySubvolume(e)
                removed += 1
            } catch {
                logger.error("cannot remove an orphan subvolume", metadata: ["name": "\(e)", "error": "\(error)"])
            }
        }
        return removed + dir.removeStaleQgroups()
    }
}
