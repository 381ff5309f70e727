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
/// `waitpid(-1)`: each child is reaped through its own pidfd.
public final class Reaper: Sendable {
    public static let shared = Reaper()

    private enum Slot {
        case process(ProcessState)
        case watch(pidfd: Int32, onExit: @Sendable (ExitStatus?) -> Void)
    }

    // Mutated only on the reaper thread once registered.
    private final class ProcessState: @unchecked Sendable {
        let handle: RunningProcess
        var fds: [Int32: Int]  // pipe fd → 0 stdout, 1 stderr
        var out: [[UInt8]] = [[], []]
        var truncated = [false, false]
        let limit: Int
        var status: ExitStatus?
        let continuation: CheckedContinuation<ProcessOutput, Never>
        init(
            handle: RunningProcess, fds: [Int32: Int], limit: Int,
            continuation: CheckedContinuation<ProcessOutput, Never>
        ) {
            self.handle = handle
            self.fds = fds
            self.limit = limit
            self.continuation = continuation
        }
    }

    private struct State: ~Copyable {
        var slots: [UInt64: Slot] = [:]  // key: fd (pidfd or pipe) → slot
        var ownerOfFd: [Int32: UInt64] = [:]
        var nextKey: UInt64 = 1
    }

    private let epfd: Int32
    private let wake: Int32
    private let state = Mutex(State())

    private init() {
        epfd = vv_epoll_create()
        wake = vv_eventfd()
        precondition(epfd >= 0 && wake >= 0, "epoll/eventfd unavailable")
        _ = vv_epoll_add(epfd, wake, 0)
        let t = Thread { [self] in self.loop() }
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
            let ps = ProcessState(
                handle: handle, fds: [outPipe[0]: 0, errPipe[0]: 1], limit: command.outputLimit, continuation: cont)
            state.withLock { s in
                let k = s.nextKey
                s.nextKey += 1
                s.slots[k] = .process(ps)
                s.ownerOfFd[handle.pidfd] = k
                s.ownerOfFd[outPipe[0]] = k
                s.ownerOfFd[errPipe[0]] = k
            }
            for fd in [handle.pidfd, outPipe[0], errPipe[0]] {
                _ = vv_epoll_add(epfd, fd, UInt64(UInt32(bitPattern: fd)))
            }
        }
        return (handle, output)
    }

    /// Watches a process we did not necessarily spawn (a sandbox's init). `onExit` runs once on the
    /// reaper thread when it exits, with its status when it was our child (we are a subreaper).
    /// Returns false when the process is already gone.
    @discardableResult
    public func watch(pid: Int32, onExit: @escaping @Sendable (ExitStatus?) -> Void) -> Bool {
        let fd = vv_pidfd_open(pid)
        guard fd >= 0 else { return false }
        state.withLock { s in
            let k = s.nextKey
            s.nextKey += 1
            s.slots[k] = .watch(pidfd: fd, onExit: onExit)
            s.ownerOfFd[fd] = k
        }
        _ = vv_epoll_add(epfd, fd, UInt64(UInt32(bitPattern: fd)))
        return true
    }

    private func loop() {
        var ready = [UInt64](repeating: 0, count: 64)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = ready.withUnsafeMutableBufferPointer { vv_epoll_wait(epfd, $0.baseAddress, 64, -1) }
            if n < 0 { continue }
            for i in 0..<Int(n) {
                let fd = Int32(truncatingIfNeeded: ready[i])
                if fd == wake {
                    var v: UInt64 = 0
                    _ = read(wake, &v, 8)
                    continue
                }
                handle(fd: fd, buffer: &buf)
            }
        }
    }

    private func handle(fd: Int32, buffer: inout [UInt8]) {
        let slot: (UInt64, Slot)? = state.withLock { s in
            guard let k = s.ownerOfFd[fd], let slot = s.slots[k] else { return nil }
            return (k, slot)
        }
        guard let (key, slot) = slot else {
            _ = vv_epoll_del(epfd, fd)
            return
        }
        switch slot {
        case .watch(let pidfd, let onExit):
            var code: Int32 = 0
            var sig: Int32 = 0
            let r = vv_pidfd_reap(pidfd, &code, &sig)
            let status: ExitStatus? = r == 1 ? (sig != 0 ? .signaled(code) : .exited(code)) : nil
            // r != 1: not our child (adopted after a daemon restart); the pidfd still polls readable
            // once the process exits, which is all a watch needs.
            _ = vv_epoll_del(epfd, pidfd)
            state.withLock { s in
                s.slots[key] = nil
                s.ownerOfFd[pidfd] = nil
            }
            close(pidfd)
            onExit(status)
        case .process(let ps):
            if fd == ps.handle.pidfd {
                var code: Int32 = 0
                var sig: Int32 = 0
                let r = vv_pidfd_reap(fd, &code, &sig)
                if r == 1 {
                    ps.status = sig != 0 ? .signaled(code) : .exited(code)
                    ps.handle.done.withLock { $0 = true }
                    _ = vv_epoll_del(epfd, fd)
                    // Drain whatever the child left in the pipes, then finish: processes it left behind
                    // may keep the pipes open, and their later output is not part of this result.
                    for pfd in ps.fds.keys { drain(pfd, ps, &buffer, final: true) }
                } else if r < 0 {
                    ps.status = .exited(255)
                    _ = vv_epoll_del(epfd, fd)
                    for pfd in ps.fds.keys { drain(pfd, ps, &buffer, final: true) }
                }
            } else {
                drain(fd, ps, &buffer, final: false)
            }
            if ps.status != nil && ps.fds.isEmpty {
                state.withLock { s in
                    s.slots[key] = nil
                    s.ownerOfFd[ps.handle.pidfd] = nil
                }
                close(ps.handle.pidfd)
                ps.continuation.resume(
                    returning: ProcessOutput(
                        status: ps.status!, stdout: ps.out[0], stderr: ps.out[1], stdoutTruncated: ps.truncated[0],
                        stderrTruncated: ps.truncated[1]))
            }
        }
    }

    private func drain(_ fd: Int32, _ ps: ProcessState, _ buffer: inout [UInt8], final: Bool) {
        guard let which = ps.fds[fd] else { return }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                let room = ps.limit - ps.out[which].count
                if room > 0 { ps.out[which].append(contentsOf: buffer[0..<min(room, n)]) }
                if n > room { ps.truncated[which] = true }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) && !final { return }
            if n < 0 && errno == EINTR { continue }
            break
        }
        _ = vv_epoll_del(epfd, fd)
        close(fd)
        ps.fds[fd] = nil
        state.withLock { s in s.ownerOfFd[fd] = nil }
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

/// Makes this process a child subreaper, so that sandbox inits are reparented to the daemon (and
/// reaped by the Reaper through their pidfds) when crun exits after `create`.
public func becomeSubreaper() throws {
    let rc = vv_set_child_subreaper()
    guard rc == 0 else { throw VivariumError(.internalError, "PR_SET_CHILD_SUBREAPER failed") }
}

func posixError(_ what: String, _ code: Int32 = Glibc.errno) -> VivariumError {
    VivariumError(.internalError, "\(what): \(String(cString: strerror(code)))")
}

extension Reaper {
    /// Sends a signal to a process by pid through a fresh pidfd. Returns false if it is gone.
    @discardableResult
    public func signal(pid: Int32, _ sig: Int32) -> Bool {
        let fd = vv_pidfd_open(pid)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return vv_pidfd_send_signal(fd, sig) == 0
    }
}
