import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Sandbox networking (issue 11, threat T7), with real packets between namespaces the test owns: the
/// daemon's bridge and ruleset live in a namespace standing in for the host, behind which sit a
/// public-range "internet", a metadata address and a private-range address.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct NetworkTests {
    /// A daemon whose sandbox network lives in `lab.host`, its DNS forwarder relaying to the lab's
    /// internet (where a test may serve DNS).
    static func daemon(_ lab: NetworkLab, _ body: (TestDaemon) async throws -> Void) async throws {
        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_NETWORK": "bridge", "VIVARIUM_NETWORK_NETNS": lab.hostPath,
            "VIVARIUM_NETWORK_DNS": NetworkLab.internetAddress,
        ]) {
            try await body($0)
        }
    }

    /// Creates a sandbox in `tenant` with the probe at /netprobe.
    static func box(
        _ d: TestDaemon, _ name: String, tenant: String, network: String? = nil, probe: String
    ) throws -> SandboxInfo {
        let info: SandboxInfo = try d.client.call(
            "POST", "/v1/sandboxes?tenant=\(tenant)", body: CreateSandboxRequest(name: name, network: network))
        try NetProbe.install(probe, upperDir: d.upperDir(info.id), owner: info.hostUidBase)
        return info
    }

    /// What `/netprobe KIND ADDRESS PORT` prints inside the box.
    static func probe(
        _ d: TestDaemon, _ box: String, tenant: String, _ kind: String, _ address: String, _ port: Int = 0
    ) throws -> String {
        let r: ExecResult = try d.client.call(
            "POST", "/v1/sandboxes/\(box)/exec?tenant=\(tenant)",
            body: ExecRequest(argv: ["/netprobe", kind, address, String(port)], timeoutSeconds: 10))
        return String(decoding: r.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func publicReachesTheInternetAndNothingElse() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        try lab.listen(lab.internet, NetworkLab.internetAddress, port: 8080, name: "internet")
        try lab.listen(lab.internet, NetworkLab.privateAddress, port: 8080, name: "private")
        try lab.listen(lab.metadata, NetworkLab.metadataAddress, port: 80, name: "metadata")
        // The stand-in host's own addresses: its address toward the internet and, below, the bridge's.
        try lab.listen(lab.host, NetworkLab.hostAddress, port: 8080, name: "host")
        try lab.listen(lab.host, "::", port: 8086, name: "host6")
        try await Self.daemon(lab) { d in
            _ = try d.cli("tenant", "create", "acme")
            _ = try d.cli("tenant", "create", "globex")
            try lab.listen(lab.host, "10.213.0.1", port: 8081, name: "bridge")

            let a = try Self.box(d, "a", tenant: "acme", probe: probe)
            let a2 = try Self.box(d, "a2", tenant: "acme", probe: probe)
            let b = try Self.box(d, "b", tenant: "globex", probe: probe)
            #expect(a.network == "public")
            let addrA = try #require(a.address)
            let addrB = try #require(b.address)
            #expect(addrA.hasPrefix("10.213.") && addrA != addrB && a2.address != addrA)

            // The internet answers, over TCP and UDP, and sees the host's address (masquerade).
            #expect(
                try Self.probe(d, "a", tenant: "acme", "tcp", NetworkLab.internetAddress, 8080)
                    == "internet from \(NetworkLab.hostAddress)")
            #expect(
                try Self.probe(d, "a", tenant: "acme", "udp", NetworkLab.internetAddress, 8080)
                    == "internet from \(NetworkLab.hostAddress)")
            #expect(try Self.probe(d, "a", tenant: "acme", "icmp", NetworkLab.internetAddress) == "echo reply")

            // Never the host (the bridge address, its other address, the daemon's own ports), the
            // metadata address or a private range, over TCP or UDP.
            for (address, port) in [
                ("10.213.0.1", 8081), (NetworkLab.hostAddress, 8080), (NetworkLab.metadataAddress, 80),
                (NetworkLab.privateAddress, 8080),
            ] {
                for kind in ["tcp", "udp", "icmp"] {
                    let out = try Self.probe(d, "a", tenant: "acme", kind, address, port)
                    #expect(out == "timeout", "\(kind) \(address):\(port) answered: \(out)")
                }
            }

            // Each drop is counted against the box that sent it.
            let counted: SandboxInfo = try d.client.call("GET", "/v1/sandboxes/a?tenant=acme")
            #expect((counted.deniedPackets ?? 0) >= 12, "denied: \(String(describing: counted.deniedPackets))")
            let clean: SandboxInfo = try d.client.call("GET", "/v1/sandboxes/b?tenant=globex")
            #expect(clean.deniedPackets == 0)

            // Never another sandbox: not of another tenant, and not of its own (intra-tenant is denied by
            // default). A reachable box answers a connection to a closed port at once (refused): only a
            // dropped one times out.
            for (address, name) in [(addrB, "b"), (try #require(a2.address), "a2")] {
                for kind in ["tcp", "udp", "icmp"] {
                    let out = try Self.probe(d, "a", tenant: "acme", kind, address, 9000)
                    #expect(out == "timeout", "a reached \(name) at \(address) over \(kind): \(out)")
                }
            }

            // No IPv6 path around the policy: the host's link-local address on the bridge does not answer.
            let bridgeLL = try #require(
                lab.run(lab.host, ["/usr/sbin/ip", "-6", "-o", "addr", "show", "scope", "link"]).stdout
                    .split(separator: "\n").first { $0.contains("vvbr") }?
                    .split(separator: " ").first { $0.hasPrefix("fe80") }?.split(separator: "/").first)
            let v6 = try Self.probe(d, "a", tenant: "acme", "tcp", "\(bridgeLL)%eth0", 8086)
            #expect(v6 == "timeout" || v6.hasPrefix("error"), "IPv6 to the host answered: \(v6)")

            // `none` is loopback only: no interface but lo, and nothing reachable.
            _ = try Self.box(d, "sealed", tenant: "acme", network: "none", probe: probe)
            let listed: ExecResult = try d.client.call(
                "POST", "/v1/sandboxes/sealed/exec?tenant=acme", body: ExecRequest(argv: ["/bin/ls", "/sys/class/net"]))
            let links = String(decoding: listed.stdout, as: UTF8.self)
            #expect(links.split(separator: "\n").sorted() == ["lo"], "interfaces: \(links)")
            let sealed = try Self.probe(d, "sealed", tenant: "acme", "tcp", NetworkLab.internetAddress, 8080)
            #expect(sealed != "internet from \(NetworkLab.hostAddress)")

            // A box that is deleted takes its veth with it.
            let veths = { lab.links(lab.host).filter { $0.hasPrefix("vx") } }
            #expect(veths().count == 3)
            _ = try d.client.callNoContent("DELETE", "/v1/sandboxes/b?tenant=globex&force=true")
            #expect(veths().count == 2)
        }
    }

    /// allowlist: an allowed address and port answer, another port of the same address does not, and no
    /// rule opens the metadata address. `network set` changes a running box at once, both ways, and is
    /// audited; a box made with `none` (no veth) gets one when it is set to public.
    @Test func allowlistsAndRuntimeChanges() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        try lab.listen(lab.internet, NetworkLab.internetAddress, port: 8080, name: "allowed")
        try lab.listen(lab.internet, NetworkLab.internetAddress, port: 8081, name: "other")
        try lab.listen(lab.metadata, NetworkLab.metadataAddress, port: 80, name: "metadata")
        try await Self.daemon(lab) { d in
            let info: SandboxInfo = try d.client.call(
                "POST", "/v1/sandboxes",
                body: CreateSandboxRequest(
                    name: "al", network: "allowlist", allow: ["45.67.89.2/32:8080", "169.254.169.254:80"]))
            try NetProbe.install(probe, upperDir: d.upperDir(info.id), owner: info.hostUidBase)
            #expect(info.network == "allowlist" && info.allow == ["45.67.89.2/32:8080", "169.254.169.254/32:80"])
            func reach(_ box: String, _ kind: String, _ address: String, _ port: Int) throws -> String {
                try Self.probe(d, box, tenant: "default", kind, address, port)
            }
            let internet = NetworkLab.internetAddress
            #expect(try reach("al", "tcp", internet, 8080).hasPrefix("allowed"))
            #expect(try reach("al", "udp", internet, 8080).hasPrefix("allowed"))
            #expect(try reach("al", "tcp", internet, 8081) == "timeout")
            #expect(try reach("al", "tcp", NetworkLab.metadataAddress, 80) == "timeout")

            // To none and back to public, on the running box: each takes effect at once.
            var r = try d.cli("network", "set", "al", "--egress", "none")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try reach("al", "tcp", internet, 8080) == "timeout")
            r = try d.cli("network", "set", "al", "--egress", "public")
            #expect(r.status == 0 && r.stdout.contains("al: public"), "\(r.stdout) \(r.stderr)")
            #expect(try reach("al", "tcp", internet, 8081).hasPrefix("other"))
            #expect(try reach("al", "tcp", NetworkLab.metadataAddress, 80) == "timeout")
            #expect(try d.get("al").network == "public")

            // A box made with none has no veth; set to public, it gets one.
            let late = try Self.box(d, "late", tenant: "default", network: "none", probe: probe)
            #expect(late.address == nil)
            r = try d.cli("network", "set", "late", "--egress", "public")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try reach("late", "tcp", internet, 8080).hasPrefix("allowed"))

            // Bad rules are refused before anything changes.
            for bad in [["--allow", "1.2.3.4:99999"], ["--allow", "::1"], ["--egress", "open"]] {
                r = try d.cli(["network", "set", "al"] + bad)
                #expect(r.status != 0 && r.stderr.contains("invalid_argument"), "\(bad): \(r.stderr)")
            }
            #expect(try d.get("al").network == "public")
            let audit = try d.cli("audit", "ls", "--action", "sandbox.network", "--outcome", "ok")
            #expect(audit.stdout.components(separatedBy: "sandbox.network").count - 1 == 3, "\(audit.stdout)")
        }
    }

    /// Domain rules: the forwarder answers an allowlist box only the names its rules cover, and the
    /// addresses it answered are reachable (on the rule's port only) once resolved, not before; a name
    /// answered with a private address opens nothing. A runtime change takes the domains along.
    @Test func allowlistedDomainsResolveAndConnectOthersDoNot() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        let internet = NetworkLab.internetAddress
        try lab.serveDNS(
            lab.internet, internet,
            records: [
                "pypi.test": internet, "files.mirror.test": internet, "denied.test": internet,
                "rebind.test": NetworkLab.privateAddress,
            ])
        try lab.listen(lab.internet, internet, port: 8080, name: "allowed")
        try lab.listen(lab.internet, internet, port: 8081, name: "other")
        try lab.listen(lab.internet, NetworkLab.privateAddress, port: 8080, name: "private")
        try await Self.daemon(lab) { d in
            var r = try d.cli(
                "create", "dom", "--network", "allowlist", "--allow-domain", "pypi.test:8080", "--allow-domain",
                "*.mirror.test:8081", "--allow-domain", "rebind.test")
            #expect(r.status == 0, "\(r.stderr)")
            let info = try d.get("dom")
            #expect(info.allow == ["pypi.test:8080", "*.mirror.test:8081", "rebind.test"], "\(info.allow ?? [])")
            try NetProbe.install(probe, upperDir: d.upperDir(info.id), owner: info.hostUidBase)
            func reach(_ port: Int, _ address: String = internet) throws -> String {
                try Self.probe(d, "dom", tenant: "default", "tcp", address, port)
            }
            func resolve(_ name: String) throws -> (Int32, String) {
                let (code, out, _) = try d.sh("dom", "nslookup \(name)", timeout: 20)
                return (code, out)
            }
            // Nothing is reachable before a name was resolved.
            #expect(try reach(8080) == "timeout")
            let (code, out) = try resolve("pypi.test")
            #expect(code == 0 && out.contains(internet), "\(out)")
            #expect(try reach(8080).hasPrefix("allowed"))
            #expect(try reach(8081) == "timeout", "a domain rule's port only")
            // A wildcard covers names under it, not others; denied names do not resolve at all.
            #expect(try resolve("files.mirror.test").0 == 0)
            #expect(try reach(8081).hasPrefix("other"))
            let (dcode, dout) = try resolve("denied.test")
            #expect(dcode != 0 && !dout.contains(internet), "\(dout)")
            #expect(try resolve("mirror.test").0 != 0, "*.mirror.test is not mirror.test")
            // An allowed name answered with a private address does not open it.
            let (_, rout) = try resolve("rebind.test")
            #expect(rout.contains(NetworkLab.privateAddress), "\(rout)")
            #expect(try reach(8080, NetworkLab.privateAddress) == "timeout")

            // Changed at runtime: the old domain's pinned address goes with the old policy.
            r = try d.cli("network", "set", "dom", "--allow-domain", "other.test")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try reach(8080) == "timeout")
            #expect(try resolve("pypi.test").0 != 0)
            r = try d.cli("network", "set", "dom", "--allow-domain", "10.0.0.1")
            #expect(r.status != 0 && r.stderr.contains("invalid_argument"), "\(r.stderr)")

            // What the policy dropped reaches the audit feed as network.denied records of the box.
            var denied = try d.cli("audit", "ls", "--action", "network.denied", "--json")
            for _ in 0..<40 where !denied.stdout.contains("\"dom\"") {
                try await Task.sleep(for: .milliseconds(250))
                denied = try d.cli("audit", "ls", "--action", "network.denied", "--json")
            }
            #expect(denied.stdout.contains("\"dom\"") && denied.stdout.contains("\"denied\""), "\(denied.stdout)")
        }
    }

    /// Sandboxes of one tenant reach each other only while the tenant allows it (and neither is `none`);
    /// another tenant's never. A reachable box answers a closed port at once (refused), a dropped one
    /// times out. The setting holds for sandboxes made later and across a restart.
    @Test func sameTenantReachabilityFollowsTheTenantSetting() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        try await Self.daemon(lab) { d in
            _ = try d.cli("tenant", "create", "acme")
            _ = try d.cli("tenant", "create", "globex")
            let a = try #require(try Self.box(d, "a", tenant: "acme", probe: probe).address)
            let a2 = try #require(try Self.box(d, "a2", tenant: "acme", probe: probe).address)
            let b = try #require(try Self.box(d, "b", tenant: "globex", probe: probe).address)
            func from(_ box: String, _ kind: String, _ address: String) throws -> String {
                try Self.probe(d, box, tenant: "acme", kind, address, 9000)
            }
            #expect(try from("a", "tcp", a2) == "timeout")

            var r = try d.cli("tenant", "set", "acme", "--intra-tenant", "allow")
            #expect(r.status == 0 && r.stdout.contains("intra-tenant allow"), "\(r.stdout) \(r.stderr)")
            #expect(try from("a", "tcp", a2) == "error 111")
            #expect(try from("a", "icmp", a2) == "echo reply")
            #expect(try from("a2", "udp", a) == "error 111")
            #expect(try from("a", "tcp", b) == "timeout")
            let a3 = try #require(try Self.box(d, "a3", tenant: "acme", probe: probe).address)
            #expect(try from("a", "tcp", a3) == "error 111")

            // A box set to none leaves its tenant's peers.
            _ =
                try d.client.call(
                    "POST", "/v1/sandboxes/a2/network?tenant=acme", body: SetNetworkRequest(egress: "none"))
                as SandboxInfo
            #expect(try from("a", "tcp", a2) == "timeout")

            // Across a restart the setting holds; then deny cuts the tenant's boxes apart again.
            d.stop()
            try d.start()
            #expect(try from("a", "tcp", a3) == "error 111")
            r = try d.cli("tenant", "set", "acme", "--intra-tenant", "deny")
            #expect(r.status == 0)
            #expect(try from("a", "tcp", a3) == "timeout")
            #expect(try d.cli("tenant", "ls").stdout.contains("deny"))
        }
    }

    /// Names resolve through the forwarder on the gateway, the only port of the host a box reaches, to the
    /// upstream resolver; an unknown name is NXDOMAIN; a none box resolves nothing.
    @Test func boxesResolveThroughTheForwarder() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        try lab.serveDNS(lab.internet, NetworkLab.internetAddress, records: ["pypi.test": "45.67.89.7"])
        try await Self.daemon(lab) { d in
            _ = try d.create(CreateSandboxRequest(name: "web"))
            let (_, conf, _) = try d.sh("web", "cat /etc/resolv.conf")
            #expect(conf.contains("nameserver 10.213.0.1"), "\(conf)")
            let (code, out, err) = try d.sh("web", "nslookup pypi.test", timeout: 20)
            #expect(code == 0 && out.contains("45.67.89.7"), "nslookup: \(out) \(err)")
            let (missing, mout, _) = try d.sh("web", "nslookup nowhere.test", timeout: 20)
            #expect(missing != 0 && !mout.contains("45.67.89"), "\(mout)")
            // A box with loopback only resolves nothing.
            _ = try d.create(CreateSandboxRequest(name: "sealed", network: "none"))
            let (scode, sout, _) = try d.sh("sealed", "nslookup pypi.test", timeout: 20)
            #expect(scode != 0 && !sout.contains("45.67.89.7"), "\(sout)")
        }
    }

    /// kill -9 of the daemon; while it is down, its nftables tables and one sandbox's veth go. After the
    /// restart the policy holds again, that sandbox is reattached, and nothing is left over.
    @Test func aRestartRebuildsTheRulesetAndReattaches() async throws {
        let lab = try NetworkLab()
        defer { lab.close() }
        let probe = try NetProbe.build()
        defer { NetProbe.remove(probe) }
        try lab.listen(lab.internet, NetworkLab.internetAddress, port: 8080, name: "internet")
        try lab.listen(lab.metadata, NetworkLab.metadataAddress, port: 80, name: "metadata")
        try await Self.daemon(lab) { d in
            let one = try Self.box(d, "one", tenant: "default", probe: probe)
            _ = try Self.box(d, "two", tenant: "default", probe: probe)
            #expect(
                try Self.probe(d, "one", tenant: "default", "tcp", NetworkLab.internetAddress, 8080).hasPrefix(
                    "internet"))
            d.crash()
            let tables = try lab.run(lab.host, ["/usr/sbin/nft", "list", "tables"])
            for line in tables.stdout.split(separator: "\n") where line.contains("vivarium_") {
                try lab.run(lab.host, ["/usr/sbin/nft", "delete"] + line.split(separator: " ").map(String.init))
            }
            #expect(!(try lab.run(lab.host, ["/usr/sbin/nft", "list", "tables"])).stdout.contains("vivarium_"))
            let veth = "vx" + one.id.prefix(13)
            try lab.run(lab.host, ["/usr/sbin/ip", "link", "delete", veth])
            // Without its table a running box would reach the metadata address: the ruleset is what stops it.
            try d.start()
            #expect(lab.links(lab.host).contains(veth), "the deleted veth is back")
            for box in ["one", "two"] {
                #expect(
                    try Self.probe(d, box, tenant: "default", "tcp", NetworkLab.internetAddress, 8080).hasPrefix(
                        "internet"))
                let meta = try Self.probe(d, box, tenant: "default", "tcp", NetworkLab.metadataAddress, 80)
                #expect(meta == "timeout", "\(box) reached the metadata address after the restart: \(meta)")
            }
            _ = try d.client.callNoContent("DELETE", "/v1/sandboxes/one?force=true")
            _ = try d.client.callNoContent("DELETE", "/v1/sandboxes/two?force=true")
            #expect(lab.links(lab.host).filter { $0.hasPrefix("vx") }.isEmpty, "veths left: \(lab.links(lab.host))")
        }
    }
}
