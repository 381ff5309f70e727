import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// File-system helpers that never cross into a mount below the tree they work on.
public enum FileSystem {
    public static func makeDirectory(_ path: String, mode: mode_t = 0o700, owner: (uid_t, gid_t)? = nil) throws {
        if mkdir(path, mode) != 0 && errno != EEXIST {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(mode)])
        }
        _ = chmod(path, mode)
        if let (u, g) = owner, chown(path, u, g) != 0 { throw posixError("chown \(path)") }
    }

    /// Creates `path` (0600, it must not exist) with `size` bytes allocated on disk, not sparse: writes
    /// into it can never run out of space on the file system below.
    public static func createPreallocated(_ path: String, size: Int64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw posixError("create \(path)") }
        let rc = vv_fallocate(fd, size)
        close(fd)
        guard rc == 0 else {
            unlink(path)
            throw posixError("preallocate \(size) bytes for \(path)", -rc)
        }
    }

    /// Writes a file that holds a secret (a private key, credentials): see `writeAtomically`; mode 0600.
    public static func writeSecret(_ data: Data, to path: String) throws {
        try writeAtomically(data, to: path, mode: 0o600, durable: true)
    }

    /// Writes a file atomically: a temporary file created exclusively (O_EXCL, no link followed) with
    /// `mode` from its first byte, written whole, fsynced, renamed into place, and its directory fsynced,
    /// so that a crash leaves the old file or the new one, never a partial or a more readable one. Files
    /// that are rebuilt after a crash anyway (bundles, exec process specs) pass `durable: false`.
    /// With `owner` the file is chowned before it appears under its name.
    public static func writeAtomically(
        _ data: Data, to path: String, mode: mode_t = 0o600, durable: Bool = true, owner: (uid_t, gid_t)? = nil
    ) throws {
        let tmp = path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw posixError("create \(tmp)") }
        var ok = true
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 {
                    if n < 0 && errno == EINTR { continue }
                    ok = false
                    break
                }
                off += n
            }
        }
        if ok, let owner { ok = fchown(fd, owner.0, owner.1) == 0 && fchmod(fd, mode) == 0 }
        if ok && durable { ok = fsync(fd) == 0 }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw posixError("write \(path)")
        }
        if durable {
            let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dir >= 0 {
                _ = fsync(dir)
                close(dir)
            }
        }
    }

    /// Removes a tree. Refuses while anything is mounted at or below it, so that a forgotten mount
    /// can never lead the removal into an image or a host directory. GNU rm walks with openat and never
    /// follows a symbolic link, so a sandbox swapping a directory for a link mid-way cannot redirect it,
    /// and it handles trees of any depth.
    /// `mountTable` is the mount table when the caller has just read it (for several trees).
    public static func removeTree(_ path: String, mountTable: [String]? = nil) async throws {
        guard exists(path) else { return }
        let mounted = Mounts.mounts(under: path, in: mountTable)
        guard mounted.isEmpty else {
            throw VivariumError(.internalError, "refusing to remove \(path): \(mounted[0]) is mounted")
        }
        let out = try await Reaper.shared.run(
            Command("/bin/rm", ["-rf", "--one-file-system", "--", path], outputLimit: 4096))
        guard out.status == .exited(0), !exists(path) else {
            throw VivariumError(.internalError, "cannot remove \(path): \(out.stderrString.prefix(300))")
        }
    }

    /// The canonical absolute form of an existing path (symbolic links, `.`, `..` and `//` resolved).
    public static func canonical(_ path: String) throws -> String {
        guard let p = realpath(path, nil) else { throw posixError("realpath \(path)") }
        defer { free(p) }
        return String(cString: p)
    }

    /// Reads `fd` to its end in chunks of 1 MiB, handing each to `body`; `what` names the file in errors.
    public static func readChunks(
        _ fd: Int32, _ what: String, _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw VivariumError(.invalidArgument, "cannot read \(what): errno \(errno)") }
            if n == 0 { return }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// The whole content of a file, read until EOF. Files in /proc and /sys report size 0, and a reader
    /// that trusts the size stops early: this one does not.
    public static func readAll(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// Bytes allocated by the files below `path` (st_blocks), without following links or crossing
    /// into other file systems. Walks on a dispatch thread, not on the cooperative pool, and stops
    /// after `maxEntries` entries (the figure is then a lower bound).
    public static func diskUsage(_ path: String, maxEntries: Int = 1_000_000) async -> Int64 {
        await withCheckedContinuation { c in
            DispatchQueue.global().async { c.resume(returning: diskUsageSync(path, maxEntries: maxEntries)) }
        }
    }

    static func diskUsageSync(_ path: String, maxEntries: Int) -> Int64 {
        var root = stat()
        guard lstat(path, &root) == 0 else { return 0 }
        var total: Int64 = Int64(root.st_blocks) * 512
        guard let en = FileManager.default.enumerator(atPath: path) else { return total }
        var seen = 0
        while let rel = en.nextObject() as? String, seen < maxEntries {
            seen += 1
            var st = stat()
            guard lstat(path + "/" + rel, &st) == 0 else { continue }
            if st.st_dev != root.st_dev {
                en.skipDescendants()
                continue
            }
            total += Int64(st.st_blocks) * 512
        }
        return total
    }
}

/// A directory that trees are moved into, to be removed later off the request path: moving a tree is one
/// rename whatever its size, and removing it (GNU rm, see `FileSystem.removeTree`) can take long. It must
/// be on the same file system as what is discarded into it. Whatever it holds after a crash is removed at
/// the next `empty()`.
public struct Trash: Sendable {
    public let dir: String

    public init(dir: String) throws {
        self.dir = dir
        try FileSystem.makeDirectory(dir, mode: 0o700)
    }

    /// Moves `path` into the trash. Refused while `path` or one of `mountPoints` (the places something
    /// may be mounted below it) is a mount point: one statx each, not a read of the mount table. A mount
    /// anywhere else below it is found when the trash is emptied, which then refuses to remove that tree.
    public func discard(_ path: String, checking mountPoints: [String]) throws {
        guard FileSystem.exists(path) else { return }
        if let mounted = ([path] + mountPoints).first(where: Mounts.isMountRoot) {
            throw VivariumError(.internalError, "refusing to discard \(path): \(mounted) is mounted")
        }
        let dest = dir + "/" + randomHex(bytes: 8)
        guard rename(path, dest) == 0 else { throw posixError("move \(path) to the trash") }
    }

    /// Removes everything in the trash; returns how many trees it removed.
    @discardableResult
    public func empty() async -> Int {
        var n = 0
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        guard !entries.isEmpty else { return 0 }
        let table = Mounts.mountPoints()  // once for the whole batch
        for e in entries {
            if (try? await FileSystem.removeTree(dir + "/" + e, mountTable: table)) != nil { n += 1 }
        }
        return n
    }

    public var isEmpty: Bool { ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).isEmpty }
}

/// Facts of this host the daemon sizes itself by.
public enum HostFacts {
    /// `/proc/sys/kernel/pid_max` (the kernel's default, 32768, when unreadable).
    public static func pidMax() -> Int64 {
        let text = (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8)) ?? ""
        return Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 32768
    }
}

extension HostFacts {
    /// Sets this process's OOM score adjustment (-1000...1000).
    public static func setOOMScoreAdjust(_ value: Int) throws {
        let fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot open /proc/self/oom_score_adj: errno \(errno)") }
        defer { close(fd) }
        let text = Array(String(value).utf8)
        guard write(fd, text, text.count) == text.count else {
            throw VivariumError(.unavailable, "cannot set the OOM score adjustment: errno \(errno)")
        }
    }
}
