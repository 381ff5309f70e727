import CVivariumOS
import Foundation
import Glibc
import Synchronization
import VivariumCore

/// How a child process ended.
public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// Shell convention: the exit code, or 128 + the signal.
    public var code: Int32 {
        switch self {
        case .exited(let c): c
        case .signaled(let s): 128 + s
        }
    }
    public var description: String {
        switch self {
        case .exited(let c): "exit \(c)"
        case .signaled(let s): "signal \(s)"
        }
    }
}

/// A program to run: an absolute path, argv after argv[0], and the full environment.
public struct Command: Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String]
    /// Run in a private mount namespace without the cgroup2 mount of a hybrid host (see DESIGN.md).
    public var hideCgroup2: Bool
    /// Bytes kept of each of stdout and stderr; the rest is read and dropped.
    public var outputLimit: Int

    public init(
        _ executable: String, _ arguments: [String], environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        hideCgroup2: Bool = false, outputLimit: Int = 1 << 20
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.hideCgroup2 = hideCgroup2
        self.outputLimit = outputLimit
    }
}

public struct ProcessOutput: Sendable {
    public var status: ExitStatus
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool

    public var stdoutString: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrString: String { String(decoding: stderr, as: UTF8.self) }
}

/// A spawned child whose output the reaper collects. `signal` works until the child is reaped.
public final class RunningProcess: Sendable {
    public let pid: Int32
    let pidfd: Int32
    let done: Mutex<Bool> = Mutex(false)

    init(pid: Int32, pidfd: Int32) {
        self.pid = pid
        self.pidfd = pidfd
    }

    /// Sends a signal through the pidfd (never to a recycled pid). Returns false once it is gone.
    @discardableResult
    public func signal(_ sig: Int32) -> Bool {
        done.withLock { finished in
            finished ? false : vv_pidfd_send_signal(pidfd, sig) == 0
        }
    }
}

/// The single reaper of the daemon: one thread with epoll over the pidfds and output pipes of every
/// child it spawned, and the pidfds of watched processes (sandbox inits). It never calls
/// `waitpid(-1)`: each child is reaped through its own pidfd. Every registered fd gets a token that is
/// never reused, so a stale event for a closed (and reused) fd number can never reach a new owner.
public final class Reaper: Sendable {
    public static let shared = Reaper()

    /// Reads of 64 KiB per pipe per wakeup: a sandbox flooding a pipe cannot monopolise the thread.
    static let readBudget = 16

    private enum Role {
        case pidfd
        case pipe(Int)  // 0 stdout, 1 stderr
    }

    private struct Registration {
        let fd: Int32
        let slot: UInt64
        let role: Role
    }

    private enum Slot {
        case process(ProcessState)
        case watch(pid: Int32, onExit: @Sendable (ExitStatus?) -> Void)
    }

    // Mutated only on the reaper thread once registered.
    private final class ProcessState: @unchecked Sendable {
        let handle: RunningProcess
        var pipes: [UInt64: Int32] = [:]  // token → fd
        var pidfdToken: UInt64 = 0
        var out: [[UInt8]] = [[], []]
        var truncated = [false, false]
        let limit: Int
        var status: ExitStatus?
        let continuation: CheckedContinuation<ProcessOutput, Never>
        init(handle: RunningProcess, limit: Int, continuation: CheckedContinuation<ProcessOutput, Never>) {
            self.handle = handle
            self.limit = limit
            self.continuation = continuation
        }
    }

    private struct State: ~Copyable {
        var slots: [UInt64: Slot] = [:]
        var registrations: [UInt64: Registration] = [:]
        /// Pids with a registration: the stray sweep leaves them alone.
        var pids: Set<Int32> = []
        var next: UInt64 = 1

        mutating func token() -> UInt64 {
            defer { next += 1 }
            return next
        }
    }

    private let epfd: Int32
    private let state = Mutex(State())

    private init() {
        epfd = vv_epoll_create()
        precondition(epfd >= 0, "epoll unavailable")
        let t = Thread { [self] in self.loop() }
        t.name = "vivarium-reaper"
        t.start()
    }

    /// Spawns `command` and waits for it to exit, collecting its output.
    public func run(_ command: Command) async throws -> ProcessOutput {
        let (_, output) = try await start(command) { _ in }
        return output
    }

