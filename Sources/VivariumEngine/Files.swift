import Foundation
import Glibc
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumStore

/// The file API: reads and changes inside a running sandbox, every path resolved in the box's own root
/// as the box sees it (its init's `/proc/<pid>/root`, with openat2 `RESOLVE_IN_ROOT`: the box's `/tmp`
/// and `/run` mounts included, no symlink, `..` or race reaching outside), files made with the box's
/// ownership (its root, the base of its id range).
extension Sandboxes {
    /// The largest upload (a box's disk quota bounds it further).
    public static let maxUploadBytes: Int64 = 8 << 30
    /// The most entries a listing returns.
    public static let maxListEntries = 10_000

    /// Runs `body` with the root of the caller's running sandbox `name`, under `action`.
    func files<T: Sendable>(
        _ caller: Caller, _ name: ResourceName, _ action: Action, path: String,
        _ body: @Sendable (RootedFiles, SandboxRecord) async throws -> T
    ) async throws -> T {
        try await gate.perform(caller, action, target: "\(name):\(path.prefix(256))") {
            let r = try await record(caller, name)
            let pid = try r.state.requireRunning()
            let owner = uid_t(uidBase(r))
            let root = try RootedFiles(root: "/proc/\(pid)/root", owner: (owner, owner))
            // The pid is still this box's init (not a pid reused since the record was read): it is in the
            // box's cgroup, and the root was opened before this check.
            guard let groups = FileSystem.readAll("/proc/\(pid)/cgroup"), groups.contains(r.cgroupPath) else {
                throw VivariumError(.invalidState, "sandbox \(name) is not running")
            }
            return try await body(root, r)
        }
    }

    func info(_ e: RootedFiles.Entry, path: String, _ r: SandboxRecord) -> FileInfo {
        // Host ids of the box's range are shown as the box sees them; others as nobody.
        let base = uidBase(r)
        func inBox(_ id: UInt32) -> Int64 {
            let v = Int64(id) - base
            return (0..<HardenedSpec.idRangeSize).contains(v) ? v : 65534
        }
        return FileInfo(
            path: path, type: e.type, sizeBytes: e.size, mode: String(format: "%04o", e.mode), uid: inBox(e.uid),
            gid: inBox(e.gid), modifiedAt: e.modified, target: e.target)
    }

    public func stat(_ caller: Caller, name: ResourceName, path: String) async throws -> FileInfo {
        try await files(caller, name, .filesRead, path: path) { root, r in info(try root.stat(path), path: path, r) }
    }

    public func list(_ caller: Caller, name: ResourceName, path: String) async throws -> [FileInfo] {
        try await files(caller, name, .filesRead, path: path) { root, r in
            let dir = path.hasSuffix("/") ? path : path + "/"
            return try root.list(path, limit: Self.maxListEntries).map { info($0, path: dir + $0.name, r) }
        }
    }

    /// Opens a regular file for reading: the caller reads and closes the descriptor.
    public func openFile(_ caller: Caller, name: ResourceName, path: String) async throws -> (Int32, FileInfo) {
        try await files(caller, name, .filesRead, path: path) { root, r in
            let fd = try root.open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK)
            var st = Glibc.stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
                close(fd)
                throw VivariumError(.invalidArgument, "\(path) is not a regular file (copy directories as tar)")
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            return (fd, info(try root.stat(path), path: path, r))
        }
    }

    /// Writes a file from the bytes `body` hands over, owned by the box's root.
    public func writeFile(
        _ caller: Caller, name: ResourceName, path: String, mode: String?,
        _ body: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Void) async throws -> Void
    ) async throws -> FileInfo {
        let bits = try Self.mode(mode, default: 0o644)
        return try await files(caller, name, .filesWrite, path: path) { root, r in
            let e = try await root.write(path, mode: bits, limit: Self.maxUploadBytes, body)
            return info(e, path: path, r)
        }
    }

    public func makeDirectory(_ caller: Caller, name: ResourceName, _ request: MakeDirectoryRequest) async throws
        -> FileInfo
    {
        let bits = try Self.mode(request.mode, default: 0o755)
        return try await files(caller, name, .filesWrite, path: request.path) { root, r in
            let e = try root.makeDirectory(request.path, mode: bits, parents: request.parents ?? false)
            return info(e, path: request.path, r)
        }
    }

    public func move(_ caller: Caller, name: ResourceName, _ request: MoveRequest) async throws -> FileInfo {
        try await files(caller, name, .filesWrite, path: request.from) { root, r in
            info(try root.move(request.from, to: request.to), path: request.to, r)
        }
    }

    public func remove(_ caller: Caller, name: ResourceName, path: String, recursive: Bool) async throws {
        try await files(caller, name, .filesWrite, path: path) { root, _ in
            _ = try root.remove(path, recursive: recursive)
        }
    }

    static func mode(_ text: String?, default value: mode_t) throws -> mode_t {
        guard let text else { return value }
        guard let m = mode_t(text, radix: 8), m <= 0o777 else {
            throw VivariumError(.invalidArgument, "mode is octal permission bits, 0 to 0777 (setuid is not set here)")
        }
        return m
    }
}
