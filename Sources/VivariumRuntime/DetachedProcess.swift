import Foundation
import Glibc
import VivariumCore
import VivariumOCI
import VivariumOS

/// A command started detached in a sandbox (`vivarium exec -d`), as its files on the host show it. Its
/// keeper, `vivarium-shim`, runs it in a cgroup of its own below the sandbox's, holds its output pipes
/// and writes what they carry to a bounded log in the sandbox's bundle; the command's exit code lands
/// next to it. None of it depends on the daemon: a restart finds every process where it was.
public struct DetachedProcess: Sendable {
    /// What was started, kept beside the log.
    public struct Meta: Codable, Sendable {
        public var id: String
        public var argv: [String]
        public var user: UInt32
        public var workdir: String
        public var startedAt: Date
        public var cgroup: String
        public var stdin: Bool
    }

    public enum State: String, Sendable {
        case running, exited
        /// Neither running nor ended by itself: its keeper was killed with it (the sandbox stopped).
        case lost
    }

    /// The kept output: frames in order, and how many bytes were dropped at the front to stay in bounds.
    public struct Output: Sendable {
        public var frames: [(channel: UInt8, bytes: [UInt8])]
        public var droppedBytes: Int64
    }

    public let dir: String
    public let meta: Meta
    let cgroup: Cgroup

    /// The largest output kept per process, and how many processes a sandbox keeps.
    public static let defaultMaxOutput = 8 << 20
    public static let maxPerSandbox = 64

    init(dir: String, meta: Meta, cgroup: Cgroup) {
        self.dir = dir
        self.meta = meta
        self.cgroup = cgroup
    }

    public var id: String { meta.id }