    /// Spawns `command`; `started` runs with the handle right after the spawn (to arm a timeout).
    public func start(
        _ command: Command, started: (RunningProcess) -> Void
    ) async throws -> (RunningProcess, ProcessOutput) {
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard vv_pipe(&outPipe) == 0 else { throw posixError("pipe") }
        guard vv_pipe(&errPipe) == 0 else {
            close(outPipe[0])
            close(outPipe[1])
            throw posixError("pipe")
        }
        let spawned: (Int32, Int32)
        do {
            spawned = try Self.spawn(command, stdout: outPipe[1], stderr: errPipe[1])
        } catch {
            for fd in outPipe + errPipe { close(fd) }
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        let handle = RunningProcess(pid: spawned.0, pidfd: spawned.1)
        started(handle)
        let output = await withCheckedContinuation { (cont: CheckedContinuation<ProcessOutput, Never>) in
            let ps = ProcessState(handle: handle, limit: command.outputLimit, continuation: cont)
            let regs = state.withLock { s -> [(Int32, UInt64)] in
                let slot = s.token()
                s.slots[slot] = .process(ps)
                s.pids.insert(handle.pid)
                var regs: [(Int32, UInt64)] = []
                for (fd, role) in [(handle.pidfd, Role.pidfd), (outPipe[0], .pipe(0)), (errPipe[0], .pipe(1))] {
                    let t = s.token()
                    s.registrations[t] = Registration(fd: fd, slot: slot, role: role)
                    if case .pidfd = role { ps.pidfdToken = t } else { ps.pipes[t] = fd }
                    regs.append((fd, t))
                }
                return regs
            }
            for (fd, t) in regs { _ = vv_epoll_add(epfd, fd, t) }
        }
        return (handle, output)
    }

    /// Watches a process we did not necessarily spawn (a sandbox's init). `onExit` runs once on the
    /// reaper thread when it exits, with its status when it was our child (we are a subreaper).
    /// Returns false when the process is already gone or no pidfd could be opened.
    @discardableResult
    public func watch(pid: Int32, onExit: @escaping @Sendable (ExitStatus?) -> Void) -> Bool {
        let fd = vv_pidfd_open(pid)
        guard fd >= 0 else { return false }
        let t = state.withLock { s -> UInt64 in
            let slot = s.token()
            s.slots[slot] = .watch(pid: pid, onExit: onExit)
            s.pids.insert(pid)
            let t = s.token()
            s.registrations[t] = Registration(fd: fd, slot: slot, role: .pidfd)
            return t
        }
        _ = vv_epoll_add(epfd, fd, t)
        return true
    }

    /// Sends a signal to a watched process through its watch's pidfd, so never to a recycled pid. False
    /// when no watch holds the process any more (it exited) or the signal could not be sent.
    @discardableResult
    public func signal(watched pid: Int32, _ sig: Int32) -> Bool {
        state.withLock { s in
            for reg in s.registrations.values {
                guard case .watch(let p, _) = s.slots[reg.slot], p == pid else { continue }
                return vv_pidfd_send_signal(reg.fd, sig) == 0
            }
            return false
        }
    }

    /// Reaps zombie children nobody registered (a sandbox init whose create failed half-way, a process
    /// orphaned by a killed crun): as a subreaper the daemon inherits them.
    public func reapStrays() {
        let me = getpid()
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(me)/task")) ?? []
        var children: Set<Int32> = []
        for t in tasks {
            let text = FileSystem.readAll("/proc/\(me)/task/\(t)/children") ?? ""
            for p in text.split(separator: " ") {
                if let pid = Int32(p.trimmingCharacters(in: .whitespacesAndNewlines)) { children.insert(pid) }
            }
        }
        let registered = state.withLock { $0.pids }
        for pid in children.subtracting(registered) where processState(pid) == "Z" {
            let fd = vv_pidfd_open(pid)
            guard fd >= 0 else { continue }
            var code: Int32 = 0
            var sig: Int32 = 0
            _ = vv_pidfd_reap(fd, &code, &sig)
            close(fd)
        }
    }

    private func loop() {
        var ready = [UInt64](repeating: 0, count: 64)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = ready.withUnsafeMutableBufferPointer { vv_epoll_wait(epfd, $0.baseAddress, 64, -1) }
            if n < 0 { continue }
            for i in 0..<Int(n) {
                handle(token: ready[i], buffer: &buf)
            }
        }
    }

    /// Removes a registration, then closes its fd: the token is gone before the fd number can be reused.
    private func unregister(_ token: UInt64) {
        guard let reg = state.withLock({ $0.registrations.removeValue(forKey: token) }) else { return }
        _ = vv_epoll_del(epfd, reg.fd)
        close(reg.fd)
    }

