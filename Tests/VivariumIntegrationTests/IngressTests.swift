import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Published sandbox ports (issue 11, part 4): a real HTTPS client (curl) and a raw TLS client reach a
/// server inside a real sandbox through the daemon's ingress, routed by Host header, with and without
/// tokens; the sandbox never sees the caller's Authorization header.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct IngressTests {
    struct Answer {
        var status: Int
        var body: String
    }

    /// A request through the ingress at 127.0.0.1:`port` for `host`.
    static func get(_ port: UInt16, _ host: String, _ path: String = "/", bearer: String? = nil) throws -> Answer {
        var args = [
            "-sk", "--max-time", "10", "--resolve", "\(host):\(port):127.0.0.1", "-w", "\n%{http_code}",
            "https://\(host):\(port)\(path)",
        ]
        if let bearer { args += ["-H", "Authorization: Bearer \(bearer)"] }
        let r = try runCommand("/usr/bin/curl", args)
        let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return Answer(status: Int(lines.last ?? "") ?? 0, body: lines.dropLast().joined(separator: "\n"))
    }

    /// Upgrades a TLS connection to the ingress, then sends `message` and prints what comes back.
    static let webSocketClient = #"""
        import socket, ssl, sys
        port, host, message = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)
        s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % host).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk: break
            head += chunk
        status = head.split(b"\r\n")[0].decode()
        rest = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
        s.sendall(message)
        while len(rest) < len(message):
            chunk = s.recv(4096)
            if not chunk: break
            rest += chunk
        print(status)
        print(rest.decode())
        """#

    @Test func exposedPortsAnswerThroughTheIngressByHostAndToken() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        let port = try freeLoopbackPort()
        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_NETWORK": "bridge", "VIVARIUM_NETWORK_NETNS": lab.hostPath,
            "VIVARIUM_NETWORK_DNS": NetworkLab.internetAddress, "VIVARIUM_INGRESS": "127.0.0.1:\(port)",
            "VIVARIUM_INGRESS_DOMAIN": "boxes.test",
        ]) { d in
            let member = try d.principalTokens(tenant: "default", name: "mo", role: "member").accessToken
            let outsider = try d.principalTokens(tenant: "globex", name: "gx", role: "member").accessToken
            let web = try NetworkTests.box(d, "web", tenant: "default", probe: probe)
            _ = try d.sh("web", "/netprobe serve 8080 >/dev/null 2>&1 &")

            // A public route: anyone; the caller's Authorization header never reaches the box.
            let added = try d.cli("expose", "web", "8080", "--hostname", "Web.Test", "--public")
            #expect(added.status == 0, "\(added.stderr)")
            #expect(added.stdout.contains("https://web.test:\(port)"), "\(added.stdout)")
            var a = try Self.get(port, "web.test", "/hello", bearer: member)
            for _ in 0..<50 where a.status != 200 {
                try await Task.sleep(for: .milliseconds(100))
                a = try Self.get(port, "web.test", "/hello", bearer: member)
            }
            #expect(a.status == 200, "\(a.body)")
            #expect(a.body.hasPrefix("GET /hello HTTP/1.1\r\n"), "\(a.body)")
            #expect(a.body.contains("Host: web.test:\(port)") && a.body.contains("X-Forwarded-Proto: https"))
            #expect(a.body.contains("X-Forwarded-For: 127.0.0.1") && a.body.contains("Connection: close"))
            #expect(!a.body.lowercased().contains("authorization") && !a.body.contains(member), "\(a.body)")

            // A token route: refused without a token, with a forged one and with another tenant's; a token
            // of the box's tenant passes, and is not forwarded either.
            let tokenRoute: RouteInfo = try d.client.call(
                "POST", "/v1/sandboxes/web/routes", body: ExposeRequest(port: 8080, hostname: "tok.test"))
            #expect(tokenRoute.access == "token")
            #expect(try Self.get(port, "tok.test").status == 401)
            var forged = Array(member)
            forged[forged.count - 3] = forged[forged.count - 3] == "A" ? "B" : "A"
            #expect(try Self.get(port, "tok.test", bearer: String(forged)).status == 401)
            #expect(try Self.get(port, "tok.test", bearer: outsider).status == 404)
            let ok = try Self.get(port, "tok.test", "/in", bearer: member)
            #expect(ok.status == 200 && ok.body.hasPrefix("GET /in "), "\(ok.body)")
            #expect(!ok.body.contains(member))
            // Any port by PORT-SANDBOXID.DOMAIN, with a token that reaches the box; unknown hosts are 404.
            let named = "8080-\(web.id).boxes.test"
            #expect(try Self.get(port, named, "/e2b", bearer: member).body.hasPrefix("GET /e2b "))
            #expect(try Self.get(port, named).status == 401)
            #expect(try Self.get(port, named, bearer: outsider).status == 404)
            #expect(try Self.get(port, "nowhere.test").status == 404)
            // Nobody takes a sandbox's own name under the ingress domain for a route of theirs.
            let other = try NetworkTests.box(d, "other", tenant: "default", probe: probe)
            let hijack = try d.cli("expose", "other", "8080", "--hostname", named, "--public")
            #expect(hijack.status != 0 && hijack.stderr.contains("invalid_argument"), "\(hijack.stderr)")
            #expect(try d.cli("expose", "other", "8080", "--hostname", "8080-\(other.id).boxes.test").status == 0)
            // A closed port of the box: the ingress says so.
            #expect(try Self.get(port, "8081-\(web.id).boxes.test", bearer: member).status == 502)

            // A WebSocket upgrade passes, and then bytes go both ways.
            let script = d.root + "/ws.py"
            try Self.webSocketClient.write(toFile: script, atomically: true, encoding: .utf8)
            let ws = try runCommand("/usr/bin/python3", [script, String(port), "web.test", "ping-through-proxy"])
            #expect(ws.stdout.hasPrefix("HTTP/1.1 101"), "\(ws.stdout) \(ws.stderr)")
            #expect(ws.stdout.contains("ping-through-proxy"), "\(ws.stdout)")

            // A TCP forward from a host port.
            let tcp = try freeLoopbackPort()
            #expect(try d.cli("expose", "web", "8080", "--tcp", String(tcp)).status == 0)
            let raw = try runCommand("/usr/bin/curl", ["-s", "--max-time", "10", "http://127.0.0.1:\(tcp)/raw"])
            #expect(raw.stdout.hasPrefix("GET /raw HTTP/1.1"), "\(raw.stdout)")

            let ls = try d.cli("expose", "ls")
            #expect(
                ["web.test", "tok.test", "tcp-\(tcp)", "8080-\(other.id)"].allSatisfy { ls.stdout.contains($0) },
                "\(ls.stdout)")
            // Another tenant sees none of them.
            let theirs: Page<RouteInfo> = try d.client.call("GET", "/v1/routes?tenant=globex")
            #expect(theirs.items.isEmpty)

            // Removed routes stop answering; the sandbox's delete takes the rest with it.
            #expect(try d.cli("expose", "rm", "web.test").status == 0)
            #expect(try Self.get(port, "web.test").status == 404)
            #expect(try d.cli("rm", "--force", "web").status == 0)
            let left: Page<RouteInfo> = try d.client.call("GET", "/v1/routes")
            #expect(left.items.map(\.sandbox) == ["other"], "\(left.items)")
            let closed = try runCommand("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(tcp)/"])
            #expect(closed.status != 0, "the TCP forward still listens")
        }
    }

    @Test func hostCertificatesAreChosenBySNI() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        let port = try freeLoopbackPort()
        let certs = "/tmp/vivarium-certs-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: certs) }
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        let made = try runCommand(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-keyout", certs + "/site.key", "-out", certs + "/site.crt", "-subj", "/CN=custom.test",
                "-addext", "subjectAltName=DNS:custom.test,DNS:*.wild.test",
            ])
        #expect(made.status == 0, "\(made.stderr)")
        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_NETWORK": "bridge", "VIVARIUM_NETWORK_NETNS": lab.hostPath,
            "VIVARIUM_NETWORK_DNS": NetworkLab.internetAddress, "VIVARIUM_INGRESS": "127.0.0.1:\(port)",
            "VIVARIUM_INGRESS_CERTS": certs,
        ]) { d in
            _ = try NetworkTests.box(d, "web", tenant: "default", probe: probe)
            _ = try d.sh("web", "/netprobe serve 8080 >/dev/null 2>&1 &")
            for host in ["custom.test", "a.wild.test", "plain.test"] {
                #expect(try d.cli("expose", "web", "8080", "--hostname", host, "--public").status == 0)
            }
            // Verified against the operator's certificate alone (no -k): its names pass, another does not.
            func verified(_ host: String) throws -> CommandResult {
                try runCommand(
                    "/usr/bin/curl",
                    [
                        "-s", "--max-time", "10", "--cacert", certs + "/site.crt", "--resolve",
                        "\(host):\(port):127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
                        "https://\(host):\(port)/",
                    ])
            }
            var r = try verified("custom.test")
            for _ in 0..<50 where r.stdout != "200" {
                try await Task.sleep(for: .milliseconds(100))
                r = try verified("custom.test")
            }
            #expect(r.stdout == "200", "\(r.stderr)")
            #expect(try verified("a.wild.test").stdout == "200", "a wildcard name")
            let other = try verified("plain.test")
            #expect(
                other.status == 60, "plain.test gets the daemon's own certificate, not the operator's: \(other.status)")
            #expect(try Self.get(port, "plain.test").status == 200)
        }
    }
}
