import Foundation
import Glibc
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumStore

extension Engine {
    /// Runs a command in a running sandbox and returns its output. The command runs with exactly the
    /// init's hardening, in a cgroup of its own below the sandbox's: a timeout freezes that cgroup and
    /// SIGKILLs everything in it, so no process the command started (detached, re-parented or not)
    /// survives. Processes a finished command left in the background keep running.
    ///
    /// The trail gets an intent record before the command runs (no record, no run) and an outcome record
    /// after: the argument vector redacted, environment names but never values, never the output.
    public func exec(tenant: String, name: String, _ req: ExecRequest) async throws -> ExecResult {
        let argv = try Self.validate(req)
        let r = try record(tenant: tenant, name: name)
        _ = try r.state.requireRunning()
        try audit.append([
            event(
                "sandbox.exec", r, .started,
                details: [
                    "argv": Redactor.commandLine(argv), "user": String(req.user ?? 0), "workdir": req.workdir ?? "/",
                    "timeout_seconds": String(req.timeoutSeconds ?? ExecRequest.defaultTimeout),
                    "env_keys": (req.env ?? [:]).keys.sorted().joined(separator: ","),
                ])
        ])
        do {
            let result = try await run(r, argv, req)
            recordOutcome(
                event(
                    "sandbox.exec", r, result.timedOut ? .failed : .ok,
                    details: [
                        "exit_code": String(result.exitCode), "timed_out": String(result.timedOut),
                        "duration_ms": String(Int(result.durationMs.rounded())),
                        "stdout_bytes": String(result.stdout.count), "stderr_bytes": String(result.stderr.count),
                    ]))
            return result
        } catch {
            recordOutcome(event("sandbox.exec", r, .failed, details: ["error": "\(error)"]))
            throw error
        }
    }

    /// The outcome of something that already happened: a failure to record it cannot undo it, so it is
    /// logged (the intent record is in the trail).
    func recordOutcome(_ e: AuditEvent) {
        do { try audit.append([e]) } catch {
            logger.critical("cannot record an outcome", metadata: ["action": "\(e.action)", "error": "\(error)"])
        }
    }

