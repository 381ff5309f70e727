import Foundation
import Synchronization
import Testing
import VivariumAudit
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// The audit trail (THREATS.md T12, T16): tampering with the database is detected and named, secrets
/// never reach it, a record that cannot be written stops the action, and a crash leaves a valid chain.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct AuditTests {
    /// Runs SQL against the daemon's database as an attacker with write access would: the append-only
    /// triggers are dropped first.
    @discardableResult
    func sql(_ d: TestDaemon, _ statements: String) throws -> String {
        let r = try runCommand(
            "/usr/bin/sqlite3",
            [
                "-cmd", ".timeout 5000", d.stateDir + "/db/vivarium.db",
                "DROP TRIGGER IF EXISTS audit_records_no_update;\n"
                    + "DROP TRIGGER IF EXISTS audit_records_no_delete;\n" + statements,
            ])
        #expect(r.status == 0, "sqlite3: \(r.stderr)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `vivarium audit verify`: nil when it passes, else the first bad sequence number it names.
    func verify(_ d: TestDaemon, _ extra: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) throws
        -> Int64?
    {
        let r = try d.cli(["audit", "verify"] + extra)
        if r.status == 0 {
            #expect(r.stdout.contains("audit trail verified"), sourceLocation: sourceLocation)
            return nil
        }
        guard let range = r.stderr.range(of: #"first bad (record|checkpoint) [0-9]+"#, options: .regularExpression)
        else {
            Issue.record("verify failed without naming a record: \(r.stderr)", sourceLocation: sourceLocation)
            return -1
        }
        return Int64(r.stderr[range].split(separator: " ").last!)
    }

    func records(_ d: TestDaemon, _ query: String = "", client: APIClient? = nil) throws -> [AuditRecord] {
        let page: Page<AuditRecord> = try (client ?? d.client).call("GET", "/v1/audit?limit=1000" + query)
        return page.items
    }

    @Test func editDeleteSwapTruncateAndForgedSignaturesAreNamed() async throws {
        let env = ["VIVARIUM_AUDIT_CHECKPOINT_SECONDS": "3600", "VIVARIUM_AUDIT_CHECKPOINT_RECORDS": "5"]
        try await TestDaemon.with(extraEnv: env) { d in
            for i in 0..<3 {
                _ = try d.create(CreateSandboxRequest(name: "t\(i)"))
                _ = try d.exec("t\(i)", ["/bin/true"])
            }
            let exportFile = d.stateDir + "/audit/checkpoints.jsonl"
            #expect(
                d.eventually { FileManager.default.fileExists(atPath: exportFile) },
                "five records bring a checkpoint long before the interval")
            // A graceful restart signs the head (the daemon.stop record) into the export file.
            try d.restart()
            let stopSeq = try #require(
                try records(d, "&action=daemon.stop").last?.seq, "the stop was recorded")
            let lines = try String(contentsOfFile: exportFile, encoding: .utf8).split(separator: "\n")
            #expect(lines.last?.contains("\"seq\":\(stopSeq)") == true, "the shutdown checkpoint is exported")
            let head = try #require(try records(d).last?.seq)
            #expect(head > stopSeq)
            #expect(try verify(d) == nil, "an untouched trail verifies")

            // Edit one field of a middle record.
            let target = try sql(d, "SELECT target FROM audit_records WHERE seq = 5;")
            try sql(d, "UPDATE audit_records SET target = 'nothing-to-see' WHERE seq = 5;")
            #expect(try verify(d) == 5)
            try sql(d, "UPDATE audit_records SET target = '\(target)' WHERE seq = 5;")
            #expect(try verify(d) == nil)

            // Delete a middle record.
            try sql(
                d,
                "CREATE TABLE saved AS SELECT * FROM audit_records WHERE seq = 7; DELETE FROM audit_records WHERE seq = 7;"
            )
            #expect(try verify(d) == 7)
            try sql(d, "INSERT INTO audit_records SELECT * FROM saved; DROP TABLE saved;")
            #expect(try verify(d) == nil)

            // Swap two records.
            let swap = """
                UPDATE audit_records SET seq = -1 WHERE seq = 9; UPDATE audit_records SET seq = 9 WHERE seq = 10;
                UPDATE audit_records SET seq = 10 WHERE seq = -1;
                """
            try sql(d, swap)
            #expect(try verify(d) == 9)
            try sql(d, swap)
            #expect(try verify(d) == nil)

            // Cut off the newest records, and the store's checkpoints with them: the exported checkpoint
            // still names how far the trail went.
            let cut = stopSeq - 2
            try sql(
                d,
                """
                CREATE TABLE saved AS SELECT * FROM audit_records WHERE seq >= \(cut);
                CREATE TABLE saved_cp AS SELECT * FROM audit_checkpoints;
                DELETE FROM audit_records WHERE seq >= \(cut); DELETE FROM audit_checkpoints;
                """)
            #expect(try verify(d, ["--checkpoints", exportFile]) == cut)
            try sql(
                d,
                """
                INSERT INTO audit_records SELECT * FROM saved; INSERT INTO audit_checkpoints SELECT * FROM saved_cp;
                DROP TABLE saved; DROP TABLE saved_cp;
                """)
            #expect(try verify(d, ["--checkpoints", exportFile]) == nil)

            // Replace a checkpoint's signature with one made by another key.
            let forged = d.root + "/forged.jsonl"
            var last = String(lines.last!)
            let sig = try #require(last.range(of: #""signature":"[^"]*""#, options: .regularExpression))
            let otherKey = Data((0..<64).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            last.replaceSubrange(sig, with: "\"signature\":\"\(otherKey)\"")
            try (lines.dropLast().joined(separator: "\n") + "\n" + last + "\n").write(
                toFile: forged, atomically: true, encoding: .utf8)
            #expect(try verify(d, ["--checkpoints", forged]) == stopSeq)

            // An alteration after the last checkpoint is seen before the next one is signed.
            let newest = try #require(try records(d).last?.seq)
            #expect(try records(d, "&action=audit.tamper_detected").isEmpty)
            try sql(d, "UPDATE audit_records SET outcome = 'failed' WHERE seq = \(newest);")
            for i in 0..<3 { _ = try d.create(CreateSandboxRequest(name: "u\(i)")) }
            #expect(d.eventually { (try? records(d, "&action=audit.tamper_detected"))?.isEmpty == false })
            #expect(try verify(d) == newest)
        }
    }

    @Test func tokensKeysAndSecretsNeverReachTheDatabaseOrTheExport() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let _: PrincipalInfo = try d.client.call(
                "POST", "/v1/principals", body: CreatePrincipalRequest(name: "dev", kind: "user", role: "member"))
            let key: APIKeyInfo = try d.client.call(
                "POST", "/v1/principals/dev/keys", body: CreateAPIKeyRequest(scopes: nil))
            let pair: TokenPair = try d.client.call(
                "POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
            let remote = d.remote(pair.accessToken)
            let _: SandboxInfo = try remote.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "s"))
            let password = "correct-horse-battery-staple-\(randomHex(bytes: 4))"
            let awsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY\(randomHex(bytes: 6))"
            let envSecret = "env-value-\(randomHex(bytes: 8))"
            let argv = [
                "/bin/echo", pair.accessToken, key.apiKey, pair.refreshToken, "--password", password,
                "AWS_SECRET_ACCESS_KEY=\(awsSecret)",
            ]
            let result: ExecResult = try remote.call(
                "POST", "/v1/sandboxes/s/exec", body: ExecRequest(argv: argv, env: ["API_TOKEN": envSecret]))
            #expect(result.exitCode == 0)
            // A stolen token presented wrongly, and a refresh replayed: both recorded, neither kept.
            _ = try d.remote(pair.refreshToken).http.send("GET", "/v1/sandboxes")
            let _: TokenPair = try d.client.call(
                "POST", "/v1/tokens", body: TokenRequest(grantType: "refresh_token", refreshToken: pair.refreshToken))
            _ = try d.client.http.send(
                "POST", "/v1/tokens",
                body: try WireCoding.encoder().encode(
                    TokenRequest(grantType: "refresh_token", refreshToken: pair.refreshToken)))

            let export = try d.cli("audit", "export", "--since", "1")
            #expect(export.status == 0)
            let exec = try #require(
                try records(d, "&action=sandbox.exec&outcome=started").first, "the exec intent was recorded")
            #expect(exec.details["argv"]?.contains("[redacted]") == true)
            #expect(exec.details["env_keys"] == "API_TOKEN")
            #expect(
                try records(d, "&action=token.refresh_reuse").contains {
                    $0.action == "token.refresh_reuse" && $0.outcome == "alert" && $0.target == "dev"
                }, "the replay raised an alert")
            #expect(
                try records(d, "&action=auth.failure").contains {
                    $0.action == "auth.failure" && $0.actor == "anonymous"
                })
            d.stop()

            let secrets = [
                pair.accessToken, key.apiKey, String(key.apiKey.split(separator: "_").last!), pair.refreshToken,
                password, awsSecret, envSecret,
            ]
            let files = ["/db/vivarium.db", "/db/vivarium.db-wal", "/audit/checkpoints.jsonl"].map { d.stateDir + $0 }
                .filter { FileManager.default.fileExists(atPath: $0) }
            #expect(files.count >= 2)
            for (name, data) in files.map({ ($0, FileManager.default.contents(atPath: $0) ?? Data()) })
                + [("audit export", Data(export.stdout.utf8))]
            {
                // JSON writes "/" as "\/": look for both spellings.
                for s in secrets + secrets.map({ $0.replacingOccurrences(of: "/", with: "\\/") }) {
                    #expect(data.range(of: Data(s.utf8)) == nil, "\(s.prefix(12))… found in \(name)")
                }
            }
        }
    }

    @Test func whenTheTrailCannotBeWrittenNothingHappens() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "before"))
            try sql(
                d,
                "CREATE TRIGGER audit_block BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'blocked'); END;")
            let (status, err) = try d.raw("POST", "/v1/sandboxes", body: Data(#"{"name":"after"}"#.utf8))
            #expect(status == 503)
            #expect(err?.error.code == "unavailable")
            let list: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes")
            #expect(list.items.map(\.name) == ["before"], "the refused create left no record")
            #expect(try d.crunContainers().count == 1)
            #expect(d.bundles().count == 1)
            // An exec whose intent cannot be recorded does not run.
            let (execStatus, _) = try d.raw(
                "POST", "/v1/sandboxes/before/exec", body: Data(#"{"argv":["/bin/touch","/ran"]}"#.utf8))
            #expect(execStatus == 503)
            try sql(d, "DROP TRIGGER audit_block;")
            let (code, _, _) = try d.sh("before", "test -e /ran")
            #expect(code == 1, "the refused exec never ran")
            _ = try d.create(CreateSandboxRequest(name: "after"))
            #expect(try verify(d) == nil)
        }
    }

    @Test func aFailingCheckpointExportRaisesOneAlert() async throws {
        let env = [
            "VIVARIUM_AUDIT_EXPORT": "/nonexistent-vivarium-\(randomHex(bytes: 4))/checkpoints.jsonl",
            "VIVARIUM_AUDIT_CHECKPOINT_RECORDS": "2",
        ]
        try await TestDaemon.with(extraEnv: env) { d in
            for i in 0..<3 {
                let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: "x\(i)"))
            }
            #expect(d.eventually { (try? records(d, "&action=audit.export_failed"))?.count == 1 })
            let alert = try #require(try records(d, "&action=audit.export_failed").first?.seq)
            for i in 3..<6 {
                let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: "x\(i)"))
            }
            // Wait for a checkpoint signed after the alert: its export failed too, in the same streak.
            #expect(
                try d.eventually {
                    try (d.client.call("GET", "/v1/audit/checkpoints") as AuditCheckpointList).checkpoints
                        .contains { $0.seq > alert }
                }, "checkpoints still reach the store")
            #expect(try records(d, "&action=audit.export_failed").count == 1, "one alert per failure streak")
        }
    }

    @Test func aCrashDuringABurstLeavesAValidChain() async throws {
        try await TestDaemon.with { d in
            let done = Mutex(false)
            let writers = (0..<3).map { w in
                Thread {
                    var i = 0
                    while !done.withLock({ $0 }) {
                        _ = try? d.client.http.send(
                            "POST", "/v1/tenants", body: Data(#"{"name":"w\#(w)-\#(i)"}"#.utf8))
                        i += 1
                    }
                }
            }
            writers.forEach { $0.start() }
            usleep(700_000)
            d.crash()
            done.withLock { $0 = true }
            usleep(200_000)
            try d.start()
            let tenants = try records(d, "&action=tenant.create")
            #expect(tenants.count > 10, "the burst was under way when the daemon died")
            #expect(try verify(d) == nil)
        }
    }

    @Test func aTenantAuditorSeesItsTenantOnlyAndAMemberNothing() async throws {
        try await TestDaemon.with(tcp: true) { d in
            func token(_ tenant: String, _ name: String, _ role: String) throws -> String {
                let _: PrincipalInfo = try d.client.call(
                    "POST", "/v1/principals?tenant=\(tenant)", body: CreatePrincipalRequest(name: name, role: role))
                let key: APIKeyInfo = try d.client.call(
                    "POST", "/v1/principals/\(name)/keys?tenant=\(tenant)", body: CreateAPIKeyRequest(scopes: nil))
                let pair: TokenPair = try d.client.call(
                    "POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
                return pair.accessToken
            }
            for t in ["acme", "beta"] {
                let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: t))
            }
            let auditor = try token("acme", "eve", "auditor")
            let member = try token("acme", "mo", "member")
            let betaAdmin = try token("beta", "bo", "tenant-admin")
            let _: PrincipalInfo = try d.remote(betaAdmin).call(
                "POST", "/v1/principals", body: CreatePrincipalRequest(name: "secret-project"))
            let _: SandboxInfo = try d.remote(member).call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "acme-box"))

            // Naming another tenant is for admins only: the one rule for the tenant a call acts in.
            let other = try d.remote(auditor).http.send("GET", "/v1/audit?tenant=beta")
            #expect(other.status == 403)
            let seen = try records(d, client: d.remote(auditor))
            #expect(!seen.isEmpty)
            #expect(seen.allSatisfy { $0.tenant == "acme" }, "an auditor reads its own tenant only")
            #expect(seen.contains { $0.action == "sandbox.create" && $0.target == "acme-box" })
            #expect(!seen.contains { $0.target == "secret-project" })
            let all = try records(d)
            #expect(all.contains { $0.target == "secret-project" && $0.tenant == "beta" }, "an admin reads all")

            for (who, tok) in [("member", member), ("auditor", auditor)] {
                let path = who == "member" ? "/v1/audit" : "/v1/audit/checkpoints"
                let r = try d.remote(tok).http.send("GET", path)
                #expect(r.status == 403, "\(who) GET \(path)")
            }
            #expect(
                try records(d, "&action=policy.denied").contains {
                    $0.action == "policy.denied" && $0.actorName == "mo" && $0.details["action"] == "audit.list"
                }, "the denial is recorded")
        }
    }
}
