import Foundation
import Testing
import VivariumAudit
import VivariumCore
import VivariumEngine
import VivariumEngineTestSupport
import VivariumRuntime
import VivariumStore
import VivariumTestSupport

/// The engine's decisions against a fake runtime, without root: what a failed create leaves, what
/// follows an init's death, and what the reconciler does with each state it finds at start.
@Suite struct EngineDecisionTests {
    func member(_ f: EngineFixture) async throws -> Caller {
        try await f.baseImage()
        return try await f.caller(try await f.token("ann"))
    }

    func name(_ s: String) -> ResourceName { ResourceName(rawValue: s)! }

    /// Runs the engine's init watch (the service the daemon runs) around `body`.
    func withInitWatch(_ f: EngineFixture, _ body: () async throws -> Void) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let watch = f.engine.backgroundServices[0]
            group.addTask { try await watch.run() }
            defer { group.cancelAll() }
            try await body()
        }
    }

    /// Polls until `condition` holds (at most 5 s): the init watch handles exits in its own task.
    func eventually(_ what: Comment, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<500 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("never: \(what)")
    }

    @Test func aCreateWhoseBootFailsIsRolledBackAndFreesItsSlot() async throws {
        let f = try await EngineFixture()
        let ann = try await member(f)
        f.runtime.state.withLock { $0.failBoots = 1 }
        await expectCode(.runtimeFailure) {
            try await f.engine.sandboxes.create(
                ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        }
        // Everything the boot left on the host was torn down, and the record is gone.
        let failed = try await f.records("sandbox.create").filter { $0.outcome == "failed" }
        #expect(failed.count == 1)
        let id = try #require(SandboxID(rawValue: failed.first?.details["id"] ?? ""))
        #expect(f.runtime.calls(id) == ["prepare", "boot", "destroy", "release"])
        #expect(f.runtime.state.withLock { !$0.mounted.contains(id) && !$0.prepared.contains(id) })
        #expect(try await f.store.sandbox(id: id) == nil)
        // The name and the uid slot are free again.
        let again = try await f.engine.sandboxes.create(
            ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        #expect(again.state.pid != nil)
        #expect(try await f.store.sandbox(id: again.id)?.uidSlot == 0)
    }

    @Test func aRollbackThatCannotCleanUpKeepsTheSlotUntilTheDriftCheckFinishesIt() async throws {
        let f = try await EngineFixture()
        let ann = try await member(f)
        f.runtime.state.withLock {
            $0.failBoots = 1
            $0.failDestroys = 1
        }
        await expectCode(.runtimeFailure) {
            try await f.engine.sandboxes.create(
                ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        }
        let kept = try #require(try await f.store.allSandboxes().first)
        #expect(kept.state == .deleting, "the record holds its slot while the host may still hold its resources")
        await expectCode(.alreadyExists) {
            try await f.engine.sandboxes.create(
                ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        }
        await f.engine.sandboxes.checkDrift()
        #expect(try await f.store.allSandboxes().isEmpty)
        #expect(try await f.records("reconcile.finish_delete").map(\.outcome) == ["started", "ok"])
        #expect(f.runtime.state.withLock { $0.prepared.isEmpty && $0.mounted.isEmpty })
    }

    @Test func anInitThatDiesIsRestartedUnderAlwaysAndStoppedOtherwise() async throws {
        let f = try await EngineFixture()
        let ann = try await member(f)
        try await withInitWatch(f) {
            let always = try await f.engine.sandboxes.create(
                ann, name: name("always"), spec: SandboxSpec(image: ImageReference(name("base")), restart: .always))
            let never = try await f.engine.sandboxes.create(
                ann, name: name("never"), spec: SandboxSpec(image: ImageReference(name("base"))))
            let firstPid = try #require(always.state.pid)
            f.runtime.crash(always.id)
            f.runtime.crash(never.id)
            try await eventually("the always sandbox runs again under a new pid") {
                guard let pid = try await f.store.sandbox(id: always.id)?.state.pid else { return false }
                return pid != firstPid && f.runtime.isAlive(pid: pid)
            }
            try await eventually("the never sandbox is stopped") {
                try await f.store.sandbox(id: never.id)?.state == .stopped
            }
            #expect(try await f.records("sandbox.restart").map(\.target) == ["always"])
            #expect(try await f.records("sandbox.stopped").map(\.target) == ["never"])
            #expect(f.runtime.calls(never.id).suffix(1) == ["release"], "the stopped one is released, not rebooted")
            // A restart that fails leaves the sandbox stopped, recorded as failed.
            f.runtime.state.withLock { $0.failBoots = 1 }
            f.runtime.crash(always.id)
            try await eventually("the failed restart stops the sandbox") {
                try await f.store.sandbox(id: always.id)?.state == .stopped
            }
            #expect(try await f.records("sandbox.restart").map(\.outcome) == ["ok", "failed"])
        }
    }

    @Test func aStopRecordsItsIntentBeforeItActs() async throws {
        let f = try await EngineFixture()
        let ann = try await member(f)
        let box = try await f.engine.sandboxes.create(
            ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        let stopped = try await f.engine.sandboxes.stop(ann, name: box.name)
        #expect(stopped.state == .stopped)
        let records = try await f.records("sandbox.stop")
        #expect(records.map(\.outcome) == ["started", "ok"])
        #expect(records.allSatisfy { $0.actorName == "ann" && $0.target == "a" })
        #expect(f.runtime.calls(box.id).suffix(2) == ["halt", "release"])
    }

    @Test func anExitOfAnOldInitIsIgnored() async throws {
        let f = try await EngineFixture()
        let ann = try await member(f)
        let box = try await f.engine.sandboxes.create(
            ann, name: name("a"), spec: SandboxSpec(image: ImageReference(name("base"))))
        // An exit report for a pid the record no longer has (an init replaced by a restart).
        let onExit = try #require(f.runtime.state.withLock { $0.boxes[box.id]?.onExit })
        try await withInitWatch(f) {
            onExit(box.id, 1, .exited(0))
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await f.store.sandbox(id: box.id)?.state == box.state)
        }
    }

    /// Records left in every state by a daemon that stopped, and a host that kept some of them.
    @Test func reconcileAdoptsRestartsStopsRollsBackAndSweeps() async throws {
        let f = try await EngineFixture(maxSandboxes: 8)
        _ = try await member(f)  // the tenant
        let img = try #require(try await f.store.image(tenant: "default", name: name("base")))
        func seed(_ n: String, _ state: SandboxState, restart: RestartPolicy = .never) async throws -> SandboxRecord {
            try await f.store.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) { slot in
                SandboxRecord(
                    id: .random(), tenant: "acme", name: ResourceName(rawValue: n)!, imageID: img.id,
                    imageName: img.name, imageDigest: img.digest, imageRootfs: img.rootfs,
                    spec: SandboxSpec(image: ImageReference(img.name), restart: restart), state: state, uidSlot: slot,
                    bundle: f.dir + "/sandboxes/" + n, cgroupPath: "/c/" + n, createdAt: Date(), expiresAt: nil)
            }
        }
        let live = try await seed("live", .running(pid: 500))
        let gone = try await seed("gone", .running(pid: 501))
        let back = try await seed("back", .running(pid: 502), restart: .always)
        let half = try await seed("half", .creating)
        let dying = try await seed("dying", .deleting)
        let idle = try await seed("idle", .stopped)
        let orphan = SandboxID.random()
        f.runtime.state.withLock { s in
            // The live one survived under another pid; the idle one left a stopped container and mounts.
            s.containers = [
                ContainerState(id: live.id.rawValue, pid: 600, status: "running"),
                ContainerState(id: idle.id.rawValue, pid: 0, status: "stopped"),
            ]
            s.alive = [600]
            s.mounted = [live.id, idle.id, half.id]
            s.prepared = [live.id, gone.id, back.id, half.id, dying.id, idle.id, orphan]
        }
        let report = try await f.engine.sandboxes.reconcile()
        #expect(report.adopted == 1 && report.restarted == 1 && report.stopped == 1 && report.rolledBack == 2)
        #expect(report.orphansRemoved == 1)

        #expect(try await f.store.sandbox(id: live.id)?.state == .running(pid: 600), "adopted at the pid it runs as")
        #expect(f.runtime.calls(live.id) == ["adopt"], "an adopted sandbox is not touched")
        #expect(try await f.store.sandbox(id: gone.id)?.state == .stopped)
        let restarted = try #require(try await f.store.sandbox(id: back.id)?.state.pid)
        #expect(f.runtime.isAlive(pid: restarted))
        for r in [half, dying] {
            #expect(try await f.store.sandbox(id: r.id) == nil, "an unfinished \(r.state.name) is rolled back")
            #expect(f.runtime.calls(r.id).contains("destroy"))
        }
        #expect(try await f.store.sandbox(id: idle.id)?.state == .stopped)
        #expect(f.runtime.calls(idle.id) == ["release"], "a stopped sandbox's leftovers are released")
        #expect(f.runtime.state.withLock { !$0.prepared.contains(orphan) }, "what no record owns is removed")
        let sweep = try #require(f.runtime.state.withLock { $0.orphanSweeps.last })
        #expect(sweep == Set([live, gone, back, idle].map(\.id.rawValue)), "the sweep spares exactly the records left")
        #expect(try await f.records("reconcile.adopt").map(\.target) == ["live"])
        #expect(try await f.records("reconcile.restart").map(\.target) == ["back"])
        #expect(try await f.records("reconcile.stop").map(\.target) == ["gone"])
        #expect(Set(try await f.records("reconcile.rollback").compactMap(\.target)) == ["half", "dying"])
    }
}
