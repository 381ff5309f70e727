import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Zero-trust control plane over the loopback TCP listener (THREATS.md T8–T10).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct IdentityTests {
    /// Local root (unix socket) sets up a tenant with one principal and returns a token for it.
    func principal(
        _ d: TestDaemon, tenant: String, name: String, role: String, kind: String = "user", scopes: [String]? = nil
    ) throws -> TokenPair {
        if !(try d.client.call("GET", "/v1/tenants") as Page<TenantInfo>).items.contains(where: { $0.name == tenant }) {
            let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: tenant))
        }
        let _: PrincipalInfo = try d.client.call(
            "POST", "/v1/principals?tenant=\(tenant)", body: CreatePrincipalRequest(name: name, kind: kind, role: role))
        let key: APIKeyInfo = try d.client.call(
            "POST", "/v1/principals/\(name)/keys?tenant=\(tenant)", body: CreateAPIKeyRequest(scopes: scopes))
        #expect(key.apiKey.hasPrefix("viv_"))
        return try d.client.call("POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
    }

    func status(_ c: APIClient, _ method: String, _ path: String, body: String? = nil) throws -> (Int, String?) {
        let r = try c.http.send(method, path, body: body.map { Data($0.utf8) })
        return (r.status, (try? WireCoding.decoder().decode(ErrorBody.self, from: r.body))?.error.code)
    }

    @Test func anotherTenantsResourcesAreInvisibleAndAdminRoutesForbidden() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let acme = try principal(d, tenant: "acme", name: "boss", role: "tenant-admin")
            let globex = try principal(d, tenant: "globex", name: "mallory", role: "member")
            let a = d.remote(acme.accessToken)
            let m = d.remote(globex.accessToken)
            let created: SandboxInfo = try a.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "vault"))
            #expect(created.tenant == "acme")

            // Every tenant-scoped route naming acme's sandbox: 404, exactly as for a name that does not exist.
            for (method, path, body) in [
                ("GET", "/v1/sandboxes/vault", nil), ("DELETE", "/v1/sandboxes/vault?force=true", nil),
                ("POST", "/v1/sandboxes/vault/start", nil), ("POST", "/v1/sandboxes/vault/stop", nil),
                ("POST", "/v1/sandboxes/vault/exec", #"{"argv":["true"]}"#),
            ] {
                let (s, code) = try status(m, method, path, body: body)
                #expect(s == 404 && code == "not_found", "\(method) \(path) from another tenant answered \(s)")
                let (s2, _) = try status(m, method, path.replacingOccurrences(of: "vault", with: "nothing"), body: body)
                #expect(s2 == s, "existence must not leak")
            }
            // Collections show the caller's own tenant only.
            let mine: Page<SandboxInfo> = try m.call("GET", "/v1/sandboxes")
            #expect(mine.items.isEmpty)
            // Routes above a member's role: 403.
            for (method, path, body) in [
                ("GET", "/v1/tenants", nil), ("POST", "/v1/tenants", #"{"name":"x"}"#),
                ("DELETE", "/v1/tenants/acme", nil),
                ("POST", "/v1/keys/rotate", nil), ("GET", "/v1/principals", nil),
                ("POST", "/v1/principals", #"{"name":"y"}"#), ("DELETE", "/v1/principals/boss", nil),
                ("POST", "/v1/principals/boss/disable", nil), ("POST", "/v1/principals/boss/keys", "{}"),
                ("POST", "/v1/tokens/issue", #"{"principal":"boss","scopes":["exec"]}"#),
                ("POST", "/v1/tokens/revoke", #"{"tenant":"acme"}"#),
                ("POST", "/v1/images", #"{"path":"/","name":"z"}"#),
                ("GET", "/v1/sandboxes?tenant=acme", nil),
            ] {
                let (s, code) = try status(m, method, path, body: body)
                #expect(s == 403 && code == "forbidden", "\(method) \(path) by a member answered \(s)")
            }
            // A member removes only its own tenant's images: the shared base is not one of them.
            let (gone, why) = try status(m, "DELETE", "/v1/images/base")
            #expect(gone == 404 && why == "image_not_found", "a member's delete of the shared base answered \(gone)")
            // acme's sandbox is untouched and acme still reaches it.
            let r: ExecResult = try a.call("POST", "/v1/sandboxes/vault/exec", body: ExecRequest(argv: ["hostname"]))
            #expect(String(decoding: r.stdout, as: UTF8.self) == "vault\n")
            // No credentials at all: 401.
            let (s, code) = try status(d.remote(), "GET", "/v1/sandboxes")
            #expect(s == 401 && code == "unauthenticated")
        }
    }

    @Test func aTokenWithoutTheScopeIsForbidden() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let reader = try principal(d, tenant: "acme", name: "reader", role: "member", scopes: ["sandboxes:read"])
            let c = d.remote(reader.accessToken)
            let _: Page<SandboxInfo> = try c.call("GET", "/v1/sandboxes")
            let (s, code) = try status(c, "POST", "/v1/sandboxes", body: #"{"name":"nope"}"#)
            #expect(s == 403 && code == "forbidden")
            #expect(d.bundles().isEmpty)
        }
    }

    @Test func anAgentTokenReachesOnlyTheSandboxItWasIssuedFor() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let admin = try principal(d, tenant: "acme", name: "boss", role: "tenant-admin")
            let a = d.remote(admin.accessToken)
            let _: SandboxInfo = try a.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "one"))
            let _: SandboxInfo = try a.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "two"))
            let _: PrincipalInfo = try a.call(
                "POST", "/v1/principals", body: CreatePrincipalRequest(name: "bot", kind: "agent"))
            let agent: TokenPair = try a.call(
                "POST", "/v1/tokens/issue",
                body: IssueTokenRequest(
                    principal: "bot", sandbox: "one", scopes: ["exec", "sandboxes:read"], ttlSeconds: 600))
            let bot = d.remote(agent.accessToken)
            let ok: ExecResult = try bot.call("POST", "/v1/sandboxes/one/exec", body: ExecRequest(argv: ["true"]))
            #expect(ok.exitCode == 0)
            #expect(try status(bot, "POST", "/v1/sandboxes/two/exec", body: #"{"argv":["true"]}"#).0 == 404)
            #expect(try status(bot, "GET", "/v1/sandboxes").0 == 403, "a bound token cannot list the tenant")
            #expect(try status(bot, "DELETE", "/v1/sandboxes/one?force=true").0 == 403, "no sandboxes:write scope")
            // The same name re-created is another sandbox: the token does not follow the name.
            try a.callNoContent("DELETE", "/v1/sandboxes/one?force=true")
            let _: SandboxInfo = try a.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "one"))
            #expect(try status(bot, "POST", "/v1/sandboxes/one/exec", body: #"{"argv":["true"]}"#).0 == 404)
        }
    }

    @Test func tokensInQueryStringsAreRefusedAndRevocationIsImmediate() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let pair = try principal(d, tenant: "acme", name: "ann", role: "member")
            let (s, code) = try status(d.remote(), "GET", "/v1/sandboxes?access_token=\(pair.accessToken)")
            #expect(s == 401 && code == "unauthenticated")
            let c = d.remote(pair.accessToken)
            let _: Page<SandboxInfo> = try c.call("GET", "/v1/sandboxes")
            let payload = pair.accessToken.split(separator: ".")[1]
            var b64 = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
            while b64.count % 4 != 0 { b64 += "=" }
            let claims = try JSONSerialization.jsonObject(with: Data(base64Encoded: b64)!) as! [String: Any]
            let jti = claims["jti"] as! String
            try d.client.callNoContent("POST", "/v1/tokens/revoke", body: RevokeRequest(jti: jti))
            #expect(try status(c, "GET", "/v1/sandboxes").0 == 401)
            // The revocation ends the token's family: its refresh token no longer mints a new pair.
            let (r, _) = try status(
                d.remote(), "POST", "/v1/tokens",
                body: #"{"grant_type":"refresh_token","refresh_token":"\#(pair.refreshToken)"}"#)
            #expect(r == 401, "a refresh token outlived the revocation of its access token's jti")
        }
    }

    @Test func refreshRotatesAndAReplayKillsTheFamily() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let first = try principal(d, tenant: "acme", name: "ann", role: "member")
            let anon = d.remote()
            let second: TokenPair = try anon.call(
                "POST", "/v1/tokens", body: TokenRequest(grantType: "refresh_token", refreshToken: first.refreshToken))
            let _: Page<SandboxInfo> = try d.remote(second.accessToken).call("GET", "/v1/sandboxes")
            let (s, _) = try status(
                anon, "POST", "/v1/tokens",
                body: #"{"grant_type":"refresh_token","refresh_token":"\#(first.refreshToken)"}"#)
            #expect(s == 401)
            #expect(try status(d.remote(second.accessToken), "GET", "/v1/sandboxes").0 == 401)
            #expect(d.log.contains("refresh token reuse"))
            // An access token is not a refresh token.
            let (s2, _) = try status(
                anon, "POST", "/v1/tokens",
                body: #"{"grant_type":"refresh_token","refresh_token":"\#(second.accessToken)"}"#)
            #expect(s2 == 401)
        }
    }

    @Test func tenantsPrincipalsAndTokensThroughTheCLI() async throws {
        try await TestDaemon.with(tcp: true) { d in
            var r = try d.cli("tenant", "create", "initech")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("principal", "create", "peter", "--role", "tenant-admin", "--tenant", "initech")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli(
                "principal", "key", "peter", "--tenant", "initech", "--scopes", "sandboxes:read,sandboxes:write")
            let key = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(key.hasPrefix("viv_"))
            let pair: TokenPair = try d.remote().call(
                "POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key))
            let peter = d.remote(pair.accessToken)
            let _: SandboxInfo = try peter.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "tps"))
            #expect(
                try status(peter, "POST", "/v1/sandboxes/tps/exec", body: #"{"argv":["true"]}"#).0 == 403,
                "no exec scope")

            r = try d.cli("tenant", "rm", "initech")
            #expect(r.status == 125 && r.stderr.contains("invalid_state"), "a tenant holding sandboxes needs --force")
            r = try d.cli("principal", "disable", "peter", "--tenant", "initech")
            #expect(r.status == 0)
            #expect(try status(peter, "GET", "/v1/sandboxes").0 == 401, "a disabled principal's token stops at once")
            r = try d.cli("principal", "ls", "--tenant", "initech", "--json")
            let ps = try WireCoding.decoder().decode([PrincipalInfo].self, from: Data(r.stdout.utf8))
            #expect(ps.map(\.name) == ["peter"] && ps[0].disabled)

            r = try d.cli("keys", "rotate")
            #expect(r.status == 0 && r.stdout.split(separator: "\n").count == 2)
            let jwks = try d.remote().http.send("GET", "/.well-known/jwks.json")
            #expect(jwks.status == 200 && String(decoding: jwks.body, as: UTF8.self).contains("Ed25519"))

            r = try d.cli("tenant", "rm", "--force", "initech")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("tenant", "ls", "--json")
            #expect(r.status == 0 && r.stdout.contains("default") && !r.stdout.contains("initech"))
            #expect(try d.crunContainers().isEmpty)
            #expect(d.bundles().isEmpty)
        }
    }

    @Test func theTCPListenerSpeaksTLS12OrNewerWithAPinnableCertificate() async throws {
        let port = UInt16.random(in: 20000...40000)
        try await TestDaemon.with(extraEnv: ["VIVARIUM_LISTEN": "127.0.0.1:\(port)"]) { d in
            let cert = d.stateDir + "/tls/cert.pem"
            let url = "https://127.0.0.1:\(port)"
            #expect(
                d.eventually(10) {
                    (try? runCommand("/usr/bin/curl", ["-sf", "--cacert", cert, url + "/healthz"]))?.status == 0
                })
            // The fingerprint the daemon prints is the SHA-256 of the certificate it serves.
            let pem = try String(contentsOfFile: cert, encoding: .utf8)
            let b64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            let fp = Digest.of(Array(Data(base64Encoded: b64)!)).hex.uppercased()
            let printed = d.log.split(separator: "\n").first { $0.contains("fingerprint") }.map {
                $0.split(separator: " ").last!.replacingOccurrences(of: ":", with: "")
            }
            #expect(printed == fp)
            var st = stat()
            #expect(stat(d.stateDir + "/tls/key.pem", &st) == 0 && st.st_mode & 0o077 == 0)

            let pair = try principal(d, tenant: "acme", name: "ann", role: "member")
            let ok = try runCommand(
                "/usr/bin/curl",
                ["-sf", "--cacert", cert, "-H", "Authorization: Bearer \(pair.accessToken)", url + "/v1/sandboxes"])
            #expect(ok.status == 0 && ok.stdout.contains("items"))
            let anon = try runCommand(
                "/usr/bin/curl",
                ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", cert, url + "/v1/sandboxes"])
            #expect(anon.stdout == "401")
            // Old protocol versions and plain HTTP get nothing.
            // SECLEVEL=0 lets this curl offer TLS 1.0/1.1 at all: the refusal must come from the server.
            let old = try runCommand(
                "/usr/bin/curl",
                ["-sk", "--tlsv1.0", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0", url + "/healthz"])
            #expect(old.status != 0)
            let plain = try runCommand("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/healthz"])
            #expect(plain.status != 0 || !plain.stdout.contains("ok"))
            // Without the pinned certificate the client refuses the self-signed one.
            let unpinned = try runCommand("/usr/bin/curl", ["-s", url + "/healthz"])
            #expect(unpinned.status != 0)
        }
    }

    @Test func bruteForceFromOneAddressIsThrottled() async throws {
        try await TestDaemon.with(extraEnv: ["VIVARIUM_AUTH_FAILURES_PER_MINUTE": "5"], tcp: true) { d in
            let good = try principal(d, tenant: "acme", name: "ann", role: "member")
            let forged = d.remote("eyJhbGciOiJub25lIn0.e30.")
            for _ in 0..<5 { #expect(try status(forged, "GET", "/v1/sandboxes").0 == 401) }
            let r = try forged.http.send("GET", "/v1/sandboxes")
            #expect(r.status == 429)
            #expect(Int(r.headers["retry-after"] ?? "") ?? 0 >= 1)
            // Guessing API keys is throttled too.
            let (s, code) = try status(
                d.remote(), "POST", "/v1/tokens", body: #"{"grant_type":"api_key","api_key":"viv_x_y"}"#)
            #expect(s == 429 && code == "rate_limited")
            // A valid token or a registered key is never refused because of its address's failures.
            #expect(try status(d.remote(good.accessToken), "GET", "/v1/sandboxes").0 == 200)
            let key: APIKeyInfo = try d.client.call(
                "POST", "/v1/principals/ann/keys?tenant=acme", body: CreateAPIKeyRequest())
            let exchanged = try status(
                d.remote(), "POST", "/v1/tokens", body: #"{"grant_type":"api_key","api_key":"\#(key.apiKey)"}"#)
            #expect(exchanged.0 == 200, "a registered key from the throttled address")
            #expect(try status(forged, "GET", "/v1/sandboxes").0 == 429, "the forger is still throttled")
            // The unix socket (local root) is never throttled.
            let _: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes")
        }
    }

    @Test func requestRateAndQuotasPerTenant() async throws {
        let env = [
            "VIVARIUM_REQUESTS_PER_SECOND": "1", "VIVARIUM_REQUEST_BURST": "4", "VIVARIUM_QUOTA_SANDBOXES": "1",
            "VIVARIUM_QUOTA_MEMORY": "1G",
        ]
        try await TestDaemon.with(extraEnv: env, tcp: true) { d in
            let pair = try principal(d, tenant: "acme", name: "ann", role: "member")
            let c = d.remote(pair.accessToken)
            let _: SandboxInfo = try c.call("POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "first"))
            let (s, code) = try status(c, "POST", "/v1/sandboxes", body: #"{"name":"second","memory_bytes":67108864}"#)
            #expect(s == 403 && code == "quota_exceeded")
            #expect(d.bundles().count == 1, "a refused create leaves nothing behind")
            // Two requests used; the burst of 4 runs out within this second.
            var codes: [Int] = []
            for _ in 0..<4 { codes.append(try status(c, "GET", "/v1/sandboxes").0) }
            #expect(codes.contains(429))
            #expect(codes.first == 200)
        }
    }

    @Test func forwardedHeadersFromAnUntrustedPeerChangeNothing() async throws {
        try await TestDaemon.with(extraEnv: ["VIVARIUM_AUTH_FAILURES_PER_MINUTE": "3"], tcp: true) { d in
            var forged = d.remote("not-a-token")
            for i in 1...3 {
                forged.http.extraHeaders = [("X-Forwarded-For", "10.0.0.\(i)")]
                let code = try status(forged, "GET", "/v1/sandboxes").0
                #expect(code == 401)
            }
            forged.http.extraHeaders = [("X-Forwarded-For", "10.9.9.9")]
            let throttled = try status(forged, "GET", "/v1/sandboxes").0
            #expect(throttled == 429, "X-Forwarded-For from an untrusted peer is ignored")
            var proxied = d.remote("not-a-token")
            proxied.http.rawPrefix = Array("PROXY TCP4 10.8.8.8 127.0.0.1 5555 80\r\n".utf8)
            let r = try? proxied.http.send("GET", "/v1/sandboxes")
            #expect(
                r == nil || r!.status == 400 || r!.status == 429,
                "a PROXY header from an untrusted peer is not believed")
        }
    }

    @Test func aTrustedProxySetsTheSourceThatLimitsAndAllowlistsSee() async throws {
        let env = [
            "VIVARIUM_AUTH_FAILURES_PER_MINUTE": "3", "VIVARIUM_TRUSTED_PROXIES": "127.0.0.1/32",
            "VIVARIUM_ADMIN_ALLOWLIST": "10.7.7.7/32",
        ]
        try await TestDaemon.with(extraEnv: env, tcp: true) { d in
            var forged = d.remote("not-a-token")
            forged.http.extraHeaders = [("X-Forwarded-For", "10.0.0.1")]
            for _ in 1...3 { #expect(try status(forged, "GET", "/v1/sandboxes").0 == 401) }
            #expect(try status(forged, "GET", "/v1/sandboxes").0 == 429)
            forged.http.extraHeaders = [("X-Forwarded-For", "10.0.0.2")]
            #expect(
                try status(forged, "GET", "/v1/sandboxes").0 == 401, "another client behind the proxy is not throttled")

            let root = try principal(d, tenant: "default", name: "operator", role: "admin")
            var admin = d.remote(root.accessToken)
            #expect(try status(admin, "GET", "/v1/tenants").0 == 403, "the proxy's own address is not on the allowlist")
            #expect(
                try status(admin, "GET", "/v1/sandboxes").0 == 403, "admin credentials count only from the allowlist")
            admin.http.extraHeaders = [("X-Forwarded-For", "10.7.7.7")]
            #expect(try status(admin, "GET", "/v1/tenants").0 == 200)
            admin.http.extraHeaders = []
            admin.http.rawPrefix = Array("PROXY TCP4 10.7.7.7 127.0.0.1 5555 80\r\n".utf8)
            #expect(try status(admin, "GET", "/v1/tenants").0 == 200, "PROXY v1")
            var v2 = [UInt8]([
                0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C,
            ])
            v2 += [10, 7, 7, 7, 127, 0, 0, 1, 0x15, 0xB3, 0x01, 0xBB]
            admin.http.rawPrefix = v2
            #expect(try status(admin, "GET", "/v1/tenants").0 == 200, "PROXY v2")
            v2[19] = 8  // 10.7.7.8
            admin.http.rawPrefix = v2
            #expect(try status(admin, "GET", "/v1/tenants").0 == 403)
        }
    }

    @Test func theCLIEndToEndOverPinnedTLS() async throws {
        let port = UInt16.random(in: 20000...40000)
        let env = ["VIVARIUM_LISTEN": "127.0.0.1:\(port)", "VIVARIUM_ACCESS_TOKEN_SECONDS": "5"]
        try await TestDaemon.with(extraEnv: env) { d in
            let home = d.root + "/home"
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            func cli(_ args: String...) throws -> CommandResult {
                try runCommand(
                    Paths.vivarium, args, env: ["HOME": home, "XDG_CONFIG_HOME": home + "/.config"],
                    unset: ["VIVARIUM_SOCKET", "VIVARIUM_CONFIG"])
            }
            #expect(d.eventually(10) { d.log.contains("fingerprint") })
            let fp = d.log.split(separator: "\n").first { $0.contains("fingerprint") }!.split(separator: " ").last!
            var r = try d.cli("tenant", "create", "acme")
            r = try d.cli("principal", "create", "ann", "--role", "member", "--tenant", "acme")
            r = try d.cli("principal", "key", "ann", "--tenant", "acme")
            let keyFile = d.root + "/key"
            try Data(r.stdout.utf8).write(to: URL(fileURLWithPath: keyFile))

            // A pin that does not match the daemon's certificate is refused, and nothing is saved.
            let wrong = String(repeating: "AB:", count: 31) + "AB"
            r = try cli(
                "login", "--host", "https://127.0.0.1:\(port)", "--fingerprint", wrong, "--api-key-file", keyFile)
            #expect(r.status != 0 && r.stderr.contains("does not match"))
            #expect(!FileManager.default.fileExists(atPath: home + "/.config/vivarium/credentials.json"))

            r = try cli(
                "login", "--host", "https://127.0.0.1:\(port)", "--fingerprint", String(fp), "--api-key-file", keyFile)
            #expect(r.status == 0, "\(r.stderr)")
            var st = stat()
            #expect(stat(home + "/.config/vivarium/credentials.json", &st) == 0 && st.st_mode & 0o777 == 0o600)
            r = try cli("create", "remote-box")
            #expect(r.status == 0, "\(r.stderr)")
            r = try cli("exec", "remote-box", "--", "hostname")
            #expect(r.stdout == "remote-box\n")

            // The access token expires; ten parallel runs refresh it once, without a reuse alarm.
            usleep(6_000_000)
            let results = try await withThrowingTaskGroup(of: Int32.self) { group in
                for _ in 0..<10 { group.addTask { try cli("ls", "--json").status } }
                return try await group.reduce(into: [Int32]()) { $0.append($1) }
            }
            #expect(results == Array(repeating: 0, count: 10))
            #expect(!d.log.contains("refresh token reuse"))

            // Credentials others can read are refused.
            chmod(home + "/.config/vivarium/credentials.json", 0o644)
            r = try cli("ls")
            #expect(r.status != 0 && r.stderr.contains("readable by others"))
            chmod(home + "/.config/vivarium/credentials.json", 0o600)

            // Revoked: refused, refresh included.
            r = try d.cli("token", "revoke", "--principal", "ann", "--tenant", "acme")
            #expect(r.status == 0, "\(r.stderr)")
            r = try cli("ls")
            #expect(r.status != 0)
            usleep(6_000_000)
            r = try cli("ls")
            #expect(r.status != 0 && r.stderr.contains("log"))
        }
    }

    @Test func aTenantAdminCannotReachAboveItsRole() async throws {
        try await TestDaemon.with(tcp: true) { d in
            _ = try principal(d, tenant: "default", name: "root-op", role: "admin")
            let ta = try principal(d, tenant: "default", name: "deputy", role: "tenant-admin")
            let c = d.remote(ta.accessToken)
            for (method, path, body) in [
                ("POST", "/v1/principals/root-op/keys", "{}"),
                ("POST", "/v1/tokens/issue", #"{"principal":"root-op","scopes":["exec"]}"#),
                ("POST", "/v1/principals/root-op/disable", nil), ("DELETE", "/v1/principals/root-op", nil),
                ("POST", "/v1/tokens/revoke", #"{"principal":"root-op"}"#),
                ("POST", "/v1/principals", #"{"name":"usurper","role":"admin"}"#),
            ] {
                let (s, code) = try status(c, method, path, body: body)
                #expect(s == 403 && code == "forbidden", "\(method) \(path) by a tenant-admin answered \(s)")
            }
            // Public routes ignore credentials altogether.
            #expect(try status(d.remote("garbage"), "GET", "/healthz").0 == 200)
        }
    }

    @Test func plainHTTPOffLoopbackIsRefused() async throws {
        let r = try runCommand(
            Paths.vivarium, ["serve", "--listen", "0.0.0.0:18080", "--insecure-http"],
            env: ["VIVARIUM_STATE_DIR": "/tmp/vivarium-never-created", "VIVARIUM_SOCKET": "/tmp/vivarium-never/s.sock"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("loopback"))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/vivarium-never-created"))
    }
}
