import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// schemathesis (PyPI) against a real daemon, as a tenant member: every operation of the served OpenAPI
/// document, with generated valid and invalid data, with every check but `positive_data_acceptance`
/// (the document states less than the API enforces: byte-counted lengths, for one). Any 5xx, crash or
/// answer that breaks the document fails the test. Responses may take 60 s on a slow machine: a stop waits
/// for the sandbox's init up to the stop timeout (2 s here), and a generated exec may run until its own timeout.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct SchemaTests {
    /// `st` on the PATH.
    static var schemathesis: String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/st"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    @Test func theAPIKeepsToItsDocumentUnderGeneratedInput() async throws {
        let st = try #require(Self.schemathesis, "schemathesis is not installed (pip install schemathesis)")
        // Limits high enough that the generated traffic is judged on its content, not throttled; the
        // tenant quota lower than the host's sandbox slots so that creates stop at a clear 403.
        let env = [
            "VIVARIUM_REQUESTS_PER_SECOND": "1000000", "VIVARIUM_REQUEST_BURST": "1000000",
            "VIVARIUM_AUTH_FAILURES_PER_MINUTE": "100000", "VIVARIUM_MAX_SANDBOXES": "64",
            // No pull is allowed (a 403 before any connection): generated references never leave the machine.
            "VIVARIUM_REGISTRY_ALLOWED": "",
            "VIVARIUM_QUOTA_SANDBOXES": "12", "VIVARIUM_LOG_LEVEL": "warning", "VIVARIUM_STOP_TIMEOUT_SECONDS": "2",
        ]
        try await TestDaemon.with(extraEnv: env, tcp: true) { d in
            let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: "fuzz"))
            let _: PrincipalInfo = try d.client.call(
                "POST", "/v1/principals?tenant=fuzz", body: CreatePrincipalRequest(name: "member", role: "member"))
            let key: APIKeyInfo = try d.client.call(
                "POST", "/v1/principals/member/keys?tenant=fuzz", body: CreateAPIKeyRequest())
            let pair: TokenPair = try d.client.call(
                "POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
            let base = "http://127.0.0.1:\(d.tcpPort!)"
            // 413 (a body over the API's bound) is a rejection of invalid data too.
            let config = d.root + "/schemathesis.toml"
            try Data(
                """
                [checks.negative_data_rejection]
                expected-statuses = [
                    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429",
                ]

                """.utf8
            ).write(to: URL(fileURLWithPath: config))
            let r = try runCommand(
                st,
                [
                    "--config-file", config, "run", base + "/v1/openapi.json", "--url", base,
                    "-H", "Authorization: Bearer \(pair.accessToken)",
                    "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "12",
                    "--max-time", "100", "--request-timeout", "60", "--max-response-time", "60", "--workers", "1",
                    "--seed", "1", "--generation-deterministic", "--no-shrink", "--output-truncate", "true",
                ], env: ["NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"])
            print("--- schemathesis summary ---\n\(r.stdout.suffix(900))")
            if r.status != 0 {
                FileHandle.standardError.write(
                    Data(
                        "--- schemathesis ---\n\(r.stdout.suffix(20000))\n\(r.stderr)\n--- daemon log ---\n\(d.log.suffix(6000))\n"
                            .utf8))
            }
            // The failures themselves go into the issue, where a CI summary shows them.
            let failures = r.stdout.range(of: "FAILURES").map { String(r.stdout[$0.lowerBound...]) } ?? r.stdout
            #expect(r.status == 0, "schemathesis found problems:\n\(failures.prefix(6000))")
            #expect(try d.client.http.send("GET", "/healthz").status == 200, "the daemon survived")
        }
    }
}
