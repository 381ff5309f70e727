import Foundation
import Glibc
import Testing
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// rtnetlink (`Netlink`) against real kernel objects, only inside network namespaces the test makes: one
/// stands in for the host (the bridge), another for a box (the veth peer `eth0`). Never the host's own
/// interfaces.
@Suite(.serialized, .enabled(if: NetlinkLab.enabled)) struct NetlinkTests {
    @Test func aVethOnTheBridgeCarriesPacketsIntoTheBox() throws {
        let host = try TestNetns()
        defer { host.remove() }
        let box = try TestNetns()
        defer { box.remove() }
        let hostNL = try Netlink(namespacePath: host.path)

        try hostNL.createBridge("vvbr0")
        try hostNL.createBridge("vvbr0")  // an existing bridge is kept
        try hostNL.addAddress("vvbr0", "10.213.0.1", prefix: 24)
        try hostNL.addAddress("vvbr0", "10.213.0.1", prefix: 24)  // an address it has is kept
        try hostNL.setUp("vvbr0")
        #expect(try host.ip("-j", "addr", "show", "vvbr0").contains("\"10.213.0.1\""))

        let boxFD = try box.open()
        defer { close(boxFD) }
        try hostNL.createVeth("vvh0", master: "vvbr0", peer: "eth0", in: boxFD)
        let boxNL = try Netlink(namespace: boxFD)
        try boxNL.addAddress("eth0", "10.213.0.2", prefix: 24)
        try boxNL.setUp("eth0")
        try boxNL.setUp("lo")
        try boxNL.addDefaultRoute(via: "10.213.0.1")

        // Each end is in its own namespace, and nowhere else.
        #expect(try hostNL.exists("vvh0"))
        #expect(try !hostNL.exists("eth0"))
        #expect(try boxNL.index(of: "eth0") != nil)
        #expect(try boxNL.index(of: "vvh0") == nil)
        #expect(try boxNL.index(of: "lo") == 1)

        // The host end is a veth, up, on the bridge.
        let links = try host.links()
        let veth = try #require(links.first { $0["ifname"] as? String == "vvh0" })
        #expect(veth["master"] as? String == "vvbr0", "\(veth)")
        #expect((veth["flags"] as? [String])?.contains("UP") == true, "\(veth)")
        #expect(try host.ip("-d", "link", "show", "vvh0").contains("veth"))
        #expect(try box.ip("-j", "route", "show", "default").contains("\"10.213.0.1\""))

        // Real packets: the box reaches the bridge's address through its default route's subnet.
        let ping = try NetlinkLab.ping(box.name, "10.213.0.1")
        #expect(ping.status == 0, "ping: \(ping.stdout) \(ping.stderr)")

        // Deleting the host end takes the peer out of the box's namespace.
        try hostNL.delete("vvh0")
        #expect(try !hostNL.exists("vvh0"))
        #expect(try !boxNL.exists("eth0"))
        #expect(try !box.ip("link", "show").contains("eth0"))
        try hostNL.delete("vvh0")  // none of that name is success
        try hostNL.delete("vvbr0")
        #expect(try !hostNL.exists("vvbr0"))
    }

    @Test func badNamesAndAddressesAreRefused() throws {
        let host = try TestNetns()
        defer { host.remove() }
        let box = try TestNetns()
        defer { box.remove() }
        let nl = try Netlink(namespacePath: host.path)
        let boxFD = try box.open()
        defer { close(boxFD) }

        let long = "vvabcdefghijklmn"  // 16 bytes
        #expect(long.utf8.count == 16)
        expectCode(.invalidArgument) { try nl.createBridge(long) }
        expectCode(.invalidArgument) { try nl.createBridge("") }
        expectCode(.invalidArgument) { try nl.createVeth(long, master: nil, peer: "eth0", in: boxFD) }
        expectCode(.invalidArgument) { try nl.createVeth("vvh1", master: nil, peer: long, in: boxFD) }
        expectCode(.invalidArgument) { try nl.index(of: long) }
        #expect(try !nl.exists("vvh1"), "a refused request left a link behind")
        #expect(try !box.ip("link", "show").contains(long))

        // 15 bytes is the limit and is accepted.
        let longest = "vvabcdefghijklm"
        try nl.createBridge(longest)
        #expect(try nl.exists(longest))

        try nl.createBridge("vvbr1")
        expectCode(.invalidArgument) { try nl.addAddress("vvbr1", "10.213.0.300", prefix: 24) }
        expectCode(.invalidArgument) { try nl.addDefaultRoute(via: "not-an-address") }
        expectCode(.notFound) { try nl.addAddress("vvnone0", "10.213.0.1", prefix: 24) }
        expectCode(.notFound) { try nl.setUp("vvnone0") }
        expectCode(.unavailable) { try nl.createVeth("vvh1", master: "vvnone0", peer: "eth0", in: boxFD) }
        #expect(try !nl.exists("vvh1"))
    }

    @Test func aMissingNamespaceIsAnError() {
        expectCode(.internalError) { try Netlink(namespacePath: "/run/netns/vvnl-does-not-exist") }
        expectCode(.internalError) { try Netlink(namespace: 987_654) }
    }
}

enum NetlinkLab {
    static let ipPath = executable(["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
    static var enabled: Bool { Integration.required || (geteuid() == 0 && ipPath != nil) }

    static func executable(_ candidates: [String]) -> String? {
        candidates.first { access($0, X_OK) == 0 }
    }

    /// One ICMP echo from inside namespace `ns` (iputils ping, or busybox's).
    static func ping(_ ns: String, _ address: String) throws -> CommandResult {
        let ping = executable(["/usr/bin/ping", "/bin/ping"])
        let cmd = ping.map { [$0] } ?? ["/bin/busybox", "ping"]
        return try runCommand(ipPath ?? "/usr/sbin/ip", ["netns", "exec", ns] + cmd + ["-c1", "-W1", address])
    }
}

/// A network namespace made with `ip netns add vvnl-<random>`; `remove()` deletes it (call it in a defer).
final class TestNetns {
    let name: String
    var path: String { "/run/netns/\(name)" }

    init() throws {
        name = "vvnl-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let r = try runCommand(NetlinkLab.ipPath ?? "/usr/sbin/ip", ["netns", "add", name])
        guard r.status == 0 else { throw VivariumError(.internalError, "ip netns add \(name): \(r.stderr)") }
    }

    func remove() { _ = try? runCommand(NetlinkLab.ipPath ?? "/usr/sbin/ip", ["netns", "delete", name]) }

    /// An O_RDONLY|O_CLOEXEC fd to the namespace (the caller closes it).
    func open() throws -> Int32 {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VivariumError(.internalError, "open \(path): errno \(errno)") }
        return fd
    }

    /// `ip -n NAME ARGS…`, which must succeed; its stdout.
    func ip(_ args: String...) throws -> String {
        let r = try runCommand(NetlinkLab.ipPath ?? "/usr/sbin/ip", ["-n", name] + args)
        guard r.status == 0 else { throw VivariumError(.internalError, "ip -n \(name) \(args): \(r.stderr)") }
        return r.stdout
    }

    /// `ip -n NAME -j link show`, parsed.
    func links() throws -> [[String: Any]] {
        let json = try ip("-j", "link", "show")
        return try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
    }
}
