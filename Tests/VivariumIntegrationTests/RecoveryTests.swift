import Foundation
import Glibc
import Testing
import VivariumAudit
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Restarts, crashes and reboots (THREATS.md T16).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct RecoveryTests {
    @Test func restartAdoptsRunningSandboxes() async throws {
        try await TestDaemon.with { d in
            let before = try d.create(CreateSandboxRequest(name: "keeper"))
            try d.restart()
            let after = try d.get("keeper")
            #expect(after.state == "running")
            #expect(after.pid == before.pid, "the same init keeps running across a daemon restart")
            let (code, out, _) = try d.sh("keeper", "echo adopted")
            #expect(code == 0 && out == "adopted\n")
            #expect(d.log.contains("adopted 1"))
        }
    }

    @Test func killDuringCreateLeavesNoOrphans() async throws {
        try await TestDaemon.with { d in
            // Crash the daemon at different points of a create; after each restart the host holds
            // exactly what the store records.
            // The last delay lets the create finish, so that at least one sandbox survives to be checked.
            for (i, delayMs) in [0, 3, 8, 15, 25, 40, 2000].enumerated() {
                let name = "crash\(i)"
                let client = d.client
                let req = Task.detached {
                    try? client.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: name)) as SandboxInfo
                }
                usleep(UInt32(delayMs * 1000))
                d.crash()
                _ = await req.value
                try d.start()
                let page: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes?limit=500")
                let ids = Set(page.items.map(\.id))
                #expect(
                    page.items.allSatisfy { $0.state == "running" }, "after a crash, only finished sandboxes remain")
                #expect(Set(try d.crunContainers()) == ids, "crun containers match the store (delay \(delayMs) ms)")
                #expect(Set(d.bundles()) == ids, "bundles match the store (delay \(delayMs) ms)")
                let mountOwners = Set(
                    d.mounts().compactMap { m -> String? in
                        let rel = m.dropFirst((d.stateDir + "/sandboxes/").count)
                        return rel.split(separator: "/").first.map(String.init)
                    })
                #expect(mountOwners.isSubset(of: ids), "no orphaned mounts (delay \(delayMs) ms)")
                let cgroupOwners = Set(d.cgroups().map { ($0 as NSString).lastPathComponent })
                #expect(cgroupOwners.isSubset(of: ids), "no orphaned cgroups (delay \(delayMs) ms)")
                for s in page.items {
                    let (c, _, _) = try d.sh(s.name, "true")
                    #expect(c == 0)
                }
            }
            // No lost record: every sandbox that exists has its finished create in a chain that verifies.
            let trail: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000&action=sandbox.create")
            let page: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes?limit=500")
            #expect(!page.items.isEmpty)
            for s in page.items {
                #expect(trail.items.contains { $0.details["id"] == s.id && $0.outcome == "ok" }, "\(s.name)")
            }
            let verify = try d.cli("audit", "verify")
            #expect(verify.status == 0, "\(verify.stderr)")
        }
    }

    @Test func rebootBringsBackAlwaysSandboxes() async throws {
        try await TestDaemon.with { d in
            let always = try d.create(CreateSandboxRequest(name: "phoenix", env: ["E": "env-kept"], restart: "always"))
            let never = try d.create(CreateSandboxRequest(name: "mayfly"))
            _ = try d.client.upload(
                Endpoints.secretSet, Data("secret-kept".utf8), name: "s", query: [("sandbox", "phoenix")])
            let (w, _, _) = try d.sh("phoenix", "echo persisted > /root/state")
            #expect(w == 0)
            d.stop()
            // A reboot, behind the daemon's back: every box process dies and every mount is gone.
            for box in [always, never] {
                if let pid = box.pid { kill(pid, SIGKILL) }
            }
            #expect(
                d.eventually(10) {
                    [always, never].allSatisfy { b in
                        !FileManager.default.fileExists(atPath: "/proc/\(b.pid!)/status") || isZombie(b.pid!)
                    }
                })
            for m in d.mounts() { try Mounts.unmount(m) }
            #expect(d.mounts().isEmpty)
            // The runtime tmpfs (specs, crun's state, secret files) is gone with the reboot too.
            try Mounts.unmount(d.runtimeDir)
            #expect(!Mounts.isTmpfs(d.runtimeDir))

            try d.start()
            let back = try d.get("phoenix")
            #expect(back.state == "running")
            #expect(back.pid != always.pid)
            let (c, out, _) = try d.sh("phoenix", "cat /root/state")
            #expect(c == 0 && out == "persisted\n", "the disk of an always sandbox survives the reboot")
            #expect(
                try d.sh("phoenix", "echo $E; cat /run/secrets/s").1 == "env-kept\nsecret-kept",
                "rebuilt from the store")
            #expect(try d.get("mayfly").state == "stopped")
            #expect(try d.crunContainers() == [always.id])
        }
    }

    @Test func initDeathRestartsAnAlwaysSandbox() async throws {
        try await TestDaemon.with { d in
            let box = try d.create(CreateSandboxRequest(name: "resilient", restart: "always"))
            let other = try d.create(CreateSandboxRequest(name: "fragile"))
            kill(box.pid!, SIGKILL)
            kill(other.pid!, SIGKILL)
            #expect(d.eventually(10) { (try? d.get("resilient"))?.pid.map { $0 != box.pid } ?? false })
            #expect(try d.get("resilient").state == "running")
            #expect(d.eventually(10) { (try? d.get("fragile"))?.state == "stopped" })
            let (c, _, _) = try d.sh("resilient", "true")
            #expect(c == 0)
            // The daemon's own actions are in the trail, as `system`.
            let trail: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000&actor=system")
            #expect(
                trail.items.contains {
                    $0.actor == "system" && $0.action == "sandbox.restart" && $0.target == "resilient"
                })
            #expect(
                trail.items.contains {
                    $0.actor == "system" && $0.action == "sandbox.stopped" && $0.target == "fragile"
                })
        }
    }
}

func isZombie(_ pid: Int32) -> Bool {
    guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let rp = s.lastIndex(of: ")")
    else {
        return true
    }
    return s[s.index(rp, offsetBy: 2)] == "Z"
}
