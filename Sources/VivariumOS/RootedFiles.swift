import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// Glibc does not export O_PATH to Swift.
public let O_PATH: Int32 = 0o10000000

/// A file system seen from inside a root: every path is resolved below the root descriptor with
/// openat2 `RESOLVE_IN_ROOT`, so `..`, absolute paths and symlinks (absolute ones included) all stay
/// inside it, and the final step of every change is taken relative to the descriptor of the directory
/// that was resolved (no path is looked up twice, so a symlink swapped in meanwhile cannot redirect it).
/// For a sandbox the root is its init's `/proc/<pid>/root`: the box's own view, its `/tmp` and `/run`
/// mounts included.
///
/// Every change is made with the thread's file-system ids set to `owner` for that one synchronous call:
/// a box's own mounts (its /tmp tmpfs belongs to its user namespace) refuse to create, rename or
/// remove for an id their namespace does not map, and what is made is owned by the box.
public final class RootedFiles: Sendable {
    let root: Int32
    let uid: uid_t
    let gid: gid_t

    /// What a path names, as `stat` and `list` report it.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var type: String
        public var size: Int64
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var modified: Date
        public var target: String?
    }

    public init(root path: String, owner: (uid: uid_t, gid: gid_t) = (0, 0)) throws {
        (uid, gid) = owner
        root = Glibc.open(path, O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw Self.failure(errno, path) }
    }

    deinit { close(root) }

    /// Runs `body` (synchronous: on this thread alone) with the file-system ids of the owner.
    func asOwner<T>(_ body: () throws -> T) rethrows -> T {
        vv_set_fs_ids(uid, gid)
        defer {
            let saved = errno
            vv_set_fs_ids(0, 0)
            errno = saved
        }
        return try body()
    }

    static func failure(_ code: Int32, _ path: String) -> VivariumError {
        switch code {
        // Not 404: that answers for the sandbox itself; a path missing inside it is a bad argument.
        case ENOENT: VivariumError(.invalidArgument, "no such file or directory in the sandbox: \(path)")
        case ENOTDIR: VivariumError(.invalidArgument, "not a directory: a component of \(path)")
        case EISDIR: VivariumError(.invalidArgument, "\(path) is a directory")
        case EEXIST: VivariumError(.alreadyExists, "\(path) exists")
        case ENOTEMPTY: VivariumError(.invalidState, "\(path) is not empty (remove it recursively)")
        case EROFS: VivariumError(.invalidState, "\(path) is on a read-only file system")
        case ENOSPC, EDQUOT: VivariumError(.quotaExceeded, "no space left for \(path) (the sandbox's disk is full)")
        case EACCES, EPERM: VivariumError(.forbidden, "\(path) cannot be changed (permission denied)")
        case ELOOP: VivariumError(.invalidArgument, "\(path) has too many levels of symbolic links")
        case EXDEV: VivariumError(.invalidArgument, "\(path) crosses a mount: copy it instead")
        default: VivariumError(.internalError, "\(path): \(String(cString: strerror(code)))")
        }
    }

    /// A path's components, checked: absolute or not, at most 4096 bytes, no NUL.
    static func components(_ path: String) throws -> [String] {
        guard !path.isEmpty, path.utf8.count <= 4096, !path.utf8.contains(0) else {
            throw VivariumError(.invalidArgument, "a path is 1 to 4096 bytes without NUL")
        }
        return path.split(separator: "/").map(String.init).filter { $0 != "." }
    }

    /// Opens `path` inside the root.
    public func open(_ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
        let relative = try Self.components(path).joined(separator: "/")
        let fd = FileSystem.openInRoot(root, relative.isEmpty ? "." : relative, flags | O_CLOEXEC, mode: mode)
        guard fd >= 0 else { throw Self.failure(-fd, path) }
        return fd
    }

    /// The directory holding `path`'s last component (opened inside the root) and that component.
    func parent(_ path: String) throws -> (fd: Int32, name: String) {
        var parts = try Self.components(path)
        guard let name = parts.popLast(), name != ".." else {
            throw VivariumError(.invalidArgument, "\(path) names no file (the root, or ends in ..)")
        }
        let fd = FileSystem.openInRoot(
            root, parts.isEmpty ? "." : parts.joined(separator: "/"), O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.failure(-fd, path) }
        return (fd, name)
    }

    func entry(_ dir: Int32, _ name: String, shownAs label: String) throws -> Entry {
        var st = Glibc.stat()
        guard fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw Self.failure(errno, label) }
        var target: String?
        let kind: String
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = "file"
        case S_IFDIR: kind = "directory"
        case S_IFLNK:
            kind = "symlink"
            var buffer = [UInt8](repeating: 0, count: 4097)
            let n = readlinkat(dir, name, &buffer, 4096)
            if n >= 0 { target = String(decoding: buffer[0..<n], as: UTF8.self) }
        case S_IFIFO: kind = "fifo"
        case S_IFSOCK: kind = "socket"
        case S_IFCHR, S_IFBLK: kind = "device"
        default: kind = "other"
        }
        return Entry(
            name: name, type: kind, size: Int64(st.st_size), mode: st.st_mode & 0o7777, uid: st.st_uid,
            gid: st.st_gid,
            modified: Date(timeIntervalSince1970: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9),
            target: target)
    }

    /// What `path` names (a symlink itself, not what it points to).
    public func stat(_ path: String) throws -> Entry {
        if try Self.components(path).isEmpty { return try entry(root, ".", shownAs: "/") }
        let (dir, name) = try parent(path)
        defer { close(dir) }
        return try entry(dir, name, shownAs: path)
    }

    /// A directory's entries, by name, at most `limit` of them.
    public func list(_ path: String, limit: Int) throws -> [Entry] {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        guard let dir = fdopendir(fd) else {
            close(fd)
            throw Self.failure(errno, path)
        }
        defer { closedir(dir) }
        var out: [Entry] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            guard out.count < limit else {
                throw VivariumError(.invalidArgument, "\(path) holds more than \(limit) entries")
            }
            if let entry = try? entry(dirfd(dir), name, shownAs: name) { out.append(entry) }
        }
        return out.sorted { $0.name < $1.name }
    }

    /// Writes a new regular file at `path` from `body`'s chunks, the owner's, with `mode`: into a
    /// hidden temporary name in the same directory, then renamed over `path` (a symlink there is replaced,
    /// never written through), so that a failed upload leaves nothing behind.
    public func write(
        _ path: String, mode: mode_t, limit: Int64,
        _ body: (_ write: (UnsafeRawBufferPointer) throws -> Void) async throws -> Void
    ) async throws -> Entry {
        let (dir, name) = try parent(path)
        defer { close(dir) }
        let temporary = ".\(name.prefix(200)).vivarium-\(randomHex(bytes: 6))"
        let fd = asOwner { openat(dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw Self.failure(errno, path) }
        var kept = false
        defer {
            close(fd)
            if !kept { _ = asOwner { unlinkat(dir, temporary, 0) } }
        }
        var written: Int64 = 0
        try await body { chunk in
            written += Int64(chunk.count)
            guard written <= limit else {
                throw VivariumError(.invalidArgument, "an upload is at most \(Quantity.formatBytes(limit))")
            }
            var offset = 0
            while offset < chunk.count {
                let n = Glibc.write(fd, chunk.baseAddress! + offset, chunk.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw Self.failure(errno, path) }
                offset += n
            }
        }
        guard fchmod(fd, mode & 0o777) == 0, fsync(fd) == 0 else { throw Self.failure(errno, path) }
        guard asOwner({ renameat(dir, temporary, dir, name) }) == 0 else { throw Self.failure(errno, path) }
        kept = true
        return try entry(dir, name, shownAs: path)
    }

    /// Makes a directory (and, with `parents`, the missing ones above it), the owner's.
    public func makeDirectory(_ path: String, mode: mode_t, parents: Bool) throws -> Entry {
        if parents {
            var sofar: [String] = []
            for part in try Self.components(path).dropLast() {
                sofar.append(part)
                let p = sofar.joined(separator: "/")
                if (try? stat(p))?.type == "directory" { continue }
                _ = try makeDirectory(p, mode: mode, parents: false)
            }
        }
        let (dir, name) = try parent(path)
        defer { close(dir) }
        if asOwner({ mkdirat(dir, name, mode & 0o777) }) != 0 {
            if parents && errno == EEXIST, (try? entry(dir, name, shownAs: path))?.type == "directory" {
                return try entry(dir, name, shownAs: path)
            }
            throw Self.failure(errno, path)
        }
        return try entry(dir, name, shownAs: path)
    }

    /// Renames `from` to `to` (replacing a file there, as `mv` does); both stay inside the root.
    public func move(_ from: String, to: String) throws -> Entry {
        let (a, nameA) = try parent(from)
        defer { close(a) }
        let (b, nameB) = try parent(to)
        defer { close(b) }
        guard asOwner({ renameat(a, nameA, b, nameB) }) == 0 else { throw Self.failure(errno, "\(from) → \(to)") }
        return try entry(b, nameB, shownAs: to)
    }

    /// Removes a file, a symlink (not what it points to) or an empty directory; with `recursive`, a
    /// directory and everything below it, walked by descriptor without following any symlink.
    /// Returns how many entries went.
    @discardableResult
    public func remove(_ path: String, recursive: Bool) throws -> Int {
        let (dir, name) = try parent(path)
        defer { close(dir) }
        return try asOwner { try Self.remove(dir, name, recursive: recursive, label: path) }
    }

    static func remove(_ dir: Int32, _ name: String, recursive: Bool, label: String) throws -> Int {
        if unlinkat(dir, name, 0) == 0 { return 1 }
        guard errno == EISDIR else { throw failure(errno, label) }
        if unlinkat(dir, name, AT_REMOVEDIR) == 0 { return 1 }
        guard errno == ENOTEMPTY || errno == EEXIST, recursive else { throw failure(errno, label) }
        let fd = openat(dir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0, let stream = fdopendir(fd) else {
            if fd >= 0 { close(fd) }
            throw failure(errno, label)
        }
        var count = 0
        do {
            defer { closedir(stream) }
            var names: [String] = []
            while let e = readdir(stream) {
                let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if n != "." && n != ".." { names.append(n) }
            }
            for n in names { count += try remove(dirfd(stream), n, recursive: true, label: label + "/" + n) }
        }
        guard unlinkat(dir, name, AT_REMOVEDIR) == 0 else { throw failure(errno, label) }
        return count + 1
    }
}
