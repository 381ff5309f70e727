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
    /// The OOM score adjustment the program starts with (nil: the daemon's own).
    public var oomScoreAdjust: Int?
    /// Bytes kept of each of stdout and stderr; the rest is read and dropped.
    public var outputLimit: Int

    public init(
        _ executable: String, _ arguments: [String], environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        hideCgroup2: Bool = false, oomScoreAdjust: Int? = nil, outputLimit: Int = 1 << 20
    ) {
        self.oomScoreAdjust = oomScoreAdjust
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

/// Output of a child as it arrives: chunks in order, then nil at the end. One consumer. The buffer is
/// bounded: past `limit` the reaper stops reading the pipe until the consumer catches up, so a writer
/// that outpaces its reader blocks on the full pipe instead of filling the daemon's memory.
public final class ByteStream: Sendable {
    struct State {
        var chunks: [[UInt8]] = []
        var buffered = 0
        var finished = false
        var paused = false
        var waiter: CheckedContinuation<[UInt8]?, Never>?
    }
    let state = Mutex(State())
    public let limit: Int
    /// Asks the reaper to read the pipe again (set when the stream is registered).
    let resume = Mutex<(@Sendable () -> Void)?>(nil)

    init(limit: Int) { self.limit = limit }

    /// Appends bytes (reaper thread). True when the reader should stop until `next` drains the buffer.
    func append(_ bytes: ArraySlice<UInt8>) -> Bool {
        let waiter = state.withLock { s -> CheckedContinuation<[UInt8]?, Never>? in
            if let w = s.waiter {
                s.waiter = nil
                return w
            }
            s.chunks.append(Array(bytes))
            s.buffered += bytes.count
            return nil
        }
        if let waiter {
            waiter.resume(returning: Array(bytes))
            return false
        }
        return state.withLock { s in
            if s.buffered >= limit { s.paused = true }
            return s.paused
        }
    }

    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<[UInt8]?, Never>? in
            s.finished = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// The next chunk, or nil at the end of the output (or when the task is cancelled).
    public func next() async -> [UInt8]? {
        let (chunk, wake) = state.withLock { s -> ([UInt8]?, Bool) in
            guard !s.chunks.isEmpty else { return (nil, false) }
            let c = s.chunks.removeFirst()
            s.buffered -= c.count
            let wake = s.paused && s.buffered < limit / 2
            if wake { s.paused = false }
            return (c, wake)
        }
        if wake { resume.withLock { $0 }?() }
        if let chunk { return chunk }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<[UInt8]?, Never>) in
                let now = state.withLock { s -> [UInt8]?? in
                    if !s.chunks.isEmpty {
                        let c = s.chunks.removeFirst()
                        s.buffered -= c.count
                        return .some(c)
                    }
                    if s.finished || Task.isCancelled { return .some(nil) }
                    s.waiter = c
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            let w = state.withLock { s -> CheckedContinuation<[UInt8]?, Never>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            w?.resume(returning: nil)
        }
    }

    /// Everything until the end, keeping at most `limit` bytes (the rest is read and dropped).
    public func collect(limit keep: Int) async -> (bytes: [UInt8], truncated: Bool) {
        var out: [UInt8] = []
        var truncated = false
        while let chunk = await next() {
            let room = keep - out.count
            if room > 0 { out += chunk.prefix(room) }
            if chunk.count > room { truncated = true }
        }
        return (out, truncated)
    }
}

/// Input of a child: writes wait while the pipe (or terminal) is full. Closing it is the child's EOF.
public final class ByteSink: Sendable {
    let fd = Mutex<Int32>(-1)

    /// Takes ownership of `fd` (made non-blocking).
    public init(fd: Int32) {
        _ = vv_set_nonblocking(fd)
        self.fd.withLock { $0 = fd }
    }

    /// Runs `body` with the descriptor while it is open (an ioctl on a terminal, say).
    public func withDescriptor<T>(_ body: (Int32) throws -> T) rethrows -> T? {
        try fd.withLock { f in f >= 0 ? try body(f) : nil }
    }

    deinit { close() }

    public func write(_ bytes: [UInt8]) async throws {
        var off = 0
        while off < bytes.count {
            let (n, err, f) = fd.withLock { f -> (Int, Int32, Int32) in
                guard f >= 0 else { return (-1, EBADF, f) }
                let n = bytes[off...].withUnsafeBytes { Glibc.write(f, $0.baseAddress, $0.count) }
                return (n, errno, f)
            }
            if n > 0 {
                off += n
            } else if n < 0 && err == EINTR {
                continue
            } else if n < 0 && err == EAGAIN {
                await Reaper.shared.writable(f)
                try Task.checkCancellation()
            } else {
                throw VivariumError(.unavailable, "the process no longer reads its input")
            }
        }
    }

    public func close() {
        fd.withLock { f in
            if f >= 0 { Glibc.close(f) }
            f = -1
        }
    }
}

/// A spawned child. Its output streams end when it exits (what it wrote is drained first: processes it
/// left in the background may keep the pipes open, and their later output is not its output).
public final class ChildProcess: Sendable {
    public let pid: Int32
    let pidfd: Int32
    let done = Mutex(false)
    let exited = Event()
    let status = Mutex<ExitStatus?>(nil)
    public let stdout: ByteStream?
    public let stderr: ByteStream?
    public let stdin: ByteSink?
    /// Output streams to finish when the child exits (its pipes, a terminal).
    let streams = Mutex<[UInt64]>([])

    init(pid: Int32, pidfd: Int32, stdout: ByteStream?, stderr: ByteStream?, stdin: ByteSink?) {
        self.pid = pid
        self.pidfd = pidfd
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
    }

    /// Sends a signal through the pidfd (never to a recycled pid). Returns false once it is gone.
    @discardableResult
    public func signal(_ sig: Int32) -> Bool {
        done.withLock { finished in finished ? false : vv_pidfd_send_signal(pidfd, sig) == 0 }
    }

    /// How it ended (waits for it).
    public func wait() async -> ExitStatus {
        await exited.wait()
        return status.withLock { $0 } ?? .exited(255)
    }

    /// How it ended, or nil if it still runs after `timeout`.
    public func wait(timeout: Duration) async -> ExitStatus? {
        await exited.wait(timeout: timeout) ? await wait() : nil
    }

    public var hasExited: Bool { exited.isFired }

    /// Reads `fd` (a terminal's master, say) as an output stream that ends with the child; the fd is the
    /// stream's from now on.
    public func attachOutput(fd: Int32, limit: Int = 256 << 10) -> ByteStream {
        Reaper.shared.attach(fd: fd, to: self, limit: limit)
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
    /// Output buffered per stream before the pipe is left unread.
    public static let streamLimit = 256 << 10
    /// The longest an unregistered child stays a zombie.
    static let straySweepMilliseconds: Int32 = 250

    private enum Role {
        case child(ChildProcess)
        case stream(ByteStream, owner: ChildProcess?)
        case watch(pid: Int32, onExit: @Sendable (ExitStatus?) -> Void)
        /// A one-shot wait for readability or writability.
        case ready(CheckedContinuation<Void, Never>)
    }

    private struct Registration {
        let fd: Int32
        let role: Role
        /// Left out of epoll while its stream's consumer catches up.
        var paused = false
    }

    private struct State: ~Copyable {
        var registrations: [UInt64: Registration] = [:]
        /// Pids with a registration: the stray sweep leaves them alone.
        var pids: Set<Int32> = []
        /// Spawns whose child exists but is not registered yet: the stray sweep waits for them.
        var spawning = 0
        var next: UInt64 = 1

        mutating func token() -> UInt64 {
            defer { next += 1 }
            return next
        }
    }

    private let epfd: Int32
    private let state = Mutex(State())
    fileprivate let sweepsStrays = Atomic<Bool>(false)

    private init() {
        epfd = vv_epoll_create()
        precondition(epfd >= 0, "epoll unavailable")
        let t = Thread { [self] in self.loop() }
        t.name = "vivarium-reaper"
        t.start()
    }

    // MARK: Spawning

    /// Spawns `command` and waits for it, collecting its output up to `command.outputLimit` per stream.
    public func run(_ command: Command) async throws -> ProcessOutput {
        try await output(of: spawn(command), limit: command.outputLimit)
    }

    /// Collects a child's output (up to `limit` bytes per stream) and waits for it.
    public func output(of child: ChildProcess, limit: Int) async -> ProcessOutput {
        async let out = child.stdout?.collect(limit: limit) ?? ([], false)
        async let err = child.stderr?.collect(limit: limit) ?? ([], false)
        let (o, e) = await (out, err)
        return ProcessOutput(
            status: await child.wait(), stdout: o.0, stderr: e.0, stdoutTruncated: o.1,
            stderrTruncated: e.1)
    }

    /// Spawns `command` with its stdout and stderr as streams (or /dev/null), and a stdin sink when
    /// asked (otherwise /dev/null).
    public func spawn(_ command: Command, stdin: Bool = false, captureOutput: Bool = true) throws -> ChildProcess {
        var fds: [Int32] = []
        func pipe(nonblockingRead: Bool) throws -> (Int32, Int32) {
            var p: [Int32] = [0, 0]
            let rc = nonblockingRead ? vv_pipe(&p) : vv_pipe_pair(&p)
            guard rc == 0 else {
                for fd in fds { close(fd) }
                throw posixError("pipe", -rc)
            }
            fds += p
            return (p[0], p[1])
        }
        let out = captureOutput ? try pipe(nonblockingRead: true) : nil
        let err = captureOutput ? try pipe(nonblockingRead: true) : nil
        let input = stdin ? try pipe(nonblockingRead: false) : nil
        let spawned: (Int32, Int32)
        state.withLock { $0.spawning += 1 }
        do {
            spawned = try Self.spawn(command, stdin: input?.0 ?? -1, stdout: out?.1 ?? -1, stderr: err?.1 ?? -1)
        } catch {
            state.withLock { $0.spawning -= 1 }
            for fd in fds { close(fd) }
            throw error
        }
        for fd in [out?.1, err?.1, input?.0].compactMap({ $0 }) { close(fd) }
        let stdoutStream = out.map { _ in ByteStream(limit: Self.streamLimit) }
        let stderrStream = err.map { _ in ByteStream(limit: Self.streamLimit) }
        let child = ChildProcess(
            pid: spawned.0, pidfd: spawned.1, stdout: stdoutStream, stderr: stderrStream,
            stdin: input.map { ByteSink(fd: $0.1) })
        let toAdd = state.withLock { s -> [(Int32, UInt64)] in
            s.pids.insert(child.pid)
            s.spawning -= 1
            var regs: [(Int32, UInt64)] = []
            let t = s.token()
            s.registrations[t] = Registration(fd: child.pidfd, role: .child(child))
            regs.append((child.pidfd, t))
            for (fd, stream) in [(out?.0, stdoutStream), (err?.0, stderrStream)] {
                guard let fd, let stream else { continue }
                let st = s.token()
                s.registrations[st] = Registration(fd: fd, role: .stream(stream, owner: child))
                child.streams.withLock { $0.append(st) }
                regs.append((fd, st))
            }
            return regs
        }
        for (fd, t) in toAdd { arm(fd, t) }
        return child
    }

    /// Registers `fd` as an output stream of `owner`, finished when the owner exits.
    func attach(fd: Int32, to owner: ChildProcess, limit: Int) -> ByteStream {
        _ = vv_set_nonblocking(fd)
        let stream = ByteStream(limit: limit)
        let t = state.withLock { s -> UInt64 in
            let t = s.token()
            s.registrations[t] = Registration(fd: fd, role: .stream(stream, owner: owner))
            return t
        }
        // Under the owner's stream list: either its exit finishes this stream, or it has exited already.
        let exited = owner.streams.withLock { list -> Bool in
            if owner.done.withLock({ $0 }) { return true }
            list.append(t)
            return false
        }
        if exited {
            var buffer = [UInt8](repeating: 0, count: 65536)
            finishStream(t, buffer: &buffer)
        } else {
            arm(fd, t)
        }
        return stream
    }

    /// Returns when `fd` is writable (or in error).
    func writable(_ fd: Int32) async { await ready(fd, write: true) }

    /// Returns when `fd` is readable (or in error): a listening socket with a connection to accept.
    public func readable(_ fd: Int32) async { await ready(fd, write: false) }

    /// One-shot readiness; a cancelled wait returns at once (the registration goes with it).
    private func ready(_ fd: Int32, write: Bool) async {
        let t = state.withLock { $0.token() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let registered = state.withLock { s -> Bool in
                    guard !Task.isCancelled else { return false }
                    s.registrations[t] = Registration(fd: fd, role: .ready(c))
                    return true
                }
                guard registered else { return c.resume() }
                if vv_epoll_add_once(epfd, fd, t, write ? 1 : 0) != 0, let r = take(t) {
                    if case .ready(let c) = r.role { c.resume() }
                }
            }
        } onCancel: {
            if let r = take(t) {
                _ = vv_epoll_del(epfd, r.fd)
                if case .ready(let c) = r.role { c.resume() }
            }
        }
    }

    private func take(_ t: UInt64) -> Registration? { state.withLock { $0.registrations.removeValue(forKey: t) } }

    private func arm(_ fd: Int32, _ t: UInt64) {
        let stream: ByteStream? = state.withLock { s in
            if case .stream(let st, _) = s.registrations[t]?.role { return st }
            return nil
        }
        stream?.resume.withLock { $0 = { [weak self] in self?.rearm(t) } }
        _ = vv_epoll_add(epfd, fd, t)
    }

    /// Reads a paused stream's pipe again.
    private func rearm(_ t: UInt64) {
        let fd = state.withLock { s -> Int32? in
            guard var r = s.registrations[t], r.paused else { return nil }
            r.paused = false
            s.registrations[t] = r
            return r.fd
        }
        if let fd { _ = vv_epoll_add(epfd, fd, t) }
    }

    // MARK: Watching

    /// Watches a process we did not necessarily spawn (a sandbox's init). `onExit` runs once on the
    /// reaper thread when it exits, with its status when it was our child (we are a subreaper).
    /// Returns false when the process is already gone or no pidfd could be opened.
    @discardableResult
    public func watch(pid: Int32, onExit: @escaping @Sendable (ExitStatus?) -> Void) -> Bool {
        let fd = vv_pidfd_open(pid)
        guard fd >= 0 else { return false }
        let t = state.withLock { s -> UInt64 in
            s.pids.insert(pid)
            let t = s.token()
            s.registrations[t] = Registration(fd: fd, role: .watch(pid: pid, onExit: onExit))
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
                guard case .watch(let p, _) = reg.role, p == pid else { continue }
                return vv_pidfd_send_signal(reg.fd, sig) == 0
            }
            return false
        }
    }

    /// Reaps exited children no registration owns (a sandbox init whose create failed half-way, a
    /// process left behind by a killed crun): as a subreaper the daemon inherits them. It peeks with
    /// waitid(P_ALL, WNOWAIT), so a registered child is left to its registration, and nothing is reaped
    /// while a spawn has not registered its child yet. Runs on the reaper thread after every wakeup, in a
    /// subreaper only (`becomeSubreaper`): elsewhere children may belong to other code (Foundation's
    /// `Process` in tests), which waits for them itself.
    private func reapStrays() {
        guard sweepsStrays.load(ordering: .relaxed) else { return }
        while true {
            let pid = vv_peek_exited_child()
            guard pid > 0, state.withLock({ !$0.pids.contains(pid) && $0.spawning == 0 }) else { return }
            _ = vv_reap_pid(pid)
        }
    }

    // MARK: The loop

    private func loop() {
        var ready = [UInt64](repeating: 0, count: 64)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = ready.withUnsafeMutableBufferPointer {
                vv_epoll_wait(epfd, $0.baseAddress, 64, Self.straySweepMilliseconds)
            }
            for i in 0..<Int(max(n, 0)) { handle(token: ready[i], buffer: &buf) }
            reapStrays()
        }
    }

    /// Removes a registration, then closes its fd: the token is gone before the fd number can be reused.
    private func unregister(_ token: UInt64, closing: Bool = true) {
        guard let reg = state.withLock({ $0.registrations.removeValue(forKey: token) }) else { return }
        _ = vv_epoll_del(epfd, reg.fd)
        if closing { close(reg.fd) }
    }

    private func handle(token: UInt64, buffer: inout [UInt8]) {
        guard let reg = state.withLock({ $0.registrations[token] }) else { return }  // a stale event
        switch reg.role {
        case .watch(let pid, let onExit):
            var code: Int32 = 0
            var sig: Int32 = 0
            let r = vv_pidfd_reap(reg.fd, &code, &sig)
            // 0: our child and still running (a spurious wakeup). Below 0: not our child (adopted after
            // a daemon restart); its pidfd polls readable only once it has exited.
            if r == 0 { return }
            let status: ExitStatus? = r == 1 ? (sig != 0 ? .signaled(code) : .exited(code)) : nil
            state.withLock { _ = $0.pids.remove(pid) }
            unregister(token)
            onExit(status)
        case .child(let child):
            var code: Int32 = 0
            var sig: Int32 = 0
            let r = vv_pidfd_reap(reg.fd, &code, &sig)
            if r == 0 { return }
            child.status.withLock { $0 = r == 1 ? (sig != 0 ? .signaled(code) : .exited(code)) : .exited(255) }
            // No signal may go to this pidfd once it is closed.
            let streams = child.streams.withLock { list in
                child.done.withLock { $0 = true }
                return list
            }
            state.withLock { _ = $0.pids.remove(child.pid) }
            unregister(token)
            for t in streams { finishStream(t, buffer: &buffer) }
            child.exited.fire()
        case .stream:
            drain(token, buffer: &buffer, toEnd: false)
        case .ready:
            if let r = take(token), case .ready(let c) = r.role {
                _ = vv_epoll_del(epfd, r.fd)
                c.resume()
            }
        }
    }

    /// Takes what is in a stream's pipe, then ends the stream.
    private func finishStream(_ t: UInt64, buffer: inout [UInt8]) {
        drain(t, buffer: &buffer, toEnd: true)
        guard let reg = state.withLock({ $0.registrations[t] }), case .stream(let stream, _) = reg.role else { return }
        unregister(t)
        stream.finish()
    }

    /// Reads at most `readBudget` chunks (all that is there when `toEnd`); ends the stream at EOF or
    /// error. A full stream buffer leaves the pipe out of epoll until its consumer calls for more.
    private func drain(_ token: UInt64, buffer: inout [UInt8], toEnd: Bool) {
        guard let reg = state.withLock({ $0.registrations[token] }), case .stream(let stream, _) = reg.role else {
            return
        }
        var reads = 0
        while toEnd || reads < Self.readBudget {
            reads += 1
            let n = buffer.withUnsafeMutableBytes { read(reg.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if stream.append(buffer[0..<n]) && !toEnd {
                    state.withLock { s in
                        if var r = s.registrations[token] {
                            r.paused = true
                            s.registrations[token] = r
                        }
                    }
                    _ = vv_epoll_del(epfd, reg.fd)
                    // The consumer may have drained it meanwhile: then read on.
                    if !stream.state.withLock({ $0.paused }) { rearm(token) }
                    return
                }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { return }
            if toEnd { return }  // the caller ends it
            unregister(token)  // EOF, or an error (EIO from a terminal whose other side closed)
            stream.finish()
            return
        }
    }

    static func spawn(_ command: Command, stdin: Int32, stdout: Int32, stderr: Int32) throws -> (Int32, Int32) {
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
                        path: path, argv: av.baseAddress, envp: ev.baseAddress, stdin_fd: stdin, stdout_fd: stdout,
                        stderr_fd: stderr,
                        flags: (command.hideCgroup2 ? VV_SPAWN_HIDE_CGROUP2 : 0)
                            | (command.oomScoreAdjust != nil ? VV_SPAWN_OOM_SCORE : 0),
                        oom_score_adj: Int32(command.oomScoreAdjust ?? 0))
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
/// reaped by the Reaper through their pidfds) when crun exits after `create`; the Reaper then also
/// reaps every orphan it inherits that no registration owns. `false` undoes both (for tests).
public func becomeSubreaper(_ on: Bool = true) throws {
    let rc = vv_set_child_subreaper(on ? 1 : 0)
    guard rc == 0 else { throw VivariumError(.internalError, "PR_SET_CHILD_SUBREAPER failed") }
    Reaper.shared.sweepsStrays.store(on, ordering: .relaxed)
}

func posixError(_ what: String, _ code: Int32 = Glibc.errno) -> VivariumError {
    VivariumError(.internalError, "\(what): \(String(cString: strerror(code)))")
}
