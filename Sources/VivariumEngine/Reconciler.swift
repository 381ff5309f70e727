import Foundation
import Logging
import ServiceLifecycle
import VivariumAudit
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumStore

extension Sandboxes {
    public struct ReconcileReport: Sendable, CustomStringConvertible {
        public var adopted = 0
        public var restarted = 0
        public var stopped = 0
        public var rolledBack = 0
        public var orphansRemoved = 0
        public var expired = 0
        public var description: String {
            "adopted \(adopted), restarted \(restarted), marked stopped \(stopped), rolled back \(rolledBack), "
                + "orphans removed \(orphansRemoved), expired \(expired)"
        }
    }

    /// Brings the host in line with the store at start: adopts live sandboxes, restarts `always`
    /// sandboxes that did not survive (a reboot, a crash), finishes half-done creates and deletes, and
    /// removes every crun container, mount, bundle and cgroup that no record owns.
    public func reconcile() async throws -> ReconcileReport {
        var report = ReconcileReport()
        let containers = Dictionary(
            try await runtime.containers().map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let records = try await store.allSandboxes()
        for r in records {
            var box = plan(r)
            do {
                switch r.state {
                case .creating, .deleting:
                    try await runtime.destroy(box, released: false)
                    secrets.sandboxRemoved(r.id)
                    try await store.deleteSandbox(
                        r.id, audit: event("reconcile.rollback", r, details: ["unfinished": r.state.name]))
                    report.rolledBack += 1
                    logger.notice("rolled back an unfinished \(r.state.name)", metadata: ["sandbox": "\(r.name)"])
                case .running(let pid):
                    let c = containers[r.id.rawValue]
                    if let c, c.status == "running" { box = await adoptPlan(r) }
                    if let c, c.status == "running",
                        await runtime.adopt(box, pid: c.pid, network: try attachment(r), onExit: onExit)
                    {
                        if c.pid != pid {
                            try await store.updateState(
                                r.id, .running(pid: c.pid),
                                audit: event(
                                    "reconcile.adopt", r, details: ["pid": "\(c.pid)", "recorded_pid": "\(pid)"]))
                        }
                        report.adopted += 1
                        continue
                    }
                    try await runtime.release(box)
                    if r.spec.restart == .always {
                        box = try await bootPlan(r)
                        let newPid = try await runtime.boot(box, network: try attachment(r), onExit: onExit)
                        try await store.updateState(
                            r.id, .running(pid: newPid),
                            audit: event("reconcile.restart", r, details: ["pid": "\(newPid)"]))
                        report.restarted += 1
                        logger.notice("restarted sandbox", metadata: ["sandbox": "\(r.name)", "pid": "\(newPid)"])
                    } else {
                        try await store.updateState(
                            r.id, .stopped, audit: event("reconcile.stop", r, details: ["reason": "init gone"]))
                        report.stopped += 1
                    }
                case .stopped:
                    if containers[r.id.rawValue] != nil || runtime.holdsMounts(box) { try await runtime.release(box) }
                }
            } catch {
                logger.error("reconcile failed for sandbox", metadata: ["sandbox": "\(r.name)", "error": "\(error)"])
            }
        }
        report.orphansRemoved = await removeOrphans()
        report.expired = await sweepExpired()
        return report
    }

    /// Everything of this instance on the host that no record owns: crun containers, bundles (with
    /// their mounts) and cgroups. Records are read after the per-record pass, so rolled-back ones count
    /// as gone.
    func removeOrphans() async -> Int {
        guard let current = try? await store.allSandboxes() else { return 0 }
        let live = Set(current.map(\.id.rawValue))
        var removed = await runtime.removeOrphans(live: live)
        for id in secrets.files.orphans(live: live) {
            secrets.files.removeAll(id)
            removed += 1
        }
        if removed > 0 {
            logger.notice("removed orphans", metadata: ["count": "\(removed)"])
            await recordOutcome(AuditEvent("reconcile.orphans", details: ["removed": "\(removed)"]))
        }
        return removed
    }

    /// Deletes sandboxes whose TTL ran out. Returns how many.
    public func sweepExpired(now: Date = Date()) async -> Int {
        var n = 0
        for r in await (try? store.expiredSandboxes(now: now)) ?? [] {
            do {
                try await locks.withLock("\(r.tenant)/\(r.name)") { [self] in
                    guard let cur = try await store.sandbox(id: r.id) else { return }
                    try await remove(cur, action: "sandbox.expire")
                }
                n += 1
                logger.info("sandbox expired and was deleted", metadata: ["sandbox": "\(r.name)"])
            } catch {
                logger.error("cannot delete expired sandbox", metadata: ["sandbox": "\(r.name)", "error": "\(error)"])
            }
        }
        return n
    }
}

extension Sandboxes {
    /// Catches drift the init watches could miss: a running record whose init is gone is handled as an
    /// unexpected exit (restart under `always`, else stopped).
    public func checkDrift() async {
        for r in await (try? store.allSandboxes()) ?? [] {
            switch r.state {
            case .running(let pid) where !runtime.isAlive(pid: pid) && !runtime.isStopping(r.id):
                await initExited(r.id, pid: pid, status: nil)
            case .deleting:
                // A delete or rollback whose teardown failed: retry it.
                _ = try? await locks.withLock("\(r.tenant)/\(r.name)") { [self] in
                    guard let cur = try await store.sandbox(id: r.id), case .deleting = cur.state else { return }
                    try await remove(cur, action: "reconcile.finish_delete")
                }
            default: continue
            }
        }
    }
}
