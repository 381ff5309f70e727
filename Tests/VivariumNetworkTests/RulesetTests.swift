import Foundation
import Testing
import VivariumCore
import VivariumNetwork
import VivariumTestSupport

/// The ruleset's batches are what the kernel takes, in a namespace of the test's own: the install
/// replaces an earlier one whole, and attach, change and detach move exactly one veth's elements.
@Suite(.enabled(if: Integration.enabled)) struct RulesetTests {
    let ruleset = Ruleset(table: "vivarium_test", bridge: "vvbrtest", range: try! CIDR("10.213.0.0/16"))

    func nft(_ ns: String, _ batch: String) throws -> CommandResult {
        let path = "/tmp/vivarium-ruleset-\(UUID().uuidString).nft"
        try batch.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        return try runCommand("/usr/sbin/ip", ["netns", "exec", ns, "/usr/sbin/nft", "-f", path])
    }

    func list(_ ns: String, _ what: [String]) throws -> String {
        try runCommand("/usr/sbin/ip", ["netns", "exec", ns, "/usr/sbin/nft", "list"] + what).stdout
    }

    @Test func batchesApplyAndMoveOneVethEach() throws {
        let ns = "vvt-rs-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try #require(try runCommand("/usr/sbin/ip", ["netns", "add", ns]).status == 0)
        defer { _ = try? runCommand("/usr/sbin/ip", ["netns", "delete", ns]) }

        var r = try nft(ns, ruleset.install)
        #expect(r.status == 0, "install: \(r.stderr)")
        r = try nft(ns, ruleset.attach(veth: "vxaaaa", address: "10.213.0.2", policy: .public))
        #expect(r.status == 0, "attach: \(r.stderr)")
        r = try nft(ns, ruleset.attach(veth: "vxbbbb", address: "10.213.0.3", policy: .none))
        #expect(r.status == 0)
        var egress = try list(ns, ["map", "bridge", "vivarium_test", "egress"])
        #expect(egress.contains("\"vxaaaa\" : jump public") && egress.contains("\"vxbbbb\" : jump deny"), "\(egress)")

        r = try nft(ns, ruleset.change(veth: "vxaaaa", from: .public, to: .none))
        #expect(r.status == 0, "change: \(r.stderr)")
        egress = try list(ns, ["map", "bridge", "vivarium_test", "egress"])
        #expect(egress.contains("\"vxaaaa\" : jump deny"), "\(egress)")

        // An allowlist is a chain of the veth's own, made and removed with the verdict.
        let allow = NetworkPolicy(egress: .allowlist, allow: [try AllowRule.parse("1.2.3.0/24:443")])
        r = try nft(ns, ruleset.change(veth: "vxaaaa", from: .none, to: allow))
        #expect(r.status == 0, "change to allowlist: \(r.stderr)")
        let chain = try list(ns, ["chain", "bridge", "vivarium_test", "allow_vxaaaa"])
        #expect(chain.contains("ip daddr 1.2.3.0/24 tcp dport 443 accept"), "\(chain)")
        #expect(chain.contains("ip daddr @never"), "\(chain)")
        r = try nft(ns, ruleset.change(veth: "vxaaaa", from: allow, to: .public))
        #expect(r.status == 0, "change from allowlist: \(r.stderr)")
        #expect(!(try list(ns, ["table", "bridge", "vivarium_test"])).contains("allow_vxaaaa"))

        r = try nft(ns, ruleset.detach(veth: "vxbbbb", address: "10.213.0.3", policy: .none))
        #expect(r.status == 0, "detach: \(r.stderr)")
        let addrs = try list(ns, ["set", "bridge", "vivarium_test", "addrs"])
        #expect(addrs.contains("vxaaaa") && !addrs.contains("vxbbbb"), "\(addrs)")

        // A second install replaces the first whole: no element survives it.
        r = try nft(ns, ruleset.install)
        #expect(r.status == 0, "reinstall: \(r.stderr)")
        #expect(!(try list(ns, ["map", "bridge", "vivarium_test", "egress"])).contains("vxaaaa"))
        // Every blocked range is in the set, metadata among them.
        let blocked = try list(ns, ["set", "bridge", "vivarium_test", "blocked"])
        #expect(blocked.contains("169.254.0.0/16") && blocked.contains("10.0.0.0/8"), "\(blocked)")
    }
}
