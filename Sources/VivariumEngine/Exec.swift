import Foundation
import Glibc
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumStore

extension Sandboxes {
    /// Runs a command in a running sandbox and returns its output. The command runs with exactly the
    /// init's hardening, in a cgroup of its own below the sandbox's: a timeout freezes that cgroup and
    /// SIGKILLs everything in it, so no process the command started (detached, re-parented or not)
    /// survives. Processes a finished command left in the background keep running.
    ///
    /// The trail gets an intent record before the command runs (no record, no run) and an outcome record
    /// after: the argument vector redacted, environment names but never values, never the output.
    func exec(_ r: SandboxRecord, _ command: ExecCommand) async throws -> ExecOutcome {
        _ = try r.state.requireRunning()
        try audit.append([
            event(
                "sandbox.exec", r, .started,
                details: [
                    "argv": Redactor.commandLine(command.argv), "user": String(command.user),
                    "workdir": command.workdir,
                    "timeout_seconds": Self.seconds(command.timeout),
                    "env_keys": command.env.keys.sorted().joined(separator: ","),
                ])
        ])
        do {
            let result = try await host.exec(r, command)
            recordOutcome(
                event(
                    "sandbox.exec", r, result.timedOut ? .failed : .ok,
                    details: [
                        "exit_code": String(result.exitCode), "timed_out": String(result.timedOut),
                        "duration_ms": String(Int(result.duration.milliseconds.rounded())),
                        "stdout_bytes": String(result.stdout.count), "stderr_bytes": String(result.stderr.count),
                    ]))
            return result
        } catch {
            recordOutcome(event("sandbox.exec", r, .failed, details: ["error": "\(error)"]))
            throw error
        }
    }

    /// Seconds as recorded: "60", or "0.5" for fractions.
    static func seconds(_ d: Duration) -> String {
        let ms = d.milliseconds
        return ms.truncatingRemainder(dividingBy: 1000) == 0 ? String(Int64(ms / 1000)) : String(ms / 1000)
    }
}

extension SandboxHost {
    func exec(_ r: SandboxRecord, _ command: ExecCommand) async throws -> ExecOutcome {
        var env = r.spec.env
        for (k, v) in command.env { env[k] = v }
        if command.user != 0 && env["HOME"] == nil { env["HOME"] = "/" }
        let process = HardenedSpec.process(
            args: command.argv, env: env, cwd: command.workdir, uid: command.user, gid: command.user)

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
        let timeout = command.timeout
        let out = try await runtime.exec(
            id: r.id.rawValue, processFile: processFile, cgroup: group.name, outputLimit: command.maxOutputBytes
        ) { crunProcess in
            timer.set(
                Task {
                    guard (try? await Task.sleep(for: timeout)) != nil else { return }
                    timedOut.set()
                    await group.killAll()
                    // Everything in the cgroup is gone; crun follows. If it lingers, end it.
                    guard (try? await Task.sleep(for: .seconds(5))) != nil else { return }
                    crunProcess.signal(SIGKILL)
                })
        }
        timer.cancel()
        var code = out.status.code
        // crun answers 255 when the command cannot be found; the shell convention is 127.
        if code == 255 && out.stderrString.contains("not found in $PATH") { code = 127 }
        return ExecOutcome(
            exitCode: code, stdout: out.stdout, stderr: out.stderr, stdoutTruncated: out.stdoutTruncated,
            stderrTruncated: out.stderrTruncated, timedOut: timedOut.isSet, duration: ContinuousClock.now - started)
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
