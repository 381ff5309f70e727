import Foundation
import Glibc
import Logging
import Synchronization
import VivariumCore
import VivariumOS

/// The sandbox network of one daemon instance: a bridge with the range's first address as every
/// sandbox's gateway, one veth per sandbox whose peer is the sandbox's `eth0`, addresses derived from the
/// sandbox's id slot (so the store's slot allocation is the IPAM: unique, persisted, released on delete),
/// and the nftables ruleset of `Ruleset`.
///
/// All of it lives in the network namespace `namespace` names, standing in for the host (tests put the
/// whole network in a namespace of their own so no packet can leave the machine), or in the daemon's own.
public final class BridgeNetwork: Sendable {
    public struct Configuration: Sendable {
        /// The IPv4 range sandboxes get addresses from (a /8 to a /24).
        public var range: CIDR
        public var bridge: String
        public var table: String
        /// A path such as /run/netns/NAME; nil: the daemon's own namespace.
        public var namespace: String?
        public var nsenter = "/usr/bin/nsenter"
        /// The resolver the DNS forwarder relays to (ADDRESS[:PORT]); nil: the host's first nameserver.
        public var dnsUpstream: String?
        /// The resolv.conf every box gets (naming the gateway), written at start.
        public var resolvConf: String

        public init(range: CIDR, instance: String, namespace: String?, resolvConf: String, dnsUpstream: String?) {
            self.range = range
            self.resolvConf = resolvConf
            self.dnsUpstream = dnsUpstream
            let tag = String(instance.prefix(8))
            bridge = "vvbr" + tag
            table = "vivarium_" + tag
            self.namespace = namespace
        }
    }

    public let config: Configuration
    public let ruleset: Ruleset
    let nft: Nftables
    let logger: Logger
    /// What the tables hold: per veth its address, policy and tenant, and the tenants whose sandboxes reach
    /// each other (made anew at each start). Batches are applied under the lock, so that two sandboxes
    /// of one tenant attaching at once each see the other.
    let state = Mutex(State())
    struct State {
        var attached: [String: Attached] = [:]
        var intraTenant: Set<String> = []

        /// `peers` elements between `veth` and every other reachable sandbox of its tenant, both ways.
        func pairs(of veth: String) -> [String] {
            guard let me = attached[veth], me.policy.egress != .none, intraTenant.contains(me.tenant) else { return [] }
            return attached.filter { $0.key != veth && $0.value.tenant == me.tenant && $0.value.policy.egress != .none }
                .keys.sorted().flatMap { ["\"\(veth)\" . \"\($0)\"", "\"\($0)\" . \"\(veth)\""] }
        }
    }
    struct Attached {
        var address: String
        var policy: NetworkPolicy
        var tenant: String
    }
    /// Serves for the daemon's life.
    let dns = Mutex<DNSForwarder?>(nil)

    /// The gateway: the range's first host address, on the bridge.
    public var gateway: String { ruleset.gateway }
    /// How many sandboxes the range holds (network, gateway and broadcast addresses excluded).
    public var capacity: Int { (1 << (32 - config.range.prefix)) - 3 }

    init(config: Configuration, logger: Logger) throws {
        self.config = config
        self.logger = logger
        nft = try Nftables(namespacePath: config.namespace)
        ruleset = Ruleset(table: config.table, bridge: config.bridge, range: config.range)
    }

    /// Sets the network up: checks that the range is free in the namespace, makes the bridge
    /// (kept when it exists), turns forwarding on in the namespace and installs the ruleset anew, empty of
    /// sandboxes: what was attached before a restart is attached again as sandboxes are adopted or booted.
    public static func open(_ config: Configuration, logger: Logger) async throws -> BridgeNetwork {
        guard config.range.bytes.count == 4, (8...24).contains(config.range.prefix) else {
            throw VivariumError(.invalidArgument, "network_range must be an IPv4 range from /8 to /24")
        }
        do {
            return try await setUp(config, logger: logger)
        } catch let e as VivariumError where e.code == .invalidArgument {
            throw e
        } catch {
            throw VivariumError(
                .unavailable,
                "the sandbox network cannot be set up (\(error)); it needs nftables (libnftables), bridge and "
                    + "veth support in the kernel. Set network = off to run sandboxes with loopback only",
                cause: error)
        }
    }

