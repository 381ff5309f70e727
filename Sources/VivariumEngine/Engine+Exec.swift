import Foundation
import Glibc
import Synchronization
import VivariumCore
import VivariumOS
import VivariumRuntime

extension Engine {
    /// Runs a command in a running sandbox and returns its output. The command runs under the
    /// sandbox's init in exec-wrapper mode (a subreaper), with exactly the init's hardening; a timeout
    /// makes the wrapper SIGKILL every process the command started.
    public func exec(tenant: String, name: String, _ req: ExecRequest) async throws -> ExecResult {
        let argv = try Self.validate(req)
        let r = try record(tenant: tenant, name: name)
        _ = try r.state.requireRunning()
        let timeout = req.timeoutSeconds ?? ExecRequest.defaultTimeout
        let limit = req.maxOutputBytes ?? ExecRequest.defaultMaxOutput
        let uid = req.user ?? 0
        var env = r.spec.env
        for (k, v) in req.env ?? [:] { env[k] = v }
        if uid != 0 && env["HOME"] == nil { env["HOME"] = "/" }
        let process = HardenedSpec.process(
            args: [HardenedSpec.initPath, "-x", "-t", String(Int64(timeout * 1000)), "--"] + argv, env: env,
            cwd: req.workdir ?? "/", uid: uid, gid: uid)

        let token = randomHex(bytes: 8)
        let processFile = "\(r.bundle)/exec/\(token).json"
        let pidFile = "\(r.bundle)/exec/\(token).pid"
        try FileSystem.writeAtomically(try JSONEncoder().encode(process), to: processFile, durable: false)
        defer {
            unlink(processFile)
            unlink(pidFile)
        }
        let started = ContinuousClock.now
        let timedOut = Flag()
        let timer = Flag.TaskSlot()
        let out = try await runtime.exec(
            id: r.id.rawValue, processFile: processFile, pidFile: pidFile, outputLimit: limit
        ) { crunProcess in
            timer.set(
                Task {
                    // The wrapper enforces the deadline itself (-t). This is the backstop for a wrapper
                    // that did not: signal it directly, then end crun.
                    let backstop = Int64(timeout * 1000) + 2000
                    guard (try? await Task.sleep(for: .milliseconds(backstop))) != nil else { return }
                    timedOut.set()
                    for _ in 0..<20 where !Self.terminateExec(pidFile: pidFile) {
                        guard (try? await Task.sleep(for: .milliseconds(100))) != nil else { return }
                    }
                    guard (try? await Task.sleep(for: .seconds(5))) != nil else { return }
                    crunProcess.signal(SIGKILL)
                })
        }
        timer.cancel()
        let elapsed = ContinuousClock.now - started
        if out.status.code == 137 && elapsed >= .milliseconds(Int64(timeout * 1000)) { timedOut.set() }
        return ExecResult(
            exitCode: out.status.code, stdout: Data(out.stdout), stderr: Data(out.stderr),
            stdoutTruncated: out.stdoutTruncated, stderrTruncated: out.stderrTruncated,
            timedOut: timedOut.isSet,
            durationMs: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
    }

    /// Signals the exec wrapper (host pid from crun's pid file) through a pidfd.
    @discardableResult
    static func terminateExec(pidFile: String) -> Bool {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0
        else { return false }
        return Reaper.shared.signal(pid: pid, SIGTERM)
    }

    static func validate(_ req: ExecRequest) throws -> [String] {
        guard !req.argv.isEmpty, !req.argv[0].isEmpty else {
            throw VivariumError(.invalidArgument, "argv must name a command")
        }
        guard req.argv.count <= ExecRequest.maxArgs,
            req.argv.reduce(0, { $0 + $1.utf8.count }) <= ExecRequest.maxArgvBytes,
            req.argv.allSatisfy({ !$0.utf8.contains(0) })
        else { throw VivariumError(.invalidArgument, "argv is too long or holds a NUL byte") }
        try FieldRules.validateEnv(req.env ?? [:])
        if let w = req.workdir {
            guard w.hasPrefix("/"), w.utf8.count <= 4096, !w.utf8.contains(0) else {
                throw VivariumError(.invalidArgument, "workdir must be an absolute path")
            }
        }
        if let t = req.timeoutSeconds, !(t > 0 && t <= ExecRequest.maxTimeout) {
            throw VivariumError(
                .invalidArgument, "timeout must be between 0 and \(Int(ExecRequest.maxTimeout)) seconds")
        }
        if let m = req.maxOutputBytes, !(0...ExecRequest.maxOutputCap).contains(m) {
            throw VivariumError(.invalidArgument, "max_output_bytes must be between 0 and \(ExecRequest.maxOutputCap)")
        }
        if let u = req.user, u > 65535 {
            throw VivariumError(.invalidArgument, "user must be a uid inside the sandbox (0-65535)")
        }
        return req.shell == true ? ["/bin/sh", "-c", req.argv.joined(separator: " ")] : req.argv
    }
}

/// A flag set once from any thread.
final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }

    /// Holds a task to cancel later.
    final class TaskSlot: Sendable {
        private let task = Mutex<Task<Void, Never>?>(nil)
        func set(_ t: Task<Void, Never>) { task.withLock { $0 = t } }
        func cancel() { task.withLock { $0?.cancel() } }
    }
}
