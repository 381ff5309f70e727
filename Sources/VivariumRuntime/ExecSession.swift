import Foundation
import Glibc
import Synchronization
import VivariumCore
import VivariumOCI
import VivariumOS

/// A command running in a sandbox: its output as streams, its input, a terminal when it has one, and
/// its own cgroup below the sandbox's. `terminate` (a timeout, a cancelled stream) SIGKILLs everything in
/// that cgroup, so no process the command started survives; a command that ends by itself leaves its
/// background processes running. The session's files and cgroup go back when it is waited for (or
/// dropped).
public final class ExecSession: Sendable {
    public enum IO: Sendable {
        /// stdout and stderr as separate streams; stdin when it was asked for.
        case pipes(stdout: ByteStream?, stderr: ByteStream?, stdin: ByteSink?)
        /// One terminal: output is stdout and stderr interleaved as the terminal shows them.
        case terminal(Terminal)
    }

    /// A terminal's two directions, and its size.
    public struct Terminal: Sendable {
        public let output: ByteStream
        public let input: ByteSink

        /// Sets the window size (the foreground process gets SIGWINCH).
        public func resize(_ size: RuntimeSpec.ConsoleSize) throws {
            try input.withDescriptor { try setWindowSize($0, rows: size.height, columns: size.width) }
                ?? { throw VivariumError(.invalidState, "the terminal is closed") }()
        }
    }

    let crun: ChildProcess
    public let cgroup: Cgroup
    public let io: IO
    let pidFile: String
    let cleanup: @Sendable () -> Void
    let cleaned = Atomic<Bool>(false)
    public let started = ContinuousClock.now

    init(crun: ChildProcess, cgroup: Cgroup, io: IO, pidFile: String, cleanup: @escaping @Sendable () -> Void) {
        self.crun = crun
        self.cgroup = cgroup
        self.io = io
        self.pidFile = pidFile
        self.cleanup = cleanup
    }

    deinit { finish() }

    public var stdout: ByteStream? {
        switch io {
        case .pipes(let out, _, _): out
        case .terminal(let t): t.output
        }
    }

    public var stderr: ByteStream? {
        if case .pipes(_, let err, _) = io { return err }
        return nil
    }

    public var stdin: ByteSink? {
        switch io {
        case .pipes(_, _, let input): input
        case .terminal(let t): t.input
        }
    }

    /// Whether the command (crun, which waits for it) has exited.
    public var hasExited: Bool { crun.hasExited }

    /// Returns once the command has exited (or the task is cancelled); the session stays open.
    public func exited() async { _ = await crun.wait() }

    public var terminal: Terminal? {
        if case .terminal(let t) = io { return t }
        return nil
    }

    /// The command's exit code (128 + the signal when one ended it); the session's files and cgroup are
    /// given back.
    public func wait() async -> Int32 {
        let status = await crun.wait()
        finish()
        return status.code
    }

    /// Sends a signal to the command's process (the pid crun wrote), if it is still in the session's cgroup.
    @discardableResult
    public func signal(_ sig: Int32) -> Bool {
        guard let text = FileSystem.readAll(pidFile), let pid = Int32(text.trimmingCharacters(in: .whitespaces)),
            pid > 0, cgroup.processes.contains(pid)
        else { return false }
        return kill(pid, sig) == 0
    }

    /// SIGKILLs every process of the command; crun, which waits for it, follows. A command that was not
    /// in its cgroup yet (a timeout shorter than its start) joins it before crun can exit, so the cgroup
    /// is killed again until crun has gone (5 s at most, then crun is killed too, and the cgroup once
    /// more): nothing of the command outlives the session, however short the timeout.
    public func terminate() async {
        let deadline = ContinuousClock.now + .seconds(5)
        repeat {
            await cgroup.killAll()
            if await crun.wait(timeout: .milliseconds(20)) != nil { break }
            // A cancelled caller (a dropped stream) still needs the command gone: its waits return at
            // once, so pace the loop here.
            if Task.isCancelled { usleep(20_000) }
        } while ContinuousClock.now < deadline
        if !crun.hasExited {
            crun.signal(SIGKILL)
            if await crun.wait(timeout: .seconds(1)) == nil, Task.isCancelled { usleep(50_000) }
        }
        await cgroup.killAll()
    }

    func finish() {
        if !cleaned.exchange(true, ordering: .acquiringAndReleasing) { cleanup() }
    }

    /// Runs the command to its end, keeping at most `limit` bytes of each stream. At `timeout`, or when
    /// the calling task is cancelled, every process of the command is killed.
    public func outcome(timeout: Duration, limit: Int) async -> ExecOutcome {
        enum Part: Sendable {
            case out([UInt8], Bool)
            case err([UInt8], Bool)
            case status(Int32)
            case watchdog(timedOut: Bool)
        }
        var out: ([UInt8], Bool) = ([], false)
        var err: ([UInt8], Bool) = ([], false)
        var code: Int32 = 255
        var timedOut = false
        await withTaskGroup(of: Part.self) { tasks in
            let (o, e) = (stdout, stderr)
            tasks.addTask {
                guard let o else { return .out([], false) }
                let r = await o.collect(limit: limit)
                return .out(r.bytes, r.truncated)
            }
            tasks.addTask {
                guard let e else { return .err([], false) }
                let r = await e.collect(limit: limit)
                return .err(r.bytes, r.truncated)
            }
            tasks.addTask { .status(await self.crun.wait().code) }
            tasks.addTask {
                let expired = (try? await Task.sleep(for: timeout)) != nil
                // Cancelled because the command ended: nothing to do. Expired, or cancelled from outside
                // while it runs: the command goes.
                guard expired || !self.crun.hasExited else { return .watchdog(timedOut: false) }
                await self.terminate()
                return .watchdog(timedOut: expired)
            }
            var pending = 3
            while pending > 0, let part = await tasks.next() {
                switch part {
                case .out(let b, let t):
                    out = (b, t)
                    pending -= 1
                case .err(let b, let t):
                    err = (b, t)
                    pending -= 1
                case .status(let c):
                    code = c
                    pending -= 1
                case .watchdog(let t): timedOut = t
                }
            }
            tasks.cancelAll()
            for await case .watchdog(let t) in tasks { timedOut = timedOut || t }
        }
        finish()
        // crun answers 255 when the command cannot be found; the shell convention is 127.
        if code == 255 && String(decoding: err.0, as: UTF8.self).contains("not found in $PATH") { code = 127 }
        return ExecOutcome(
            exitCode: code, stdout: out.0, stderr: err.0, stdoutTruncated: out.1, stderrTruncated: err.1,
            timedOut: timedOut, duration: ContinuousClock.now - started)
    }
}
