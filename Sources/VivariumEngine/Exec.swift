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
        try await audit.append([
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
            let result = try await runtime.exec(plan(r), command)
            await recordOutcome(
                event(
                    "sandbox.exec", r, result.timedOut ? .failed : .ok,
                    details: [
                        "exit_code": String(result.exitCode), "timed_out": String(result.timedOut),
                        "duration_ms": String(Int(result.duration.milliseconds.rounded())),
                        "stdout_bytes": String(result.stdout.count), "stderr_bytes": String(result.stderr.count),
                    ]))
            return result
        } catch {
            await recordOutcome(event("sandbox.exec", r, .failed, details: ["error": "\(error)"]))
            throw error
        }
    }

    /// Seconds as recorded: "60", or "0.5" for fractions.
    static func seconds(_ d: Duration) -> String {
        let ms = d.milliseconds
        return ms.truncatingRemainder(dividingBy: 1000) == 0 ? String(Int64(ms / 1000)) : String(ms / 1000)
    }
}
