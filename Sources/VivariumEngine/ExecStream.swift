import Foundation
import Glibc
import VivariumCore
import VivariumOCI
import VivariumRuntime

/// What passed through a streamed exec, as the door counted it.
public struct StreamTally: Sendable {
    public var stdoutBytes: Int64 = 0
    public var stderrBytes: Int64 = 0
    public var stdinBytes: Int64 = 0
    public init() {}
}

/// How a streamed exec ended.
public struct StreamEnd: Sendable, Equatable {
    public enum Reason: String, Sendable {
        /// The command exited by itself (or by a signal the caller sent).
        case exited
        /// Its timeout fired: every process of the command was killed.
        case timedOut = "timed_out"
        /// The caller's credentials stopped being valid (revoked, expired): the command was killed.
        case revoked
        /// The caller went away before the command ended: the command was killed.
        case disconnected
    }
    public let exitCode: Int32
    public let reason: Reason
}

/// A streamed command's input and output, as a door moves them.
public struct ExecStreamIO: Sendable {
    let session: ExecSession

    /// The output channels the command has: stdout and stderr, or stdout alone for a terminal.
    public var outputs: [StreamChannel] { session.stderr == nil ? [.stdout] : [.stdout, .stderr] }
    public var isTerminal: Bool { session.terminal != nil }
    public var acceptsInput: Bool { session.stdin != nil }

    /// The next output chunk of `channel`; nil at its end (or when the task is cancelled).
    public func next(_ channel: StreamChannel) async -> [UInt8]? {
        await (channel == .stderr ? session.stderr : session.stdout)?.next()
    }

    /// Writes input, waiting while the command does not read it.
    public func write(_ bytes: [UInt8]) async throws {
        guard let stdin = session.stdin else {
            throw VivariumError(.invalidArgument, "this command takes no input (ask for stdin or tty)")
        }
        try await stdin.write(bytes)
    }

    /// Ends the input: closes stdin, or types ^D on a terminal (its line discipline's end of input).
    public func closeInput() async throws {
        if let t = session.terminal { try await t.input.write([4]) } else { session.stdin?.close() }
    }

    public func resize(rows: UInt16, columns: UInt16) throws {
        guard let t = session.terminal else { throw VivariumError(.invalidArgument, "resize needs tty") }
        try t.resize(.init(height: rows, width: columns))
    }

    /// Sends a signal to the command's process.
    public func signal(_ number: Int32) { session.signal(number) }

    /// Returns once the command has exited (or the task is cancelled).
    public func exited() async { await session.exited() }
}

extension Sandboxes {
    /// How often a stream's credentials are checked again.
    static let streamRecheck = Duration.seconds(2)

    /// Whether `caller` may exec in its running sandbox `name`: a door's check before it commits to a
    /// stream (a WebSocket upgrade), so a refusal is an HTTP answer. Only failures are recorded.
    public func checkExec(_ caller: Caller, name: ResourceName) async throws {
        try await gate.perform(caller, .sandboxExec, target: name.rawValue, check: true) {
            _ = try await record(caller, name).state.requireRunning()
        }
    }

    /// Runs a command with its input and output streamed by a door: `pump` moves the session's bytes
    /// (it returns once the command exited and its output was sent, or when its caller went away) and
    /// reports what passed.
    /// The command is killed at its timeout, when `stillValid` says the caller's credentials no longer hold
    /// (asked every 2 s), and when `pump` returns while it still runs. Recorded like `exec`: an intent
    /// before it runs, then the outcome with byte counts, never the bytes.
    public func execStream(
        _ caller: Caller, name: ResourceName, _ command: ExecCommand, terminal: (rows: UInt16, columns: UInt16)?,
        stdin: Bool, stillValid: @escaping @Sendable () async -> Bool,
        pump: @escaping @Sendable (ExecStreamIO) async -> StreamTally
    ) async throws -> StreamEnd {
        try await gate.perform(caller, .sandboxExec, target: name.rawValue) {
            let r = try await record(caller, name)
            _ = try r.state.requireRunning()
            // Nothing is buffered past the streams' own bounds (256 KiB each way).
            let ticket = try execs.admit(tenant: r.tenant, sandbox: r.id, bytes: 2 * (256 << 10))
            defer { execs.release(ticket) }
            try await audit.append([
                execIntent(r, command, ["stream": "true", "tty": String(terminal != nil), "stdin": String(stdin)])
            ])
            let session: ExecSession
            do {
                session = try await runtime.start(
                    plan(r), command, terminal: terminal.map { .init(height: $0.rows, width: $0.columns) },
                    stdin: stdin)
            } catch {
                await recordOutcome(event("sandbox.exec", r, .failed, details: ["error": "\(error)"]))
                throw error
            }
            enum Part: Sendable {
                case pumped(StreamTally)
                case stopped(StreamEnd.Reason?)
            }
            var stopped: StreamEnd.Reason?
            var tally = StreamTally()
            await withTaskGroup(of: Part.self) { tasks in
                tasks.addTask { .pumped(await pump(ExecStreamIO(session: session))) }
                tasks.addTask {
                    let deadline = ContinuousClock.now + command.timeout
                    while ContinuousClock.now < deadline {
                        guard (try? await Task.sleep(for: min(Self.streamRecheck, deadline - .now))) != nil else {
                            return .stopped(nil)
                        }
                        if ContinuousClock.now < deadline, await !stillValid() {
                            await session.terminate()
                            return .stopped(.revoked)
                        }
                    }
                    await session.terminate()
                    return .stopped(.timedOut)
                }
                // The watchdog's end is not the stream's: the pump still sends what the command wrote.
                while let part = await tasks.next() {
                    switch part {
                    case .stopped(let why): stopped = stopped ?? why
                    case .pumped(let t):
                        tally = t
                        tasks.cancelAll()
                    }
                }
            }
            if !session.hasExited {
                stopped = stopped ?? .disconnected
                await session.terminate()
            }
            let code = await session.wait()
            let end = StreamEnd(exitCode: code, reason: stopped ?? .exited)
            await recordOutcome(
                event(
                    "sandbox.exec", r, end.reason == .exited ? .ok : .failed,
                    details: [
                        "exit_code": String(code), "ended": end.reason.rawValue,
                        "timed_out": String(end.reason == .timedOut),
                        "duration_ms": String(Int((ContinuousClock.now - session.started).milliseconds.rounded())),
                        "stdout_bytes": String(tally.stdoutBytes), "stderr_bytes": String(tally.stderrBytes),
                        "stdin_bytes": String(tally.stdinBytes),
                    ]))
            return end
        }
    }
}
