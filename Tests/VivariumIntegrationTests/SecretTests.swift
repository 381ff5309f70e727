import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Secrets against a real daemon: where a value is (the bound box's /run/secrets) and everywhere it must
/// not be (database and WAL, logs, audit, API answers, other boxes, other tenants, environments).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct SecretTests {
    static func distinctive(_ what: String) -> String { "\(what)-\(randomHex(bytes: 12))" }

    /// Sets a secret through the API: the value is the body.
    static func set(
        _ d: TestDaemon, _ name: String, _ value: Data, query: [(String, String?)] = [], client: APIClient? = nil
    ) throws -> SecretInfo {
        try (client ?? d.client).upload(Endpoints.secretSet, value, name: name, query: query)
    }

    /// Files under `dir` that hold any of `needles` (grep reads every file, the disk pool's image included).
    static func filesHolding(_ needles: [String], under dir: String) throws -> [String] {
        let r = try runCommand(
            "/bin/grep", ["-r", "-l", "-a", "-F", "--devices=skip"] + needles.flatMap { ["-e", $0] } + [dir])
        return r.stdout.split(separator: "\n").map(String.init)
    }

    @Test func aValueReachesOnlyTheSandboxesItIsBoundToAndNothingElse() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let value = Self.distinctive("sv")
            let envValue = Self.distinctive("ev")
            // Bound by name after the box runs, and by label before it exists.
            _ = try d.create(CreateSandboxRequest(name: "bound", env: ["TOKEN": envValue]))
            _ = try d.create(CreateSandboxRequest(name: "unbound"))
            let s = try Self.set(d, "api-key", Data(value.utf8), query: [("sandbox", "bound"), ("gid", "1000")])
            #expect(s.version == 1 && s.sandboxes == ["bound"] && s.gid == 1000)
            _ = try Self.set(d, "db", Data((value + "-db").utf8), query: [("label", "team=x")])
            _ = try d.create(CreateSandboxRequest(name: "labeled", labels: ["team": "x"]))

            var (code, out, err) = try d.sh(
                "bound", "cat /run/secrets/api-key; echo; stat -c '%a %u %g' /run/secrets/api-key")
            #expect(code == 0 && out == "\(value)\n440 0 1000\n", "\(err)")
            (_, out, _) = try d.sh("labeled", "cat /run/secrets/db; echo; ls /run/secrets")
            #expect(out == "\(value)-db\ndb\n", "delivered at boot by label, and only what covers it")
            // The group --gid names may read it; another non-root user may not; nobody may write it.
            var r = try d.exec("bound", ["cat", "/run/secrets/api-key"], user: 1000)
            #expect(r.exitCode == 0 && string(r.stdout) == value)
            r = try d.exec("bound", ["cat", "/run/secrets/api-key"], user: 1001)
            #expect(r.exitCode != 0, "another user reads it")
            (code, _, _) = try d.sh("bound", "echo x > /run/secrets/api-key || rm /run/secrets/api-key")
            #expect(code != 0, "root in the box changes its secret")
            (code, out, _) = try d.sh("unbound", "ls /run/secrets; cat /run/secrets/api-key")
            #expect(code != 0 && out.isEmpty, "an unbound box sees it: \(out)")
            // Never an environment variable: no process of the bound box has the value in its environ.
            (_, out, _) = try d.sh(
                "bound", "cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep -c -F -f /run/secrets/api-key || true")
            #expect(out == "0\n")

            // Another tenant's box bound by the same name sees nothing, and that tenant lists nothing.
            let other = try d.principalTokens(tenant: "rival", name: "eve")
            let rival = d.remote(other.accessToken)
            let _: SandboxInfo = try rival.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "bound"))
            let rivalExec: ExecResult = try rival.call(
                "POST", "/v1/sandboxes/bound/exec", body: ExecRequest(argv: ["sh", "-c", "ls /run/secrets"]))
            #expect(string(rivalExec.stdout).isEmpty)
            #expect(try rival.call(Endpoints.secretList).items.isEmpty)

            // A token without secrets:read cannot make a box the secrets would go to (and so read them).
            _ = try d.principalTokens(tenant: "default", name: "agent")
            let narrow: TokenPair = try d.client.call(
                "POST", "/v1/tokens/issue",
                body: IssueTokenRequest(principal: "agent", scopes: ["sandboxes:read", "sandboxes:write", "exec"]))
            let agent = d.remote(narrow.accessToken)
            var refused = try agent.send(
                "POST", "/v1/sandboxes",
                body: try WireCoding.encoder().encode(CreateSandboxRequest(name: "spy", labels: ["team": "x"])))
            #expect(refused.status == 403, "\(string(refused.body))")
            refused = try agent.send(
                "POST", "/v1/sandboxes", body: try WireCoding.encoder().encode(CreateSandboxRequest(name: "plain")))
            #expect(refused.status == 201, "a box no secret covers is fine: \(string(refused.body))")

            // No answer, listing, inspect, audit record or log line holds a value; the audit names versions.
            let listing = try d.client.send("GET", "/v1/secrets")
            #expect(!string(listing.body).contains(value) && string(listing.body).contains("api-key"))
            for name in ["bound", "labeled"] {
                let inspect = try d.cli("inspect", name, "--json")
                #expect(!inspect.stdout.contains(value) && !inspect.stdout.contains(envValue), "\(inspect.stdout)")
            }
            let audit = try d.cli("audit", "export")
            #expect(audit.status == 0, "\(audit.stderr)")
            #expect(!audit.stdout.contains(value) && !audit.stdout.contains(envValue))
            #expect(audit.stdout.contains("secret.set") && audit.stdout.contains("secret.deliver"))
            #expect(!d.log.contains(value) && !d.log.contains(envValue))

            // On disk: nothing under the state directory (database, WAL, the disk pool's image) holds
            // either value; runtime specs and crun's state are on the daemon's tmpfs.
            #expect(FileSystem.exists(d.stateDir + "/db/vivarium.db-wal"))
            #expect(try Self.filesHolding([value, envValue], under: d.stateDir) == [])
            // crun keeps a copy of each box's runtime spec in its root: the box's environment is not in it
            // (the init runs without it; each exec gets it in a process file removed when it ends).
            #expect(try d.sh("bound", "echo $TOKEN").1 == envValue + "\n")
            #expect(try Self.filesHolding([value, envValue], under: d.crunRoot) == [])
            #expect(Mounts.isTmpfs(d.runtimeDir) && d.crunRoot.hasPrefix(d.runtimeDir + "/"))
            #expect(Set(Mounts.mounts(under: d.runtimeDir)) == [d.runtimeDir, d.runtimeDir + "/secrets"])
            #expect(!FileSystem.exists(d.stateDir + "/run/crun"))

            // Removal takes the file out of the running box.
            #expect(try d.cli("secret", "rm", "api-key").status == 0)
            (code, _, _) = try d.sh("bound", "test -e /run/secrets/api-key")
            #expect(code != 0)
        }
    }

    @Test func environmentsStoredInPlainTextAreSealedAtStart() async throws {
        try await TestDaemon.with { d in
            let id = try d.create(CreateSandboxRequest(name: "old")).id
            d.stop()
            // A row as an earlier version stored it: the value in the spec, nothing sealed.
            let plain = Self.distinctive("legacy")
            let r = try runCommand(
                "/usr/bin/sqlite3",
                [
                    d.stateDir + "/db/vivarium.db",
                    "UPDATE sandboxes SET spec = json_set(spec, '$.env.OLD', '\(plain)') WHERE name = 'old'",
                ])
            #expect(r.status == 0, "\(r.stderr)")
            // And what an earlier version kept on disk beside it: a bundle's runtime spec and crun's root.
            try Data(plain.utf8).write(to: URL(fileURLWithPath: d.stateDir + "/sandboxes/\(id)/config.json"))
            try FileSystem.makeDirectory(d.stateDir + "/run/crun/\(id)", mode: 0o700)
            try Data(plain.utf8).write(to: URL(fileURLWithPath: d.stateDir + "/run/crun/\(id)/config.json"))
            #expect(try Self.filesHolding([plain], under: d.stateDir).count == 3)
            try d.start()
            #expect(try Self.filesHolding([plain], under: d.stateDir) == [], "the database and its log hold it no more")
            #expect(try d.get("old").envNames == ["OLD"])
            _ = try d.cli("stop", "old")
            _ = try d.cli("start", "old")
            #expect(try d.sh("old", "echo $OLD").1 == plain + "\n", "the box still gets the value")
        }
    }

    @Test func aNewVersionReplacesTheFileAtomicallyWithinASecond() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "reader"))
            // Values of 1.5 MiB, each byte of one version different from the others'.
            let versions = (0..<6).map { i in Data((0..<(3 << 19)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) }) }
            let hashes = versions.map { Digest.of(Array($0)).hex }
            _ = try Self.set(d, "big", versions[0], query: [("sandbox", "reader")])
            // A tight reader in the box, hashing the file over and over.
            let (code, _, err) = try d.sh(
                "reader",
                "(while :; do sha256sum /run/secrets/big; done > /tmp/hashes 2>&1 & echo $! > /tmp/reader.pid)")
            #expect(code == 0, "\(err)")
            for (i, v) in versions.enumerated().dropFirst() {
                let start = Date()
                _ = try Self.set(d, "big", v, query: [("sandbox", "reader")])
                let seen = try d.eventually(1) {
                    try d.sh("reader", "sha256sum /run/secrets/big").1.hasPrefix(hashes[i])
                }
                #expect(seen, "version \(i + 1) reached the box within a second")
                #expect(Date().timeIntervalSince(start) < 1.5)
            }
            _ = try d.sh("reader", "kill $(cat /tmp/reader.pid)")
            let lines = try d.sh("reader", "cat /tmp/hashes").1.split(separator: "\n")
            #expect(lines.count > 10, "the reader read")
            let torn = lines.filter { line in !hashes.contains { line.hasPrefix($0) } }
            #expect(torn.isEmpty, "reads that saw no whole version: \(torn.prefix(3))")
            let versionsSeen = Set(lines.compactMap { line in hashes.firstIndex { line.hasPrefix($0) } })
            #expect(versionsSeen.count >= 2, "the reader saw the file change")
            // Every version is kept until pruned; pruning keeps the newest, which the box still has.
            var big = try d.client.call(Endpoints.secretList).items.first { $0.name == "big" }
            #expect(big?.version == 6 && big?.versions == 6)
            #expect(try d.cli("secret", "rm", "big", "--prune").status == 0)
            big = try d.client.call(Endpoints.secretList).items.first { $0.name == "big" }
            #expect(big?.version == 6 && big?.versions == 1)
            #expect(try d.sh("reader", "sha256sum /run/secrets/big").1.hasPrefix(hashes[5]))
        }
    }

    @Test func rotationRewrapsEveryDataKeyAndRowsDoNotMove() async throws {
        try await TestDaemon.with { d in
            for n in ["a", "b", "c"] { _ = try Self.set(d, n, Data("value-\(n)".utf8), query: [("label", "k=v")]) }
            _ = try d.create(CreateSandboxRequest(name: "box", env: ["E": "env-value"], labels: ["k": "v"]))
            var kms: KMSInfo = try d.client.call(Endpoints.kmsShow)
            #expect(kms.provider == "local" && kms.keys.map(\.id) == ["kek-1"] && kms.keys[0].wrapped == 4)
            let current = try d.cli("kms", "retire", "kek-1")
            #expect(
                current.status != 0 && current.stderr.contains("[invalid_state]"), "the current key: \(current.stderr)")

            kms = try d.client.call(Endpoints.kmsRotate)
            #expect(kms.keys.first { $0.current }?.id == "kek-2")
            #expect(
                try d.eventually(10) {
                    let k: KMSInfo = try d.client.call(Endpoints.kmsShow)
                    return k.keys.first { $0.id == "kek-1" }?.wrapped == 0
                        && k.keys.first { $0.id == "kek-2" }?.wrapped == 4
                }, "every data key (three secrets, one environment) re-wrapped")
            let retire = try d.cli("kms", "retire", "kek-1")
            #expect(retire.status == 0, "\(retire.stderr)")
            kms = try d.client.call(Endpoints.kmsShow)
            #expect(kms.keys.map(\.id) == ["kek-2"])

            // After a restart with only the new key, every secret and the environment still open.
            try d.restart()
            _ = try d.create(CreateSandboxRequest(name: "after", labels: ["k": "v"]))
            #expect(try d.sh("after", "cat /run/secrets/a /run/secrets/b /run/secrets/c").1 == "value-avalue-bvalue-c")
            #expect(try d.sh("box", "echo $E").1 == "env-value\n", "the adopted box's execs keep its environment")
            _ = try d.cli("stop", "box")
            _ = try d.cli("start", "box")
            #expect(try d.sh("box", "echo $E; cat /run/secrets/a").1 == "env-value\nvalue-a")

            // A row copied under another name, and a changed ciphertext, do not decrypt: a clear error.
            d.stop()
            let db = d.stateDir + "/db/vivarium.db"
            var r = try runCommand(
                "/usr/bin/sqlite3",
                [
                    db,
                    "UPDATE secrets SET ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'a'), wrapped_key = (SELECT wrapped_key FROM secrets WHERE name = 'a'), binding = '{\"sandboxes\":[],\"labels\":{\"moved\":\"1\"},\"gid\":0}' WHERE name = 'b'; UPDATE secrets SET ciphertext = zeroblob(length(ciphertext)), binding = '{\"sandboxes\":[],\"labels\":{\"zeroed\":\"1\"},\"gid\":0}' WHERE name = 'c';",
                ])
            #expect(r.status == 0, "\(r.stderr)")
            try d.start()
            // One box per tampered row: the one moved under another name, the one changed in place.
            for label in ["moved", "zeroed"] {
                let (status, e) = try d.raw(
                    "POST", "/v1/sandboxes",
                    body: try WireCoding.encoder().encode(CreateSandboxRequest(name: label, labels: [label: "1"])))
                #expect(
                    status == 500 && e?.error.code == "secret_unreadable",
                    "\(label): \(status) \(String(describing: e))")
                #expect(e?.error.message.contains("does not decrypt") == true)
            }
            #expect(try d.sh("after", "cat /run/secrets/a").1 == "value-a", "running boxes keep what they have")

            // A lost keyring is a start-up error, never a silent new one.
            d.stop()
            let ring = d.stateDir + "/kms/keyring.json"
            r = try runCommand("/bin/mv", [ring, ring + ".away"])
            expectCode(.unavailable, "a daemon without its keyring") { try d.start() }
            #expect(d.log.contains("is missing but secrets are wrapped by it"))
            #expect(!FileSystem.exists(ring))
            _ = try runCommand("/bin/mv", [ring + ".away", ring])
            try d.start()
        }
    }
}