    static func setUp(_ config: Configuration, logger: Logger) async throws -> BridgeNetwork {
        let n = try BridgeNetwork(config: config, logger: logger)
        let host = try n.hostNetlink()
        if try !host.exists(config.bridge) {
            try await n.checkRangeIsFree()
        }
        try host.createBridge(config.bridge)
        try host.addAddress(config.bridge, n.gateway, prefix: config.range.prefix)
        try host.setUp(config.bridge)
        try await n.run("/usr/sbin/sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"])
        try n.apply(n.ruleset.install)
        if let upstream = config.dnsUpstream ?? DNSForwarder.systemResolver() {
            let forwarder = try DNSForwarder(
                namespace: config.namespace, address: n.gateway, upstream: upstream, logger: logger,
                access: { [weak n] in n?.dnsAccess($0) ?? .refused },
                pin: { [weak n] in n?.pin($0, $1, $2) })
            n.dns.withLock { $0 = forwarder }
        } else {
            logger.warning("no IPv4 nameserver in /etc/resolv.conf and no network_dns: sandboxes get no DNS")
        }
        try FileSystem.writeAtomically(
            Data("nameserver \(n.gateway)\noptions ndots:0\n".utf8), to: config.resolvConf, mode: 0o644, durable: true)
        logger.info(
            "sandbox network ready",
            metadata: ["bridge": "\(config.bridge)", "range": "\(config.range)", "table": "\(config.table)"])
        return n
    }

    /// The address of the sandbox with id slot `slot`.
    public func address(slot: Int) throws -> String {
        guard slot >= 0, slot < capacity else {
            throw VivariumError(.resourceExhausted, "network_range \(config.range) has no address for slot \(slot)")
        }
        return IPv4.format(IPv4.base(config.range) + 2 + UInt32(slot))
    }

    /// The host end of a sandbox's veth (≤ 15 bytes, unique across instances in practice).
    public static func veth(_ id: SandboxID) -> String { Ruleset.vethPrefix + String(id.rawValue.prefix(13)) }

    /// The attachment of one sandbox under `policy`. Attaching a running sandbox again with another policy
    /// changes it in one transaction.
    public func attachment(id: SandboxID, tenant: String, slot: Int, policy: NetworkPolicy) throws
        -> any NetworkAttachment
    {
        BridgeAttachment(
            network: self, veth: Self.veth(id), address: try address(slot: slot), policy: policy, tenant: tenant)
    }

    /// Whether `tenant`'s sandboxes reach each other; attached ones follow at once, in one transaction.
    public func setIntraTenant(_ tenant: String, _ allow: Bool) throws {
        try state.withLock { s in
            guard s.intraTenant.contains(tenant) != allow else { return }
            var after = s
            if allow { after.intraTenant.insert(tenant) } else { after.intraTenant.remove(tenant) }
            // Each pair once: from the sandbox that sorts first.
            let pairs = Set((allow ? after : s).attached.keys.flatMap { (allow ? after : s).pairs(of: $0) })
            if !pairs.isEmpty { try apply(ruleset.peers(pairs.sorted(), add: allow)) }
            s = after
        }
    }

    func attach(veth: String, address: String, policy: NetworkPolicy, tenant: String, initPid: Int32) async throws {
        let host = try hostNetlink()
        if try !host.exists(veth) {
            // Loopback only: a box made so has no veth and gets none (one that had a veth keeps it, under
            // a verdict that drops everything).
            if policy.egress == .none { return }
            let ns = "/proc/\(initPid)/ns/net"
            try host.createVeth(veth, master: config.bridge, peer: "eth0", inNamespaceAt: ns)
            let box = try Netlink(namespacePath: ns)
            try box.addAddress("eth0", address, prefix: config.range.prefix)
            try box.setUp("lo")
            try box.setUp("eth0")
            try box.addDefaultRoute(via: gateway)
        }
        try state.withLock { s in
            let before = s.pairs(of: veth)
            var after = s
            after.attached[veth] = Attached(address: address, policy: policy, tenant: tenant)
            let pairs = after.pairs(of: veth)
            var batch: String
            switch s.attached[veth] {
            case nil: batch = ruleset.attach(veth: veth, address: address, policy: policy)
            case let cur? where cur.policy != policy: batch = ruleset.change(veth: veth, from: cur.policy, to: policy)
            default: batch = ""
            }
            let gone = Set(before).subtracting(pairs).sorted()
            let new = Set(pairs).subtracting(before).sorted()
            if !gone.isEmpty { batch += ruleset.peers(gone, add: false) }
            if !new.isEmpty { batch += ruleset.peers(new, add: true) }
            if !batch.isEmpty { try apply(batch) }
            s = after
        }
    }

    func detach(veth: String) async {
        do {
            try state.withLock { s in
                guard let cur = s.attached[veth] else { return }
                let pairs = s.pairs(of: veth)
                try apply(
                    ruleset.detach(veth: veth, address: cur.address, policy: cur.policy)
                        + (pairs.isEmpty ? "" : ruleset.peers(pairs, add: false)))
                s.attached[veth] = nil
            }
        } catch {
            logger.error("cannot take a veth out of the ruleset", metadata: ["veth": "\(veth)", "error": "\(error)"])
        }
        // Normally gone with the sandbox's namespace already.
        try? hostNetlink().delete(veth)
    }

    /// What the sandbox at `address` may resolve.
    func dnsAccess(_ address: String) -> DNSAccess {
        state.withLock { s in
            guard let box = s.attached.values.first(where: { $0.address == address }) else { return .refused }
            switch box.policy.egress {
            case .public: return .all
            case .none: return .refused
            case .allowlist: return .only(box.policy.allow.filter { $0.domain != nil })
            }
        }
    }

    /// A domain answer's addresses are pinned for `rule` of the sandbox at `address`, each for its TTL (10 s
    /// at least, a day at most), except the ranges a `public` sandbox is kept from (no DNS answer opens a
    /// private or metadata address).
    func pin(_ address: String, _ rule: AllowRule, _ answers: [(address: String, ttl: UInt32)]) {
        let blocked = BlockedRanges.ipv4.compactMap { try? CIDR($0) }
        let allowed = answers.filter { a in !blocked.contains { $0.contains(a.address) } }
        guard !allowed.isEmpty else { return }
        let seconds = Int(min(max(allowed.map(\.ttl).max() ?? 0, 10), 86400))
        state.withLock { s in
            guard let (veth, box) = s.attached.first(where: { $0.value.address == address }),
                box.policy.egress == .allowlist, box.policy.allow.contains(rule)
            else { return }
            do {
                try apply(ruleset.pin(veth: veth, rule: rule, addresses: allowed.map(\.address), seconds: seconds))
            } catch {
                logger.warning("cannot pin a DNS answer", metadata: ["veth": "\(veth)", "error": "\(error)"])
            }
        }
    }

    /// Packets the sandbox's veth had dropped since it was attached (this daemon's life), or nil when it has
    /// none attached.
    public func deniedPackets(_ id: SandboxID) -> Int64? {
        let veth = Self.veth(id)
        guard state.withLock({ $0.attached[veth] }) != nil, let text = try? nft.run(ruleset.listCounter(veth: veth))
        else { return nil }
        // "packets N bytes M"
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        guard let i = words.firstIndex(of: "packets"), i + 1 < words.count else { return nil }
        return Int64(words[i + 1])
    }

    /// Packets every attached veth had dropped since it was attached, in one listing.
    public func deniedCounts() -> [String: Int64] {
        guard let text = try? nft.run("list counters table bridge \(config.table)\n") else { return [:] }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" })
        var out: [String: Int64] = [:]
        var i = 0
        while i + 1 < words.count {
            if words[i] == "counter", words[i + 1].hasPrefix("d_"),
                let p = words[(i + 2)...].prefix(4).firstIndex(of: "packets"), p + 1 < words.count,
                let n = Int64(words[p + 1])
            {
                out[String(words[i + 1].dropFirst(2))] = n
            }
            i += 1
        }
        return out
    }

    func hostNetlink() throws -> Netlink {
        if let ns = config.namespace { return try Netlink(namespacePath: ns) }
        return try Netlink(namespace: nil)
    }

    /// Runs one nft batch: one transaction, all of it or nothing.
    func apply(_ batch: String) throws { try nft.run(batch) }

    /// Runs a program in the network's namespace; returns its output.
    @discardableResult
    func run(_ program: String, _ args: [String]) async throws -> [UInt8] {
        let cmd =
            config.namespace.map { Command(config.nsenter, ["--net=\($0)", program] + args) } ?? Command(program, args)
        let out = try await Reaper.shared.run(cmd)
        guard out.status == .exited(0) else {
            throw VivariumError(
                .runtimeFailure,
                "\(program) \(args.joined(separator: " ")) failed: "
                    + String(decoding: out.stderr, as: UTF8.self).prefix(800))
        }
        return out.stdout
    }

    /// Refuses a range that overlaps a route the namespace has already (a collision would cut the host off
    /// from that network).
    func checkRangeIsFree() async throws {
        let routes = try await routesOfNamespace()
        let mine = (IPv4.base(config.range), config.range.prefix)
        for (net, prefix) in routes where prefix > 0 {
            let p = min(prefix, mine.1)
            let mask: UInt32 = p == 0 ? 0 : ~UInt32(0) << (32 - p)
            if net & mask == mine.0 & mask {
                throw VivariumError(
                    .invalidArgument,
                    "network_range \(config.range) collides with the route \(IPv4.format(net))/\(prefix) of this "
                        + "host: set network_range to a free private range")
            }
        }
    }

    /// IPv4 routes of the namespace, from /proc/net/route as a process in it sees it.
    func routesOfNamespace() async throws -> [(UInt32, Int)] {
        Self.parseRoutes(String(decoding: try await run("/bin/cat", ["/proc/net/route"]), as: UTF8.self))
    }

    static func parseRoutes(_ text: String) -> [(UInt32, Int)] {
        text.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard f.count >= 8, let dst = UInt32(f[1], radix: 16), let mask = UInt32(f[7], radix: 16) else {
                return nil
            }
            // /proc/net/route is in host byte order of a little-endian reading of network order.
            return (dst.byteSwapped, mask.byteSwapped.nonzeroBitCount)
        }
    }
}

/// One sandbox's place on the bridge.
struct BridgeAttachment: NetworkAttachment {
    let network: BridgeNetwork
    let veth: String
    let address: String
    let policy: NetworkPolicy
    let tenant: String

    func attach(initPid: Int32) async throws {
        try await network.attach(veth: veth, address: address, policy: policy, tenant: tenant, initPid: initPid)
    }

    func detach() async { await network.detach(veth: veth) }
}
