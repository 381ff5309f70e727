import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import Synchronization
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// The authenticated WebSocket route (the audit feed) and the one-call `vivarium run`, against a real
/// daemon.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct StreamAndRunTests {
    /// Follows the audit feed as `headers` authenticate; `during` runs once the socket is open. Returns the
    /// records received until `until` says stop or the server closes.
    func follow(
        _ d: TestDaemon, headers: HTTPFields, during: @escaping @Sendable () async throws -> Void,
        until: @escaping @Sendable ([AuditRecord]) -> Bool
    ) async throws -> [AuditRecord] {
        let received = Mutex<[AuditRecord]>([])
        try await WebSocketClient.connect(
            url: "ws://127.0.0.1:\(d.tcpPort!)/v1/audit/follow",
            configuration: .init(additionalHeaders: headers), logger: Logger(label: "ws")
        ) { inbound, outbound, _ in
            try await during()
            for try await message in inbound.messages(maxSize: 1 << 20) {
                guard case .text(let text) = message else { continue }
                let r = try WireCoding.decoder().decode(AuditRecord.self, from: Data(text.utf8))
                if until(
                    received.withLock {
                        $0.append(r); return $0
                    })
                {
                    break
                }
            }
            try await outbound.close(.normalClosure, reason: nil)
        }
        return received.withLock { $0 }
    }

    @Test func anAuditorFollowsItsTenantsNewRecordsUntilItsTokenIsRevoked() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let auditor = try d.principalTokens(tenant: "acme", name: "eve", role: "auditor")
            let member = try d.principalTokens(tenant: "acme", name: "mo", role: "member")
            let outsider = try d.principalTokens(tenant: "beta", name: "bo", role: "member")
            let seen = try await follow(
                d, headers: [.authorization: "Bearer \(auditor.accessToken)"],
                during: {
                    let _: SandboxInfo = try d.remote(outsider.accessToken).call(
                        "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "beta-box"))
                    let _: SandboxInfo = try d.remote(member.accessToken).call(
                        "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "acme-box"))
                },
                until: { $0.contains { $0.action == "sandbox.create" && $0.outcome == "ok" } })
            #expect(
                seen.contains { $0.target == "acme-box" && $0.actorName == "mo" }, "new records arrive as they happen")
            #expect(seen.allSatisfy { $0.tenant == "acme" }, "another tenant's records never reach the feed")
            #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.seq < $1.seq }, "in sequence order")

            // The subprotocol carries the token too; revoking it ends the feed (the server closes it).
            let started = ContinuousClock.now
            let revoked = try await follow(
                d, headers: [.secWebSocketProtocol: "vivarium.bearer, \(auditor.accessToken)"],
                during: {
                    try d.client.callNoContent(
                        "POST", "/v1/tokens/revoke?tenant=acme", body: RevokeRequest(principal: "eve"))
                },
                until: { _ in false })
            #expect(ContinuousClock.now - started < .seconds(8), "the feed ended soon after the revocation")
            #expect(!revoked.contains { $0.action == "token.revoke" }, "nothing is sent once the token is revoked")
        }
    }

    @Test func anUpgradeWithoutTheRightCredentialsIsRefusedAndRecorded() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let member = try d.principalTokens(tenant: "acme", name: "mo", role: "member")
            for headers: HTTPFields in [
                [:], [.authorization: "Bearer forged"], [.authorization: "Bearer \(member.accessToken)"],
            ] {
                await #expect(throws: WebSocketClientError.webSocketUpgradeFailed, "no upgrade for \(headers)") {
                    _ = try await follow(d, headers: headers, during: {}, until: { _ in true })
                }
            }
            let page: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000")
            #expect(page.items.filter { $0.action == "auth.failure" && $0.target == "audit.follow" }.count == 2)
            #expect(
                page.items.contains {
                    $0.action == "policy.denied" && $0.actorName == "mo" && $0.details["action"] == "audit.follow"
                        && $0.details["door"] == "websocket"
                })
        }
    }

    @Test func runCreatesExecsAndRemovesInOneCallWithExecsGuarantees() async throws {
        try await TestDaemon.with { d in
            var r = try d.cli(
                "run", "--rm", "--", "sh", "-c", "echo out; echo err >&2; grep NoNewPrivs /proc/self/status; exit 3")
            #expect(r.status == 3)
            #expect(r.stdout == "out\nNoNewPrivs:\t1\n")
            #expect(r.stderr == "err\n")
            #expect(try d.crunContainers().isEmpty && d.bundles().isEmpty, "--rm leaves nothing behind")
            let trash = d.stateDir + "/trash"
            #expect(
                d.eventually(10) { ((try? FileManager.default.contentsOfDirectory(atPath: trash)) ?? ["?"]).isEmpty },
                "the deleted bundle is removed in the background")

            // One request: the create, the exec (intent and outcome) and the delete share its request id.
            let page: Page<AuditRecord> = try d.client.call("GET", "/v1/audit?limit=1000")
            let exec = try #require(page.items.last { $0.action == "sandbox.exec" && $0.outcome == "ok" })
            let same = page.items.filter { $0.requestId == exec.requestId }.map { "\($0.action) \($0.outcome)" }
            #expect(
                same == [
                    "sandbox.create started", "sandbox.create ok", "sandbox.exec started", "sandbox.exec ok",
                    "sandbox.delete started", "sandbox.delete ok",
                ])

            // A timeout kills the command, exits 124, and still removes the sandbox.
            r = try d.cli("run", "--rm", "--timeout", "1", "--", "sleep", "30")
            #expect(r.status == 124 && r.stderr.contains("timed out"))
            #expect(try d.crunContainers().isEmpty && d.bundles().isEmpty)

            // Without --rm the sandbox keeps running, with the create options it was given.
            r = try d.cli(
                "run", "--name", "kept", "--memory", "64M", "--env", "GREETING=hi", "--", "sh", "-c", "echo $GREETING")
            #expect(r.status == 0 && r.stdout == "hi\n", "\(r.stderr)")
            let kept = try d.get("kept")
            #expect(kept.state == "running" && kept.memoryBytes == 64 << 20)

            // A run needs both sandboxes:write and exec.
            let (status, body) = try d.raw(
                "POST", "/v1/sandboxes/run", body: Data(#"{"sandbox":{},"exec":{"argv":[]}}"#.utf8))
            #expect(status == 422 && body?.error.code == "invalid_argument")
            #expect(d.bundles().count == 1, "an invalid command creates nothing")
        }
    }
}