    func run(_ r: SandboxRecord, _ argv: [String], _ req: ExecRequest) async throws -> ExecResult {
        let timeout = req.timeoutSeconds ?? ExecRequest.defaultTimeout
        let limit = req.maxOutputBytes ?? ExecRequest.defaultMaxOutput
        let uid = req.user ?? 0
        var env = r.spec.env
        for (k, v) in req.env ?? [:] { env[k] = v }
        if uid != 0 && env["HOME"] == nil { env["HOME"] = "/" }
        let process = HardenedSpec.process(args: argv, env: env, cwd: req.workdir ?? "/", uid: uid, gid: uid)

        let token = randomHex(bytes: 8)
        let processFile = "\(r.bundle)/exec/\(token).json"
        try FileSystem.writeAtomically(try JSONEncoder().encode(process), to: processFile, durable: false)
        let group = try acquireExecCgroup(r)
        defer {
            unlink(processFile)
            releaseExecCgroup(r, group)
        }
        let started = ContinuousClock.now
        let timedOut = Flag()
        let timer = Flag.TaskSlot()
        let out = try await runtime.exec(
            id: r.id.rawValue, processFile: processFile, cgroup: group.name, outputLimit: limit
        ) { crunProcess in
            timer.set(
                Task {
                    guard (try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))) != nil else { return }
                    timedOut.set()
                    await group.killAll()
                    // Everything in the cgroup is gone; crun follows. If it lingers, end it.
                    guard (try? await Task.sleep(for: .seconds(5))) != nil else { return }
                    crunProcess.signal(SIGKILL)
                })
        }
        timer.cancel()
        let elapsed = ContinuousClock.now - started
        var code = out.status.code
        // crun answers 255 when the command cannot be found; the shell convention is 127.
        if code == 255 && out.stderrString.contains("not found in $PATH") { code = 127 }
        return ExecResult(
            exitCode: code, stdout: Data(out.stdout), stderr: Data(out.stderr),
            stdoutTruncated: out.stdoutTruncated, stderrTruncated: out.stderrTruncated,
            timedOut: timedOut.isSet,
            durationMs: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
    }

    /// An empty exec cgroup of the sandbox: a pooled one, or a new one. Creating one costs a directory
    /// per hierarchy (about 0.8 ms here), so finished execs hand theirs back.
    func acquireExecCgroup(_ r: SandboxRecord) throws -> ExecCgroup {
        while let g = execCgroupPool.withLock({ $0[r.id]?.popLast() }) {
            if g.isEmpty && g.dirs.allSatisfy(FileSystem.exists) { return g }
        }
        let name = "exec-" + randomHex(bytes: 8)
        let g = ExecCgroup(name: name, dirs: execCgroupDirs(r, name))
        try g.create()
        return g
    }

    /// Returns an empty exec cgroup to the pool (a few per sandbox); one that still holds processes the
    /// command left in the background stays until the sandbox goes.
    func releaseExecCgroup(_ r: SandboxRecord, _ g: ExecCgroup) {
        guard g.isEmpty else { return }
        let pooled = execCgroupPool.withLock { pool -> Bool in
            guard pool[r.id, default: []].count < 4 else { return false }
            pool[r.id, default: []].append(g)
            return true
        }
        if !pooled { g.removeIfEmpty() }
    }

    /// The directories of an exec's cgroup: below the sandbox's cgroup in every v1 hierarchy that holds
    /// it (crun exec --cgroup joins the sub-cgroup only where it exists and would leave the process in
    /// its own cgroup elsewhere, outside the sandbox's limits), or the one v2 directory.
    func execCgroupDirs(_ r: SandboxRecord, _ name: String) -> [String] {
        sandboxCgroups(r).filter(FileSystem.exists).map { $0 + "/" + name }
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

/// The cgroup of one exec, below its sandbox's cgroup.
struct ExecCgroup: Sendable {
    let name: String
    let dirs: [String]

    func create() throws {
        guard !dirs.isEmpty else {
            throw VivariumError(.runtimeFailure, "the sandbox has no cgroup to run an exec in")
        }
        for d in dirs {
            guard mkdir(d, 0o755) == 0 || errno == EEXIST else {
                throw VivariumError(.runtimeFailure, "cannot create the exec cgroup \(d)")
            }
            // A new v1 cpuset is empty and takes no process until it has the parent's CPUs and nodes.
            if d.contains("/cpuset/") {
                let parent = (d as NSString).deletingLastPathComponent
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = (FileSystem.readAll(parent + "/" + f) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                    _ = try? v.write(toFile: d + "/" + f, atomically: false, encoding: .utf8)
                }
            }
        }
    }

    /// Removes the cgroup unless processes the command left in the background still live in it (they
    /// go with the sandbox).
    func removeIfEmpty() { for d in dirs { rmdir(d) } }

    var isEmpty: Bool {
        (FileSystem.readAll(procsFile) ?? "x").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    var procsFile: String {
        (dirs.first { $0.contains("/pids/") } ?? dirs.first ?? "/nonexistent") + "/cgroup.procs"
    }

    /// SIGKILLs every process in the cgroup: cgroup.kill on v2; on v1 freeze, kill every member, thaw,
    /// and repeat until it is empty (a frozen process cannot fork away).
    func killAll() async {
        if let v2 = dirs.first, FileSystem.exists(v2 + "/cgroup.kill") {
            _ = try? "1".write(toFile: v2 + "/cgroup.kill", atomically: false, encoding: .utf8)
            return
        }
        let freezer = dirs.first { $0.contains("/freezer/") }
        for _ in 0..<50 {
            if let f = freezer {
                _ = try? "FROZEN".write(toFile: f + "/freezer.state", atomically: false, encoding: .utf8)
            }
            let pids = (FileSystem.readAll(procsFile) ?? "")
                .split(separator: "\n").compactMap { Int32($0) }
            for pid in pids { kill(pid, SIGKILL) }
            if let f = freezer {
                _ = try? "THAWED".write(toFile: f + "/freezer.state", atomically: false, encoding: .utf8)
            }
            if pids.isEmpty { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
