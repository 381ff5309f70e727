import Foundation
import Glibc
import Testing
import VivariumAudit
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

@Suite(.serialized, .enabled(if: Integration.enabled)) struct LifecycleTests {
    @Test func createExecStopStartDeleteThroughTheCLI() async throws {
        try await TestDaemon.with { d in
            var r = try d.cli(
                "create", "life", "--memory", "64M", "--cpus", "0.5", "--pids", "100", "--env", "GREETING=hi",
                "--label", "team=core", "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let info = try WireCoding.decoder().decode(SandboxInfo.self, from: Data(r.stdout.utf8))
            #expect(
                info.state == "running" && info.memoryBytes == 64 << 20 && info.milliCpus == 500 && info.pids == 100)
            #expect(info.labels == ["team": "core"])

            r = try d.cli("exec", "life", "--", "sh", "-c", "echo $GREETING; echo oops >&2; exit 3")
            #expect(r.status == 3)
            #expect(r.stdout == "hi\n")
            #expect(r.stderr == "oops\n")
            r = try d.cli(
                "exec", "life", "--env", "GREETING=override", "--workdir", "/etc", "--", "sh", "-c",
                "echo $GREETING $PWD")
            #expect(r.stdout == "override /etc\n")
            r = try d.cli("exec", "life", "--", "sh", "-c", "echo kept > /root/data")
            #expect(r.status == 0)

            // The cgroup limits are applied.
            let mem = try String(
                contentsOfFile: d.cgroupFile(
                    "memory", info.id, CgroupMode.detect() == .unified ? "memory.max" : "memory.limit_in_bytes"),
                encoding: .utf8)
            #expect(mem.trimmingCharacters(in: .whitespacesAndNewlines) == String(64 << 20))

            r = try d.cli("stop", "life")
            #expect(r.status == 0)
            #expect(try d.get("life").state == "stopped")
            #expect(try d.crunContainers().isEmpty)
            #expect(d.mounts().isEmpty)
            r = try d.cli("exec", "life", "--", "true")
            #expect(r.status == 125 && r.stderr.contains("invalid_state"), "vivarium's own failure")
            // With the daemon out of reach: a clear message and the same code, never a silent death.
            let away = try runCommand(
                Paths.vivarium, ["ls"], env: ["VIVARIUM_SOCKET": d.root + "/nowhere.sock", "HOME": d.root])
            #expect(away.status == 125 && away.stderr.hasPrefix("vivarium: "), "\(away.stderr)")

            r = try d.cli("start", "life")
            #expect(r.status == 0)
            r = try d.cli("exec", "life", "--", "cat", "/root/data")
            #expect(r.stdout == "kept\n", "the sandbox's disk survives stop/start")

            r = try d.cli("inspect", "life", "--json")
            let inspected = try WireCoding.decoder().decode(SandboxInfo.self, from: Data(r.stdout.utf8))
            #expect((inspected.diskUsageBytes ?? 0) > 0)

            r = try d.cli("rm", "life")
            #expect(r.status == 125, "rm of a running sandbox needs -f")
            r = try d.cli("rm", "-f", "life")
            #expect(r.status == 0)
            r = try d.cli("ls", "--json")
            #expect(try WireCoding.decoder().decode([SandboxInfo].self, from: Data(r.stdout.utf8)).isEmpty)
            #expect(try d.crunContainers().isEmpty)
            #expect(d.mounts().isEmpty)
            #expect(d.bundles().isEmpty)
            #expect(d.cgroups().isEmpty)
        }
    }

    /// Environment values go into the box and never come back out through the API, for any caller.
    @Test func environmentValuesNeverLeaveThroughTheAPI() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "envy", env: ["PASSWORD": "hunter2-value", "MODE": "x"]))
            let (_, inside, _) = try d.sh("envy", "echo $PASSWORD")
            #expect(inside == "hunter2-value\n", "the box gets the value")
            for path in ["/v1/sandboxes/envy", "/v1/sandboxes"] {
                let body = String(decoding: try d.client.http.send("GET", path).body, as: UTF8.self)
                #expect(!body.contains("hunter2"), "\(path) hands the value back: \(body)")
                #expect(body.contains(#""env_names":["MODE","PASSWORD"]"#), "\(path): \(body)")
            }
            let cli = try d.cli("inspect", "envy", "--json")
            #expect(!cli.stdout.contains("hunter2") && cli.stdout.contains("PASSWORD"))
        }
    }

    @Test func listPaginatesWithACursor() async throws {
        try await TestDaemon.with { d in
            for n in ["p1", "p2", "p3"] { _ = try d.create(CreateSandboxRequest(name: n)) }
            let first: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes?limit=2")
            #expect(first.items.map(\.name) == ["p1", "p2"])
            let cursor = try #require(first.nextCursor)
            let second: Page<SandboxInfo> = try d.client.call(
                "GET", "/v1/sandboxes?limit=2&cursor=\(cursor.percentEncoded)")
            #expect(second.items.map(\.name) == ["p3"])
            #expect(second.nextCursor == nil)
        }
    }

    @Test func expiredSandboxesAreDeleted() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "brief", ttlSeconds: 1))
            _ = try d.create(CreateSandboxRequest(name: "lasting"))
            let gone = try d.eventually(15) {
                let page: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes")
                return !page.items.contains { $0.name == "brief" }
            }
            #expect(gone)
            #expect(try d.get("lasting").state == "running")
            #expect(try d.crunContainers().count == 1)
            let trail: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?action=sandbox.expire&target=brief")
            #expect(trail.items.map(\.outcome) == ["started", "ok"], "the expiry is recorded")
            #expect(trail.items.allSatisfy { $0.actor == "system" && $0.tenant == "default" })
        }
    }

    @Test func imagesImportListAndRemove() async throws {
        try await TestDaemon.with { d in
            // A rootfs directory and a tar archive of it.
            let dir = d.root + "/img"
            try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: dir + "/bin/busybox")
            symlink("busybox", dir + "/bin/sh")
            symlink("busybox", dir + "/bin/cat")
            try Data("imported\n".utf8).write(to: URL(fileURLWithPath: dir + "/hello"))
            try runCommand("/usr/bin/tar", ["-czf", d.root + "/img.tar.gz", "-C", dir, "."])

            var r = try d.cli("image", "import", dir, "--name", "fromdir", "--json")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("image", "import", d.root + "/img.tar.gz", "--name", "fromtar")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("image", "import", dir, "--name", "fromdir")
            #expect(r.status == 125 && r.stderr.contains("already_exists"))
            r = try d.cli("image", "ls", "--json")
            let names = try WireCoding.decoder().decode([ImageInfo].self, from: Data(r.stdout.utf8)).map(\.name)
            #expect(Set(names) == ["base", "fromdir", "fromtar"])

            _ = try d.create(CreateSandboxRequest(name: "custom", image: "fromtar"))
            let (_, out, _) = try d.sh("custom", "cat /hello")
            #expect(out == "imported\n")
            r = try d.cli("image", "rm", "fromtar")
            #expect(r.status == 125 && r.stderr.contains("image_in_use"))
            _ = try d.cli("rm", "-f", "custom")
            r = try d.cli("image", "rm", "fromtar")
            #expect(r.status == 0)
            r = try d.cli("image", "rm", "fromtar")
            #expect(r.status == 125 && r.stderr.contains("image_not_found"))
        }
    }

    @Test func secondDaemonOnTheSameStateDirIsRefused() async throws {
        try await TestDaemon.with { d in
            let r = try d.cli("serve")
            #expect(r.status != 0)
            #expect(r.stderr.contains("another vivarium daemon"))
            // The first daemon still serves.
            #expect(try d.client.http.send("GET", "/healthz").status == 200)
        }
    }

    @Test func configShowReportsPrecedence() async throws {
        try await TestDaemon.with { d in
            let cfg = d.root + "/config.toml"
            try Data("max_sandboxes = 7\nlog_level = \"debug\"\nstop_timeout_seconds = 3\n".utf8).write(
                to: URL(fileURLWithPath: cfg))
            let r = try runCommand(
                Paths.vivarium, ["config", "show", "--json", "--config", cfg, "--state-dir", "/srv/flag"],
                env: [
                    "VIVARIUM_STATE_DIR": "/srv/env", "VIVARIUM_LOG_LEVEL": "error", "VIVARIUM_SOCKET": "/run/x/s.sock",
                ])
            #expect(r.status == 0, "\(r.stderr)")
            let m = try JSONDecoder().decode([String: String].self, from: Data(r.stdout.utf8))
            #expect(m["state_dir"] == "/srv/flag")  // flag beats env
            #expect(m["log_level"] == "error")  // env beats file
            #expect(m["max_sandboxes"] == "7")  // file beats default
            #expect(m["stop_timeout_seconds"] == "3")
            #expect(m["socket"] == "/run/x/s.sock")
            let bad = try runCommand(Paths.vivarium, ["config", "show", "--config", d.root + "/missing.toml"])
            #expect(bad.status != 0)
        }
    }
}
