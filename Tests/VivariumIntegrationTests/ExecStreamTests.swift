import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Streamed exec over a real WebSocket client (Hummingbird's) and through `vivarium exec`: terminals,
/// live output, input, signals, and the refusals that come before the upgrade.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct ExecStreamTests {
    /// What a stream delivered, in order of arrival.
    struct Received {
        var stdout: [UInt8] = []
        var stderr: [UInt8] = []
        var exit: StreamControl?
        var errors: [StreamControl] = []
        var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// The socket's side the test drives: send input and controls, read until a condition holds.
    struct Session {
        var messages: WebSocketInboundMessageStream.AsyncIterator
        let outbound: WebSocketOutboundWriter
        var received = Received()

        func input(_ text: String) async throws {
            var b = ByteBuffer()
            b.writeInteger(StreamChannel.stdin.rawValue)
            b.writeString(text)
            try await outbound.write(.binary(b))
        }

        func control(_ c: StreamControl) async throws {
            try await outbound.write(.text(String(decoding: try WireCoding.encoder().encode(c), as: UTF8.self)))
        }

        /// Reads messages until `done` holds of what arrived (or the exit, or the end of the socket).
        mutating func read(until done: (Received) -> Bool) async throws -> Received {
            while !done(received), received.exit == nil, let m = try await messages.next() {
                switch m {
                case .binary(var b):
                    let channel = b.readInteger(as: UInt8.self)
                    let bytes = b.readBytes(length: b.readableBytes) ?? []
                    if channel == StreamChannel.stderr.rawValue {
                        received.stderr += bytes
                    } else {
                        received.stdout += bytes
                    }
                case .text(let t):
                    let c = try WireCoding.decoder().decode(StreamControl.self, from: Data(t.utf8))
                    if c.type == .exit { received.exit = c } else { received.errors.append(c) }
                }
            }
            return received
        }
    }

    /// Opens the stream of `box` with `token` and sends `request`; `body` drives it.
    func stream(
        _ d: TestDaemon, _ box: String, token: String, _ request: StreamExecRequest,
        _ body: @escaping @Sendable (inout Session) async throws -> Void
    ) async throws {
        try await WebSocketClient.connect(
            url: "ws://127.0.0.1:\(d.tcpPort!)/v1/sandboxes/\(box)/exec/stream",
            configuration: .init(additionalHeaders: [.authorization: "Bearer \(token)"]), logger: Logger(label: "ws")
        ) { inbound, outbound, _ in
            try await outbound.write(
                .text(String(decoding: try WireCoding.encoder().encode(request), as: UTF8.self)))
            var session = Session(messages: inbound.messages(maxSize: 1 << 24).makeAsyncIterator(), outbound: outbound)
            try await body(&session)
        }
    }

    func execRecords(_ d: TestDaemon, _ box: String) throws -> [AuditRecord] {
        let page: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000&action=sandbox.exec")
        return page.items.filter { $0.target == box }
    }

    @Test func anInteractiveShellGetsATerminalThatResizesAndItsExitStatus() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let mo = try d.principalTokens(tenant: "acme", name: "mo")
            let _: SandboxInfo = try d.remote(mo.accessToken).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "term"))
            try await stream(
                d, "term", token: mo.accessToken,
                StreamExecRequest(argv: ["sh"], tty: true, rows: 24, columns: 80, stdin: true)
            ) { s in
                try await s.input("stty size; tty\n")
                var r = try await s.read { $0.stdoutText.contains("/dev/pts/") }
                #expect(r.stdoutText.contains("24 80"), "the terminal has the asked size: \(r.stdoutText)")
                #expect(r.stdoutText.contains("/dev/pts/"), "the shell's stdin is a terminal")

                try await s.control(StreamControl(.resize, rows: 40, columns: 132))
                try await s.input("stty size\n")
                r = try await s.read { $0.stdoutText.contains("40 132") }
                #expect(r.stdoutText.contains("40 132"), "a resize reaches the terminal: \(r.stdoutText)")

                // ^C (typed, as a terminal's keys are) interrupts the foreground command, not the shell.
                try await s.input("sleep 100\n")
                try await Task.sleep(for: .milliseconds(300))
                try await s.input("\u{3}")
                try await s.input("echo after-$((6*7))\n")
                r = try await s.read { $0.stdoutText.contains("after-42") }
                #expect(r.stdoutText.contains("after-42"), "the shell survived ^C: \(r.stdoutText)")

                try await s.input("exit 7\n")
                r = try await s.read { _ in false }
                #expect(r.exit?.exitCode == 7 && r.exit?.timedOut == false, "\(String(describing: r.exit))")
                #expect(r.stderr.isEmpty, "a terminal has one output stream")
            }
            let outcome = try #require(try execRecords(d, "term").first { $0.outcome == "ok" })
            #expect(outcome.details["exit_code"] == "7" && outcome.details["ended"] == "exited")
            #expect(Int(outcome.details["stdin_bytes"] ?? "") ?? 0 > 20, "the bytes typed are counted")
            #expect(
                try execRecords(d, "term").contains {
                    $0.outcome == "started" && $0.details["stream"] == "true" && $0.details["tty"] == "true"
                        && $0.actorName == "mo"
                })
        }
    }

    @Test func outputArrivesWhileTheCommandRunsAndInputReachesIt() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let mo = try d.principalTokens(tenant: "acme", name: "mo")
            let _: SandboxInfo = try d.remote(mo.accessToken).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "live"))
            try await stream(
                d, "live", token: mo.accessToken,
                StreamExecRequest(
                    argv: ["sh", "-c", "tr a-z A-Z; echo first; sleep 3; echo second >&2; exit 4"], stdin: true)
            ) { s in
                try await s.input("hello ")
                try await s.input("box\n")
                try await s.control(StreamControl(.closeStdin))
                var r = try await s.read { $0.stdoutText.contains("first") }
                let firstAt = ContinuousClock.now
                #expect(r.stdoutText == "HELLO BOX\nfirst\n", "input went through the command: \(r.stdoutText)")
                #expect(r.exit == nil && r.stderr.isEmpty, "the first line arrived before the command ended")
                r = try await s.read { _ in false }
                #expect(ContinuousClock.now - firstAt > .seconds(2), "the end came a sleep later")
                #expect(String(decoding: r.stderr, as: UTF8.self) == "second\n")
                #expect(r.exit?.exitCode == 4)
            }
            let outcome = try #require(try execRecords(d, "live").first { $0.outcome == "ok" })
            #expect(outcome.details["stdout_bytes"] == "16" && outcome.details["stderr_bytes"] == "7")
            #expect(outcome.details["stdin_bytes"] == "10")
        }
    }

    @Test func signalsTimeoutsAndAGoneCallerEndTheCommand() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let mo = try d.principalTokens(tenant: "acme", name: "mo")
            let _: SandboxInfo = try d.remote(mo.accessToken).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "sig"))
            try await stream(d, "sig", token: mo.accessToken, StreamExecRequest(argv: ["sleep", "100"])) { s in
                try await Task.sleep(for: .milliseconds(300))
                try await s.control(StreamControl(.signal, signal: "TERM"))
                let r = try await s.read { _ in false }
                #expect(r.exit?.exitCode == 143, "SIGTERM: \(String(describing: r.exit))")
            }
            // A bad control is answered with an error naming it; the command goes with the stream.
            try await stream(d, "sig", token: mo.accessToken, StreamExecRequest(argv: ["sleep", "101"])) { s in
                try await s.control(StreamControl(.signal, signal: "NOPE"))
                let r = try await s.read { _ in false }
                #expect(r.errors.first?.code == "invalid_argument" && r.errors.first?.message?.contains("TERM") == true)
                #expect(r.exit?.exitCode == 137, "SIGKILL")
            }
            try await stream(
                d, "sig", token: mo.accessToken, StreamExecRequest(argv: ["sleep", "102"], timeoutSeconds: 1)
            ) { s in
                let r = try await s.read { _ in false }
                #expect(r.exit?.timedOut == true && r.exit?.exitCode == 137)
            }
            // The caller goes away mid-command: every process of it is killed.
            try await stream(
                d, "sig", token: mo.accessToken, StreamExecRequest(argv: ["sh", "-c", "sleep 103 & sleep 104"])
            ) { s in
                try await Task.sleep(for: .milliseconds(500))
                try await s.outbound.close(.normalClosure, reason: nil)
            }
            var left = ""
            for _ in 0..<50 {
                let ps = try d.remote(mo.accessToken).call(
                    Endpoints.sandboxExec,
                    ExecRequest(argv: ["sh", "-c", "ps -o args | grep 'sleep 10[0-9]' || true"]),
                    name: "sig")
                left = String(decoding: ps.stdout, as: UTF8.self)
                if left.isEmpty { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(left.isEmpty, "nothing of the streamed commands is left: \(left)")
            // Revoking the caller's tokens ends its stream (they are checked every 2 s) and the command.
            let started = ContinuousClock.now
            try await stream(d, "sig", token: mo.accessToken, StreamExecRequest(argv: ["sleep", "105"])) { s in
                try d.client.callNoContent(
                    "POST", "/v1/tokens/revoke?tenant=acme", body: RevokeRequest(principal: "mo"))
                let r = try await s.read { _ in false }
                #expect(r.exit?.exitCode == 137, "killed: \(String(describing: r.exit))")
            }
            #expect(ContinuousClock.now - started < .seconds(8), "the stream ended soon after the revocation")
            let ended = try execRecords(d, "sig").compactMap { $0.details["ended"] }
            #expect(Set(ended) == ["exited", "timed_out", "disconnected", "revoked"], "\(ended)")
        }
    }

    @Test func theUpgradeIsRefusedWithoutTheRightCredentialsOrSandbox() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let mo = try d.principalTokens(tenant: "acme", name: "mo")
            let eve = try d.principalTokens(tenant: "acme", name: "eve", role: "auditor")
            let bo = try d.principalTokens(tenant: "beta", name: "bo")
            let _: SandboxInfo = try d.remote(mo.accessToken).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "mine"))
            func open(_ token: String?, path: String = "/v1/sandboxes/mine/exec/stream") throws {
                var http = SocketHTTPClient(host: "127.0.0.1", port: d.tcpPort!)
                http.bearer = token
                _ = try BlockingWebSocket.connect(http, path: path)
            }
            expectCode(.unauthenticated, "no token") { try open(nil) }
            expectCode(.unauthenticated, "a forged token") { try open(mo.accessToken.dropLast(4) + "AAAA") }
            expectCode(.unauthenticated, "a token in the query string is not a credential") {
                try open(nil, path: "/v1/sandboxes/mine/exec/stream?access_token=\(mo.accessToken)")
            }
            expectCode(.forbidden, "an auditor has no exec scope") { try open(eve.accessToken) }
            expectCode(.notFound, "another tenant's sandbox does not exist for this caller") {
                try open(bo.accessToken)
            }
            await #expect(throws: WebSocketClientError.webSocketUpgradeFailed, "Hummingbird's client is refused too") {
                try await stream(d, "mine", token: bo.accessToken, StreamExecRequest(argv: ["true"])) { _ in }
            }
            let page: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000")
            let failures = page.items.filter { $0.action == "auth.failure" && $0.target == "sandbox.exec" }
            #expect(failures.count == 3, "\(failures)")
            #expect(failures.contains { $0.details["message"]?.contains("only in the Authorization header") == true })
            #expect(
                page.items.contains { $0.action == "policy.denied" && $0.actorName == "eve" && $0.target == "mine" })
            let execs = page.items.filter { $0.action == "sandbox.exec" }
            #expect(
                execs.allSatisfy { $0.outcome == "failed" && $0.details["code"] == "not_found" },
                "nothing ran: \(execs)")

            // A valid upgrade with a malformed first message is answered with the error, then closed.
            var http = SocketHTTPClient(host: "127.0.0.1", port: d.tcpPort!)
            http.bearer = mo.accessToken
            let ws = try BlockingWebSocket.connect(http, path: "/v1/sandboxes/mine/exec/stream")
            try ws.send(.text(#"{"argv":["true"],"tty":false,"bogus":1}"#))
            let answer = try #require(try ws.receive())
            guard case .text(let t) = answer else { throw VivariumError(.internalError, "not text: \(answer)") }
            let c = try WireCoding.decoder().decode(StreamControl.self, from: Data(t.utf8))
            #expect(c.type == .error && c.code == "bad_request" && c.message?.contains("bogus") == true, "\(c)")
            #expect(try ws.receive() == nil, "then the socket closes")
        }
    }

    @Test func vivariumExecStreamsPipesStdinAndGivesATerminal() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "cli"))
            // A directory with a symlink, modes and nested files, through `tar c | vivarium exec -- tar x`.
            let src = d.root + "/src"
            try FileSystem.makeDirectory(src, mode: 0o755)
            try FileSystem.makeDirectory(src + "/sub", mode: 0o750)
            _ = chmod(src + "/sub", 0o750)
            try "one\n".write(toFile: src + "/sub/one", atomically: true, encoding: .utf8)
            _ = chmod(src + "/sub/one", 0o604)
            _ = symlink("sub/one", src + "/link")
            let archive = try runCommandData("/bin/tar", ["c", "-C", src, "."])
            var r = try d.cli(
                [
                    "exec", "cli", "--", "sh", "-c",
                    "mkdir /tmp/in && tar x -C /tmp/in && cd /tmp/in && "
                        + "stat -c '%n %a' sub sub/one && readlink link && cat link",
                ], input: archive)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout == "sub 750\nsub/one 604\nsub/one\none\n", "\(r.stdout)")

            // -n: the command's stdin is empty even when vivarium's is not.
            r = try d.cli(["exec", "-n", "cli", "--", "wc", "-c"], input: Data("not sent".utf8))
            #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(r.stdout)")
            r = try d.cli(["exec", "cli", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
            #expect(r.status == 3 && r.stdout == "out\n" && r.stderr == "err\n")
            r = try d.cli(["exec", "--timeout", "1", "cli", "--", "sleep", "30"])
            #expect(r.status == 124 && r.stderr.contains("timed out"))

            // -it under a real terminal (script's pty): the window size is the caller's, exit status kept.
            let session = "stty size; tty >/dev/null && echo is-a-tty; exit 9\n"
            let command = "stty rows 31 cols 97; \(Paths.vivarium) exec -it cli -- sh"
            r = try runCommand(
                "/usr/bin/script", ["-qec", command, "/dev/null"], env: d.environment, input: Data(session.utf8))
            #expect(r.stdout.contains("31 97") && r.stdout.contains("is-a-tty"), "\(r.stdout)")
            #expect(r.status == 9, "\(r.stdout)")
        }
    }
}

/// Runs a program and returns its stdout bytes.
func runCommandData(_ path: String, _ args: [String]) throws -> Data {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return data
}
