import Foundation
import Glibc
import VivariumCore
import VivariumRuntime

/// Detached processes: commands that outlive the call that started them (a server, a long build). Each
/// runs under its own keeper on the host, in a cgroup below its sandbox's, with its output kept in a
/// bounded log; a daemon restart loses none of them, and the sandbox's stop or deletion ends them all.
extension Sandboxes {
    /// The largest output a process may keep.
    public static let maxProcessOutput = 64 << 20

    public func startProcess(_ caller: Caller, name: ResourceName, _ command: ExecCommand, stdin: Bool, maxOutput: Int?)
        async throws -> ProcessSummary
    {
        let keep = maxOutput ?? DetachedProcess.defaultMaxOutput
        guard (4096...Self.maxProcessOutput).contains(keep) else {
            throw VivariumError(.invalidArgument, "max_output_bytes must be in 4096...\(Self.maxProcessOutput)")
        }
        return try await gate.perform(caller, .sandboxExec, target: name.rawValue) {
            let r = try await record(caller, name)
            _ = try r.state.requireRunning()
            try await audit.append([execIntent(r, command, ["detached": "true", "stdin": String(stdin)])])
            do {
                let p = try await runtime.detach(plan(r), command, stdin: stdin, maxOutputBytes: keep)
                await recordOutcome(
                    event("sandbox.exec", r, details: ["process": p.id, "pid": p.pid.map(String.init) ?? "-"]))
                return Self.summary(p)
            } catch {
                await recordOutcome(event("sandbox.exec", r, .failed, details: ["error": "\(error)"]))
                throw error
            }
        }
    }

    public func processes(_ caller: Caller, name: ResourceName) async throws -> [ProcessSummary] {
        try await gate.perform(caller, .processList, target: name.rawValue) {
            runtime.processes(plan(try await record(caller, name))).map(Self.summary)
        }
    }

    public func processLogs(_ caller: Caller, name: ResourceName, id: String) async throws -> ProcessLogs {
        try await gate.perform(caller, .processList, target: "\(name):\(id.prefix(64))") {
            let p = try await process(caller, name, id)
            let out = p.output()
            return ProcessLogs(
                process: Self.summary(p), stdout: Data(out.frames.filter { $0.channel == 1 }.flatMap(\.bytes)),
                stderr: Data(out.frames.filter { $0.channel == 2 }.flatMap(\.bytes)), droppedBytes: out.droppedBytes)
        }
    }

    /// Whether the caller's sandbox `name` has process `id` (a door's check before a stream).
    public func checkProcess(_ caller: Caller, name: ResourceName, id: String) async throws {
        try await gate.perform(caller, .processList, target: "\(name):\(id.prefix(64))", check: true) {
            _ = try await process(caller, name, id)
        }
    }

    /// Delivers the process's kept output, then new output as it comes, until it ended (see
    /// `DetachedProcess.follow`); returns its summary then.
    public func followProcess(
        _ caller: Caller, name: ResourceName, id: String,
        _ deliver: @escaping @Sendable ([(channel: UInt8, bytes: [UInt8])]) async throws -> Void
    ) async throws -> ProcessSummary {
        let p = try await gate.perform(caller, .processList, target: "\(name):\(id.prefix(64))") {
            try await process(caller, name, id)
        }
        try await p.follow(deliver)
        return Self.summary(p)
    }

    public func signalProcess(_ caller: Caller, name: ResourceName, id: String, signal: String) async throws
        -> ProcessSummary
    {
        guard let number = StreamControl.signalNumber(signal) else {
            throw VivariumError(
                .invalidArgument,
                "signal must be one of \(StreamControl.signals.keys.sorted().joined(separator: ", ")) or 1...64")
        }
        return try await gate.perform(caller, .processControl, target: "\(name):\(id.prefix(64))") {
            let r = try await record(caller, name)
            let p = try await process(caller, name, id)
            guard p.state == .running, p.signal(number) else {
                throw VivariumError(.invalidState, "process \(id) is not running")
            }
            try await audit.append([
                event("process.signal", r, details: ["process": id, "signal": String(number)])
            ])
            // A signal that ends the command is seen in the answer when it ends soon.
            for _ in 0..<50 where p.state == .running { try await Task.sleep(for: .milliseconds(20)) }
            return Self.summary(p)
        }
    }

    public func processInput(_ caller: Caller, name: ResourceName, id: String, _ data: Data) async throws
        -> ProcessSummary
    {
        try await gate.perform(caller, .processControl, target: "\(name):\(id.prefix(64))") {
            let r = try await record(caller, name)
            let p = try await process(caller, name, id)
            try p.input(Array(data))
            try await audit.append([event("process.input", r, details: ["process": id, "bytes": String(data.count)])])
            return Self.summary(p)
        }
    }

    /// The caller's sandbox's process `id`. A missing one is an invalid argument: 404 answers for the
    /// sandbox itself.
    func process(_ caller: Caller, _ name: ResourceName, _ id: String) async throws -> DetachedProcess {
        let r = try await record(caller, name)
        guard let p = runtime.processes(plan(r)).first(where: { $0.id == id }) else {
            throw VivariumError(.invalidArgument, "sandbox \(name) has no process \(id.prefix(64))")
        }
        return p
    }

    static func summary(_ p: DetachedProcess) -> ProcessSummary {
        let state = p.state
        return ProcessSummary(
            id: p.id, argv: p.meta.argv, user: p.meta.user, workdir: p.meta.workdir, state: state.rawValue,
            pid: state == .running ? p.pid : nil, exitCode: p.exitCode, stdin: p.meta.stdin,
            startedAt: p.meta.startedAt, endedAt: p.endedAt)
    }
}
