import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// Btrfs primitives, all through ioctls (no `btrfs` process): subvolumes, quotas (qgroups) and their
/// usage. Errors keep the errno in the message ("Disk quota exceeded" is EDQUOT).
public enum Btrfs {
    public static let superMagic: Int = 0x9123_683E

    /// Whether `path` is on a btrfs file system.
    public static func isBtrfs(_ path: String) -> Bool { vv_fs_type(path) == superMagic }

    /// Mounts the btrfs file system on `device` at `target` (nodev, nosuid).
    public static func mount(device: String, on target: String) throws {
        let rc = vv_mount(device, target, "btrfs", UInt(MS_NODEV) | UInt(MS_NOSUID), nil)
        guard rc == 0 else { throw posixError("mount \(device) (btrfs) on \(target)", -rc) }
    }

    /// A directory of a btrfs file system, open for ioctls.
    public final class Directory: Sendable {
        public let path: String
        let fd: Int32

        public init(_ path: String) throws {
            self.path = path
            fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { throw posixError("open \(path)") }
        }

        deinit { close(fd) }

        public func enableQuotas() throws {
            let rc = vv_btrfs_quota_enable(fd)
            guard rc == 0 else { throw posixError("enable btrfs quotas on \(path)", -rc) }
        }

        /// Creates the subvolume `name` in this directory with its qgroup limited to `limitBytes`
        /// (referenced bytes, metadata included); returns its id.
        @discardableResult
        public func createSubvolume(_ name: String, limitBytes: Int64) throws -> UInt64 {
            var rc = vv_btrfs_subvol_create(fd, name)
            guard rc == 0 else { throw posixError("create btrfs subvolume \(name) in \(path)", -rc) }
            let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard sub >= 0 else { throw posixError("open subvolume \(name)") }
            defer { close(sub) }
            rc = vv_btrfs_qgroup_limit(sub, UInt64(max(0, limitBytes)))
            if rc != 0 {
                let e = -rc
                _ = vv_btrfs_subvol_destroy(fd, name)
                throw posixError("limit the qgroup of subvolume \(name)", e)
            }
            var id: UInt64 = 0
            rc = vv_btrfs_subvol_id(sub, &id)
            guard rc == 0 else { throw posixError("id of subvolume \(name)", -rc) }
            return id
        }

        /// The id of the subvolume `name` of this directory, or nil when it is not there.
        public func subvolumeID(_ name: String) -> UInt64? {
            let sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
            guard sub >= 0 else { return nil }
            defer { close(sub) }
            var st = stat()
            // A subvolume's root directory is inode 256.
            guard fstat(sub, &st) == 0, st.st_ino == 256 else { return nil }
            var id: UInt64 = 0
            return vv_btrfs_subvol_id(sub, &id) == 0 ? id : nil
        }

        /// Deletes the subvolume `name` and its qgroup. The kernel frees the data after the call; the qgroup
        /// cannot go while it still counts that data (EBUSY), so then the kernel drops it itself once the
        /// subvolume is cleaned up (and `removeStaleQgroups` catches any that stay). Gone is success.
        public func destroySubvolume(_ name: String) throws {
            let id = subvolumeID(name)
            let rc = vv_btrfs_subvol_destroy(fd, name)
            guard rc == 0 || rc == -ENOENT else { throw posixError("delete btrfs subvolume \(name)", -rc) }
            if let id { _ = vv_btrfs_qgroup_remove(fd, id) }
        }

        /// Level-0 qgroups (one per subvolume) and their usage.
        public func qgroups() throws -> [Qgroup] {
            var cap = 256
            while true {
                var ids = [UInt64](repeating: 0, count: cap)
                var rfer = ids
                var excl = ids
                let n = vv_btrfs_qgroups(fd, &ids, &rfer, &excl, Int32(cap))
                guard n >= 0 else { throw posixError("list the qgroups of \(path)", -n) }
                if Int(n) < cap {
                    return (0..<Int(n)).map { Qgroup(id: ids[$0], referenced: rfer[$0], exclusive: excl[$0]) }
                }
                cap *= 4
            }
        }

        /// The usage of the qgroup of subvolume `id`, or nil when it has none.
        public func usage(subvolume id: UInt64) -> Qgroup? { (try? qgroups())?.first { $0.id == id } }

        /// Removes level-0 qgroups whose subvolume no longer exists (the top level, 5, stays); returns how
        /// many went. Commits the transaction first so that deleted subvolumes are accounted.
        @discardableResult
        public func removeStaleQgroups() -> Int {
            _ = vv_btrfs_sync(fd)
            var removed = 0
            for q in (try? qgroups()) ?? [] where q.id >= 256 && vv_btrfs_subvol_exists(fd, q.id) == 0 {
                if vv_btrfs_qgroup_remove(fd, q.id) == 0 { removed += 1 }
            }
            return removed
        }

        /// Commits the current transaction.
        public func sync() { _ = vv_btrfs_sync(fd) }
    }

    public struct Qgroup: Sendable, Equatable {
        /// The subvolume id (the qgroup is 0/id).
        public var id: UInt64
        public var referenced: UInt64
        public var exclusive: UInt64
    }
}

/// Loop devices through /dev/loop-control and LOOP_CONFIGURE.
public enum LoopDevice {
    /// Attaches `image` to a free loop device with LO_FLAGS_AUTOCLEAR and mounts it (btrfs) on `target`;
    /// the device detaches by itself when the mount goes.
    public static func mountImage(_ image: String, fstype: String, on target: String) throws {
        let img = open(image, O_RDWR | O_CLOEXEC)
        guard img >= 0 else { throw posixError("open \(image)") }
        defer { close(img) }
        var n: Int32 = -1
        let dev = vv_loop_attach(img, &n)
        guard dev >= 0 else { throw posixError("attach \(image) to a loop device", -dev) }
        // The open device keeps it configured until the mount holds it; closing it then leaves the mount
        // as its only user, and AUTOCLEAR detaches it when that goes.
        defer { close(dev) }
        let rc = vv_mount("/dev/loop\(n)", target, fstype, UInt(MS_NODEV) | UInt(MS_NOSUID), nil)
        guard rc == 0 else { throw posixError("mount /dev/loop\(n) (\(image)) on \(target)", -rc) }
    }
}