    private func handle(token: UInt64, buffer: inout [UInt8]) {
        let found: (Registration, Slot)? = state.withLock { s in
            guard let reg = s.registrations[token], let slot = s.slots[reg.slot] else { return nil }
            return (reg, slot)
        }
        guard let (reg, slot) = found else { return }  // stale event of a removed registration
        switch slot {
        case .watch(let pid, let onExit):
            var code: Int32 = 0
            var sig: Int32 = 0
            let r = vv_pidfd_reap(reg.fd, &code, &sig)
            // 0: our child and still running (a spurious wakeup). Below 0: not our child (adopted after
            // a daemon restart); its pidfd polls readable only once it has exited.
            if r == 0 { return }
            let status: ExitStatus? = r == 1 ? (sig != 0 ? .signaled(code) : .exited(code)) : nil
            state.withLock { s in
                s.slots[reg.slot] = nil
                s.pids.remove(pid)
            }
            unregister(token)
            onExit(status)
        case .process(let ps):
            switch reg.role {
            case .pidfd:
                var code: Int32 = 0
                var sig: Int32 = 0
                let r = vv_pidfd_reap(reg.fd, &code, &sig)
                if r == 0 { return }
                ps.status = r == 1 ? (sig != 0 ? .signaled(code) : .exited(code)) : .exited(255)
                // No signal may go to this pidfd once it is closed.
                ps.handle.done.withLock { $0 = true }
                unregister(token)
                // Take what the child left in the pipes, then finish: processes it left behind may keep
                // the pipes open, and their later output is not part of this result.
                for (t, fd) in ps.pipes {
                    drain(fd, token: t, ps, &buffer)
                    if ps.pipes[t] != nil {
                        ps.pipes[t] = nil
                        unregister(t)
                    }
                }
            case .pipe:
                drain(reg.fd, token: token, ps, &buffer)
            }
            if ps.status != nil && ps.pipes.isEmpty {
                state.withLock { s in
                    s.slots[reg.slot] = nil
                    s.pids.remove(ps.handle.pid)
                }
                ps.continuation.resume(
                    returning: ProcessOutput(
                        status: ps.status!, stdout: ps.out[0], stderr: ps.out[1], stdoutTruncated: ps.truncated[0],
                        stderrTruncated: ps.truncated[1]))
            }
        }
    }

    /// Reads at most `readBudget` chunks; closes the pipe at EOF or error. When the budget runs out
    /// the pipe stays registered and epoll (level-triggered) calls again.
    private func drain(_ fd: Int32, token: UInt64, _ ps: ProcessState, _ buffer: inout [UInt8]) {
        guard let reg = state.withLock({ $0.registrations[token] }), case .pipe(let which) = reg.role else { return }
        for _ in 0..<Self.readBudget {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                let room = ps.limit - ps.out[which].count
                if room > 0 { ps.out[which].append(contentsOf: buffer[0..<min(room, n)]) }
                if n > room { ps.truncated[which] = true }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            ps.pipes[token] = nil  // EOF or error
            unregister(token)
            return
        }
    }

    static func spawn(_ command: Command, stdout: Int32, stderr: Int32) throws -> (Int32, Int32) {
        let argv = [command.executable] + command.arguments
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = command.environment.map { strdup($0) } + [nil]
        defer {
            for p in cArgv { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        var pidfd: Int32 = -1
        let rc = command.executable.withCString { path in
            cArgv.withUnsafeBufferPointer { av in
                cEnv.withUnsafeBufferPointer { ev in
                    var attr = vv_spawn_attr(
                        path: path, argv: av.baseAddress, envp: ev.baseAddress, stdin_fd: -1, stdout_fd: stdout,
                        stderr_fd: stderr, flags: command.hideCgroup2 ? VV_SPAWN_HIDE_CGROUP2 : 0)
                    return vv_spawn(&attr, &pid, &pidfd)
                }
            }
        }
        guard rc == 0 else {
            throw VivariumError(
                .runtimeFailure, "cannot run \(command.executable): \(String(cString: strerror(-rc)))")
        }
        return (pid, pidfd)
    }
}

/// The state letter of /proc/PID/stat ("R", "S", "Z", …), or nil when the process is gone.
public func processState(_ pid: Int32) -> Character? {
    guard pid > 0, let stat = FileSystem.readAll("/proc/\(pid)/stat"),
        let rp = stat.lastIndex(of: ")"), stat.distance(from: rp, to: stat.endIndex) > 2
    else { return nil }
    return stat[stat.index(rp, offsetBy: 2)]
}

/// Makes this process a child subreaper, so that sandbox inits are reparented to the daemon (and
/// reaped by the Reaper through their pidfds) when crun exits after `create`.
public func becomeSubreaper() throws {
    let rc = vv_set_child_subreaper()
    guard rc == 0 else { throw VivariumError(.internalError, "PR_SET_CHILD_SUBREAPER failed") }
}

func posixError(_ what: String, _ code: Int32 = Glibc.errno) -> VivariumError {
    VivariumError(.internalError, "\(what): \(String(cString: strerror(code)))")
}