    /// The command's host pid (crun's pid file), once it started.
    public var pid: Int32? {
        FileSystem.readAll(dir + "/pid").flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The exit code, once it ended.
    public var exitCode: Int32? {
        FileSystem.readAll(dir + "/status").flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// When it ended (the status file's time).
    public var endedAt: Date? {
        (try? FileManager.default.attributesOfItem(atPath: dir + "/status"))?[.modificationDate] as? Date
    }

    public var state: State {
        if exitCode != nil { return .exited }
        return cgroup.isEmpty ? .lost : .running
    }

    /// Sends `sig` to the command's process while it is in its cgroup (never to a recycled pid).
    @discardableResult
    public func signal(_ sig: Int32) -> Bool {
        guard let pid, pid > 0, cgroup.processes.contains(pid) else { return false }
        return Glibc.kill(pid, sig) == 0
    }

    /// SIGKILLs everything of the command, its keeper included.
    public func kill() async { await cgroup.killAll() }

    /// Writes to the command's stdin, all or nothing: what the pipe has no room for is refused, never
    /// waited for (the command is not reading).
    public func input(_ bytes: [UInt8]) throws {
        guard meta.stdin else { throw VivariumError(.invalidArgument, "process \(id) was started without stdin") }
        guard state == .running else { throw VivariumError(.invalidState, "process \(id) is not running") }
        let fd = open(dir + "/stdin", O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw VivariumError(.invalidState, "process \(id) takes no input now") }
        defer { close(fd) }
        // F_GETPIPE_SZ (1032), which Glibc's module does not export.
        let room = Int(fcntl(fd, 1032))
        guard bytes.count <= room else {
            throw VivariumError(.payloadTooLarge, "send at most \(room) bytes at a time")
        }
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else {
            throw VivariumError(
                .rateLimited, "process \(id) is not reading its input fast enough; retry shortly", retryAfterSeconds: 1)
        }
    }

    /// The output kept so far (the older file, then the current one).
    public func output() -> Output {
        var frames: [(UInt8, [UInt8])] = []
        for name in ["output.1", "output"] {
            guard let data = FileManager.default.contents(atPath: dir + "/" + name) else { continue }
            var reader = FrameReader()
            frames += reader.feed(Array(data))
        }
        let dropped = FileSystem.readAll(dir + "/dropped").flatMap {
            Int64($0.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return Output(frames: frames, droppedBytes: dropped ?? 0)
    }

    /// The output as it arrives: what was kept first, then new frames, until the command ended and
    /// everything was delivered (or the task is cancelled). Polls the log every 100 ms.
    public func follow(_ deliver: @Sendable ([(channel: UInt8, bytes: [UInt8])]) async throws -> Void) async throws {
        var reader = FrameReader()
        var current: (fd: Int32, inode: UInt64)?
        defer { if let c = current { close(c.fd) } }
        // What the older file holds, once: the follow then stays on `output` across rotations.
        if let old = FileManager.default.contents(atPath: dir + "/output.1") {
            var r = FrameReader()
            try await deliver(r.feed(Array(old)))
        }
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            try Task.checkCancellation()
            let ended = exitCode != nil || state == .lost
            if current == nil {
                let fd = open(dir + "/output", O_RDONLY | O_CLOEXEC)
                if fd >= 0 { current = (fd, Self.inode(fd: fd)) }
            }
            var got = false
            if let c = current {
                while true {
                    let n = read(c.fd, &buffer, buffer.count)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { break }
                    got = true
                    let frames = reader.feed(Array(buffer[0..<n]))
                    if !frames.isEmpty { try await deliver(frames) }
                }
                // Rotated: the old file was read to its end; the new one starts with a whole frame.
                if let now = Self.inode(path: dir + "/output"), now != c.inode {
                    close(c.fd)
                    current = nil
                    reader = FrameReader()
                    continue
                }
            }
            if ended && !got { return }
            if !got { try await Task.sleep(for: .milliseconds(100)) }
        }
    }

    static func inode(fd: Int32) -> UInt64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    static func inode(path: String) -> UInt64? {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_ino) : nil
    }
}

/// Splits the shim's log into frames: a channel byte, a big-endian 32-bit length, the bytes.
struct FrameReader {
    var pending: [UInt8] = []

    mutating func feed(_ bytes: [UInt8]) -> [(channel: UInt8, bytes: [UInt8])] {
        pending += bytes
        var frames: [(UInt8, [UInt8])] = []
        var at = 0
        while pending.count - at >= 5 {
            let len = pending[(at + 1)..<(at + 5)].reduce(0) { $0 << 8 | Int($1) }
            guard pending.count - at - 5 >= len else { break }
            frames.append((pending[at], Array(pending[(at + 5)..<(at + 5 + len)])))
            at += 5 + len
        }
        pending.removeFirst(at)
        return frames
    }
}

extension HostRuntime {
    func processesDir(_ p: BoxPlan) -> String { p.bundle + "/processes" }

    /// Starts `command` detached under its shim, and returns once it runs (its pid is known) or failed
    /// to start. The oldest ended processes make room when the sandbox keeps `maxPerSandbox`.
    public func detach(_ p: BoxPlan, _ command: ExecCommand, stdin: Bool, maxOutputBytes: Int) async throws
        -> DetachedProcess
    {
        guard let box = box(p.id) else { throw VivariumError(.invalidState, "sandbox must be running") }
        var kept = processes(p)
        if kept.count >= DetachedProcess.maxPerSandbox {
            let ended = kept.filter { $0.state != .running }.sorted { $0.meta.startedAt < $1.meta.startedAt }
            guard let oldest = ended.first else {
                throw VivariumError(
                    .invalidState, "sandbox runs \(DetachedProcess.maxPerSandbox) detached processes, the most it keeps"
                )
            }
            remove(oldest)
            kept.removeAll { $0.id == oldest.id }
        }
        let id = "p" + randomHex(bytes: 6)
        let dir = processesDir(p) + "/" + id
        try FileSystem.makeDirectory(processesDir(p), mode: 0o700)
        try FileSystem.makeDirectory(dir, mode: 0o700)
        let spec = processSpec(box, command, terminal: nil)
        // The spec holds environment values: on the runtime tmpfs, and only until crun has read it.
        let specFile = specDir(p.id) + "/exec/" + id + ".json"
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: specFile, durable: false)
        defer { unlink(specFile) }
        let name = "proc-" + id
        let group = Cgroup(
            name: name, dirs: cgroups.directories(p.cgroupPath).filter(FileSystem.exists).map { $0 + "/" + name })
        try group.create()
        let meta = DetachedProcess.Meta(
            id: id, argv: command.argv, user: command.user, workdir: command.workdir, startedAt: Date(), cgroup: name,
            stdin: stdin)
        let process = DetachedProcess(dir: dir, meta: meta, cgroup: group)
        do {
            try FileSystem.writeAtomically(try JSONEncoder().encode(meta), to: dir + "/meta.json")
            if stdin, mkfifo(dir + "/stdin", 0o600) != 0 {
                throw VivariumError(.runtimeFailure, "cannot make the stdin FIFO: \(String(cString: strerror(errno)))")
            }
            let crun = oci.detachedExec(id: p.id.rawValue, processFile: specFile, cgroup: name, pidFile: dir + "/pid")
            var shim = Command(
                layout.shimBinary,
                [dir, String(maxOutputBytes)] + group.dirs.map { $0 + "/cgroup.procs" } + ["--", crun.executable]
                    + crun.arguments, outputLimit: 4096)
            shim.oomScoreAdjust = layout.oomScoreAdjust
            let out = try await Reaper.shared.run(shim)
            guard out.status == .exited(0) else {
                throw VivariumError(.runtimeFailure, "the shim failed: \(out.stderrString.prefix(300))")
            }
            // Started when crun wrote the pid; a status first means it never ran (crun's reason is in its
            // output, as an exec's would be).
            let deadline = ContinuousClock.now + .seconds(10)
            while process.pid == nil, process.exitCode == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            guard process.pid != nil || process.exitCode != nil else {
                throw VivariumError(.runtimeFailure, "the command did not start within 10 s")
            }
            return process
        } catch {
            await group.killAll()
            remove(process)
            throw error
        }
    }

    /// The sandbox's detached processes, oldest first.
    public func processes(_ p: BoxPlan) -> [DetachedProcess] {
        let root = processesDir(p)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return entries.compactMap { e -> DetachedProcess? in
            guard let data = FileManager.default.contents(atPath: root + "/" + e + "/meta.json"),
                let meta = try? JSONDecoder().decode(DetachedProcess.Meta.self, from: data)
            else { return nil }
            let group = Cgroup(
                name: meta.cgroup, dirs: cgroups.directories(p.cgroupPath).map { $0 + "/" + meta.cgroup })
            let process = DetachedProcess(dir: root + "/" + e, meta: meta, cgroup: group)
            // An ended command's cgroup goes back; its log stays until it makes room for a new one.
            if process.state != .running { group.removeIfEmpty() }
            return process
        }.sorted { $0.meta.startedAt < $1.meta.startedAt }
    }

    func remove(_ process: DetachedProcess) {
        process.cgroup.removeIfEmpty()
        _ = try? FileManager.default.removeItem(atPath: process.dir)
    }
}
