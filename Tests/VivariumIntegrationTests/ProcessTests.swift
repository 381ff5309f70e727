import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Detached processes (`vivarium exec -d`) in real sandboxes: a server started in one call answers in the
/// next, output is kept and replayed, a daemon crash loses nothing, signals, stdin, bounds, deletion.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct ProcessTests {
    func logs(_ d: TestDaemon, _ box: String, _ id: String) throws -> ProcessLogs {
        try d.client.call(Endpoints.processLogs, name: box, query: [("id", id)])
    }

    /// Waits until `done` holds of the process's logs (10 s at most) and returns them.
    func waitLogs(_ d: TestDaemon, _ box: String, _ id: String, _ done: (ProcessLogs) -> Bool) async throws
        -> ProcessLogs
    {
        var last = try logs(d, box, id)
        for _ in 0..<100 where !done(last) {
            try await Task.sleep(for: .milliseconds(100))
            last = try logs(d, box, id)
        }
        return last
    }

    func text(_ data: Data) -> String { String(decoding: data, as: UTF8.self) }

    @Test func aDetachedServerStartedInOneCallAnswersInTheNextUntilSignalled() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "srv"))
            _ = try d.sh("srv", "mkdir -p /tmp/www && echo served-from-the-box > /tmp/www/index.html")
            var r = try d.cli("exec", "-d", "srv", "--", "httpd", "-f", "-vv", "-p", "127.0.0.1:8080", "-h", "/tmp/www")
            #expect(r.status == 0, "\(r.stderr)")
            let id = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id.hasPrefix("p"), "the process id is printed: \(r.stdout)")

            // The call that started it has returned; the server answers the next one.
            let (code, page, _) = try d.sh("srv", "wget -qO- http://127.0.0.1:8080/index.html")
            #expect(code == 0 && page == "served-from-the-box\n", "\(page)")
            let served = try await waitLogs(d, "srv", id) { self.text($0.stderr).contains("index.html") }
            #expect(text(served.stderr).contains("index.html"), "its own log of the request is kept: \(served)")
            #expect(served.process.state == "running" && served.process.pid != nil)

            r = try d.cli("ps", "srv")
            #expect(r.stdout.contains(id) && r.stdout.contains("running") && r.stdout.contains("httpd"), "\(r.stdout)")
            r = try d.cli("kill", "srv", id)
            #expect(r.status == 0 && r.stdout.contains("exited"), "\(r.stdout) \(r.stderr)")
            let ended = try logs(d, "srv", id).process
            #expect(ended.state == "exited" && ended.exitCode == 143 && ended.pid == nil, "\(ended)")
            #expect(try d.sh("srv", "wget -qO- -T 2 http://127.0.0.1:8080/ 2>&1").0 != 0, "the server is gone")
            expectCode(.invalidState, "an ended process takes no signal") {
                try d.client.call(Endpoints.processSignal, SignalProcessRequest(id: id, signal: "KILL"), name: "srv")
            }
            expectCode(.invalidArgument, "an id the sandbox does not have") {
                try d.client.call(Endpoints.processLogs, name: "srv", query: [("id", "p000000000000")])
            }
            let records: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000")
            #expect(
                records.items.contains {
                    $0.action == "sandbox.exec" && $0.outcome == "started" && $0.details["detached"] == "true"
                })
            #expect(records.items.contains { $0.action == "process.signal" && $0.details["process"] == id })
        }
    }

    @Test func outputSurvivesADaemonCrashAndIsReplayedInOrder() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "long"))
            let script =
                "i=0; while [ $i -lt 30 ]; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done; exit 5"
            let p = try d.client.call(
                Endpoints.processStart, StartProcessRequest(argv: ["sh", "-c", script]), name: "long")
            try await Task.sleep(for: .milliseconds(600))
            // Killed mid-output: the command writes on (to its shim, not to the daemon) and dies of no SIGPIPE.
            d.crash()
            try await Task.sleep(for: .seconds(1))
            try d.restart()
            // `logs -f` replays everything in the order written, then follows to the end and its status.
            let r = try d.cli("logs", "-f", "long", p.id)
            #expect(r.status == 5, "the process's exit status: \(r.status) \(r.stderr)")
            #expect(r.stdout == (0..<30).map { "out \($0)\n" }.joined(), "\(r.stdout)")
            #expect(r.stderr == (0..<30).map { "err \($0)\n" }.joined(), "\(r.stderr)")
            let kept = try logs(d, "long", p.id)
            #expect(kept.process.state == "exited" && kept.process.exitCode == 5 && kept.droppedBytes == 0)
        }
    }

    @Test func stdinIsFedOutputIsBoundedAndDeletionEndsEveryProcess() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "feed"))
            var r = try d.cli("exec", "-d", "-i", "feed", "--", "sh", "-c", "while read l; do echo got $l; done")
            let reader = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            r = try d.cli(["input", "feed", reader], input: Data("one\ntwo\n".utf8))
            #expect(r.status == 0, "\(r.stderr)")
            let fed = try await waitLogs(d, "feed", reader) { self.text($0.stdout) == "got one\ngot two\n" }
            #expect(text(fed.stdout) == "got one\ngot two\n", "\(fed)")

            // 4 KiB kept of ~60 KB written: the newest output stays, what was dropped is counted.
            r = try d.cli(
                "exec", "-d", "--keep", "4K", "feed", "--", "sh", "-c",
                "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done")
            let chatty = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let bounded = try await waitLogs(d, "feed", chatty) { $0.process.state == "exited" }
            #expect(bounded.stdout.count <= 4096 && bounded.droppedBytes > 40_000, "\(bounded.droppedBytes)")
            #expect(text(bounded.stdout).hasSuffix("line 4999\n"))

            _ = try d.client.call(Endpoints.processStart, StartProcessRequest(argv: ["sleep", "1007"]), name: "feed")
            #expect(try runCommand("/usr/bin/pgrep", ["-f", "sleep 1007"]).status == 0)
            try d.client.callNoContent("DELETE", "/v1/sandboxes/feed?force=true")
            var left = try runCommand("/usr/bin/pgrep", ["-f", "sleep 1007|while read l"])
            for _ in 0..<50 where left.status == 0 {
                try await Task.sleep(for: .milliseconds(100))
                left = try runCommand("/usr/bin/pgrep", ["-f", "sleep 1007|while read l"])
            }
            #expect(left.status == 1, "no process of the deleted sandbox is left: \(left.stdout)")
            #expect(try runCommand("/usr/bin/pgrep", ["-f", "vivarium-shim " + d.stateDir]).status == 1, "nor a shim")
        }
    }

    @Test func anotherTenantsProcessesAreOutOfReach() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let mo = try d.principalTokens(tenant: "acme", name: "mo")
            let bo = try d.principalTokens(tenant: "beta", name: "bo")
            let _: SandboxInfo = try d.remote(mo.accessToken).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "mine"))
            let p = try d.remote(mo.accessToken).call(
                Endpoints.processStart, StartProcessRequest(argv: ["sleep", "1008"]), name: "mine")
            expectCode(.notFound) { try d.remote(bo.accessToken).call(Endpoints.processList, name: "mine") }
            expectCode(.notFound) {
                try d.remote(bo.accessToken).call(
                    Endpoints.processSignal, SignalProcessRequest(id: p.id, signal: "KILL"), name: "mine")
            }
            #expect(try d.remote(mo.accessToken).call(Endpoints.processList, name: "mine").items.map(\.id) == [p.id])
        }
    }
}
