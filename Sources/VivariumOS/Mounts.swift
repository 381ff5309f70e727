import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// Mount table access and the mount syscalls Vivarium needs.
public enum Mounts {
    /// Mount points of this process's mount namespace, from /proc/self/mountinfo (octal escapes decoded).
    /// O(mounts) in the kernel and here: per-sandbox paths use `isMountRoot` instead.
    public static func mountPoints() -> [String] {
        guard let text = FileSystem.readAll("/proc/self/mountinfo") else { return [] }
        var points: [String] = []
        // The fifth space-separated field of each line, parsed on bytes.
        text.utf8.withContiguousStorageIfAvailable { b in
            var field = 0
            var start = 0
            for i in 0..<b.count {
                switch b[i] {
                case 10:
                    field = 0
                    start = i + 1
                case 32:
                    field += 1
                    if field == 4 {
                        start = i + 1
                    } else if field == 5 {
                        points.append(unescape(String(decoding: b[start..<i], as: UTF8.self)))
                    }
                default: continue
                }
            }
        }
            ?? {
                points = text.split(separator: "\n").compactMap { line in
                    let f = line.split(separator: " ", omittingEmptySubsequences: false)
                    return f.count > 4 ? unescape(String(f[4])) : nil
                }
            }()
        return points
    }

    public static func isMountPoint(_ path: String) -> Bool {
        mountPoints().contains(path)
    }

    /// Whether `path` is the root of a mount, from one statx of it: constant time however many mounts
    /// the host has. Falls back to the mount table where statx cannot say (before Linux 5.8).
    public static func isMountRoot(_ path: String) -> Bool {
        switch vv_is_mount_root(path) {
        case 1: true
        case 0, -ENOENT, -ENOTDIR: false
        default: isMountPoint(path)
        }
    }

    /// Unmounts whatever is stacked on `path` (a mount point with nothing below it that Vivarium did
    /// not mount itself), without reading the mount table.
    public static func unmountStack(_ path: String) throws {
        var layers = 0
        while isMountRoot(path) {
            guard layers < 16 else { throw VivariumError(.internalError, "\(path) stays mounted") }
            try unmount(path)
            layers += 1
        }
    }

    /// Mount points at or below `dir`, deepest first.
    public static func mounts(under dir: String, in table: [String]? = nil) -> [String] {
        let prefix = dir.hasSuffix("/") ? dir : dir + "/"
        return (table ?? mountPoints()).filter { $0 == dir || $0.hasPrefix(prefix) }.sorted { $0.count > $1.count }
    }

    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out = [UInt8]()
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == 92, i + 3 < b.count,
                let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bind-mounts `source` on `target` through an idmapped clone: ids on disk appear shifted by the
    /// user namespace `userns` (see `UserNamespace`). The image stays untouched.
    public static func idmappedBind(source: String, target: String, userns: UserNamespace, readOnly: Bool) throws {
        let rc = vv_idmapped_bind(source, target, userns.fd, readOnly ? 1 : 0)
        guard rc == 0 else { throw posixError("idmapped mount of \(source) on \(target)", -rc) }
    }

    /// Mounts an overlay whose layers are named by descriptor (`/proc/self/fd/N`): the kernel keeps the
    /// option strings as given, so the mount's options in `/proc/*/mountinfo`, which a box can read, name
    /// no host path.
    public static func overlay(lower: String, upper: String, work: String, target: String) throws {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for dir in [lower, upper, work] {
            let fd = open(dir, 0o10000000 | O_DIRECTORY | O_CLOEXEC)  // O_PATH
            guard fd >= 0 else { throw posixError("overlay layer \(dir)", errno) }
            fds.append(fd)
        }
        let data = "lowerdir=/proc/self/fd/\(fds[0]),upperdir=/proc/self/fd/\(fds[1]),workdir=/proc/self/fd/\(fds[2])"
        let rc = vv_mount("overlay", target, "overlay", UInt(MS_NODEV) | UInt(MS_NOSUID), data)
        guard rc == 0 else { throw posixError("overlay mount on \(target)", -rc) }
    }

    /// Mounts a private tmpfs at `target` (nosuid, nodev, noexec) of at most `sizeBytes`, with its root
    /// directory at `mode`: what lives there never reaches a disk and is gone at a reboot.
    public static func tmpfs(_ target: String, sizeBytes: Int64, mode: mode_t = 0o700) throws {
        let flags = UInt(MS_NODEV) | UInt(MS_NOSUID) | UInt(MS_NOEXEC)
        let data = "size=\(sizeBytes),mode=\(String(mode, radix: 8))"
        let rc = vv_mount("tmpfs", target, "tmpfs", flags, data)
        guard rc == 0 else { throw posixError("tmpfs mount on \(target)", -rc) }
    }

    /// Whether `path` is the root of a tmpfs mount.
    public static func isTmpfs(_ path: String) -> Bool {
        vv_fs_type(path) == 0x0102_1994 && isMountRoot(path)
    }

    /// Unmounts `target`; not mounted is success. Falls back to a lazy unmount when busy.
    public static func unmount(_ target: String) throws {
        var rc = vv_umount(target, 0)
        if rc == -EBUSY { rc = vv_umount(target, 1) }
        guard rc == 0 || rc == -EINVAL || rc == -ENOENT else { throw posixError("unmount \(target)", -rc) }
    }

    /// Unmounts everything at or below `dir`, deepest first.
    public static func unmountAll(under dir: String) throws {
        for m in mounts(under: dir) { try unmount(m) }
    }
}

/// An fd to a user namespace holding one id mapping, for idmapped mounts. Closes on deinit.
public final class UserNamespace: Sendable {
    public let fd: Int32

    /// A namespace mapping ids 0..<size inside to base..<base+size outside, for uids and gids.
    public init(base: Int64, size: Int64) throws {
        let map = "0 \(base) \(size)\n"
        let rc = vv_userns_fd(map, map)
        guard rc >= 0 else { throw posixError("user namespace for idmapping", -rc) }
        fd = rc
    }

    deinit { close(fd) }
}

/// An exclusive lock on a state directory, held for the life of the daemon (flock on `lock`).
public final class StateDirLock: Sendable {
    let fd: Int32
    public init(directory: String) throws {
        let path = directory + "/lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("open \(path)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw VivariumError(
                .unavailable, "another vivarium daemon holds the state directory \(directory)")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { write(fd, $0, strlen($0)) }
    }
    deinit { close(fd) }
}
