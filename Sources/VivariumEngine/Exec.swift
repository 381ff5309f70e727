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
        try await audit.append([execIntent(r, command)])
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

    /// The record written before a command runs: the argument vector redacted, environment names only.
    func execIntent(_ r: SandboxRecord, _ command: ExecCommand, _ more: [String: String] = [:]) -> AuditEvent {
        event(
            "sandbox.exec", r, .started,
            details: [
                "argv": Redactor.commandLine(command.argv), "user": String(command.user), "workdir": command.workdir,
                "timeout_seconds": Self.seconds(command.timeout),
                "env_keys": command.env.keys.sorted().joined(separator: ","),
            ].merging(more) { a, _ in a })
    }

    /// Seconds as recorded: "60", or "0.5" for fractions.
    static func seconds(_ d: Duration) -> String {
        let ms = d.milliseconds
        return ms.truncatingRemainder(dividingBy: 1000) == 0 ? String(Int64(ms / 1000)) : String(ms / 1000)
    }
}

/// Bounds on execs in flight: how many run at once per sandbox, per tenant and in all, and how many
/// output bytes they may buffer together (each exec counts its worst case, both streams at their cap).
public struct ExecLimits: Sendable, Equatable {
    public var perSandbox: Int
    public var perTenant: Int
    public var total: Int
    public var outputBytes: Int64

    /// 8 per sandbox, 32 per tenant, 64 in all, 256 MiB of output: 8 execs at the 16 MiB cap, or 128 at
    /// the 1 MiB default, keep the daemon's buffers a small share of a host.
    public static let `default` = ExecLimits(perSandbox: 8, perTenant: 32, total: 64, outputBytes: 256 << 20)

    public init(perSandbox: Int, perTenant: Int, total: Int, outputBytes: Int64) {
        self.perSandbox = perSandbox
        self.perTenant = perTenant
        self.total = total
        self.outputBytes = outputBytes
    }
}

/// Admits execs within `ExecLimits`; one over a bound is refused at once with 429 (`rate_limited`)
/// and a Retry-After, before anything runs, so a burst never queues memory in the daemon.
final class ExecAdmission: Sendable {
    struct Ticket: Sendable {
        let tenant: String
        let sandbox: SandboxID?
        let bytes: Int64
    }
    private struct InFlight {
        var total = 0
        var bytes: Int64 = 0
        var tenants: [String: Int] = [:]
        var sandboxes: [SandboxID: Int] = [:]
    }
    let limits: ExecLimits
    private let state = Mutex(InFlight())

    init(_ limits: ExecLimits) { self.limits = limits }

    /// The bytes an exec of `command` may buffer: both streams at its cap.
    static func bytes(_ command: ExecCommand) -> Int64 { 2 * Int64(command.maxOutputBytes) }

    func admit(tenant: String, sandbox: SandboxID?, _ command: ExecCommand) throws -> Ticket {
        try admit(tenant: tenant, sandbox: sandbox, bytes: Self.bytes(command))
    }

    /// Admits an exec that may buffer `bytes` of output.
    func admit(tenant: String, sandbox: SandboxID?, bytes: Int64) throws -> Ticket {
        let l = limits
        try state.withLock { s in
            func refuse(_ what: String) -> VivariumError {
                VivariumError(.rateLimited, "too many execs in flight: \(what); retry shortly", retryAfterSeconds: 1)
            }
            if let sandbox, s.sandboxes[sandbox, default: 0] >= l.perSandbox {
                throw refuse("this sandbox runs \(l.perSandbox) at most")
            }
            if s.tenants[tenant, default: 0] >= l.perTenant { throw refuse("a tenant runs \(l.perTenant) at most") }
            if s.total >= l.total { throw refuse("the host runs \(l.total) at most") }
            if s.bytes + bytes > l.outputBytes {
                throw refuse(
                    "their output buffers would pass \(Quantity.formatBytes(l.outputBytes)) (this one may "
                        + "buffer \(Quantity.formatBytes(bytes)): a smaller max_output_bytes gets in sooner)")
            }
            s.total += 1
            s.bytes += bytes
            s.tenants[tenant, default: 0] += 1
            if let sandbox { s.sandboxes[sandbox, default: 0] += 1 }
        }
        return Ticket(tenant: tenant, sandbox: sandbox, bytes: bytes)
    }

    func release(_ t: Ticket) {
        state.withLock { s in
            s.total -= 1
            s.bytes -= t.bytes
            s.tenants[t.tenant, default: 1] -= 1
            if s.tenants[t.tenant] == 0 { s.tenants[t.tenant] = nil }
            if let id = t.sandbox {
                s.sandboxes[id, default: 1] -= 1
                if s.sandboxes[id] == 0 { s.sandboxes[id] = nil }
            }
        }
    }
}
