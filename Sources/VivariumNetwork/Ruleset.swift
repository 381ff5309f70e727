import VivariumCore

/// The nftables ruleset of one daemon instance, as `nft -f` batches. One static ruleset; what differs per
/// sandbox is map and set elements, so attaching, detaching or changing a sandbox is one small transaction.
///
/// - `bridge <table>` filters every frame a sandbox's veth sends, whatever `bridge-nf-call-iptables` says:
///   ARP passes; anything but IPv4 (IPv6 included) is dropped; a source address other than the one the
///   sandbox was given is dropped; TCP to the gateway passes unless it opens a connection (this is how the
///   ingress's connections into a box are answered: the bridge family has no conntrack here, and the inet
///   table drops whatever is not part of a connection the host made); to another sandbox only a pair in `peers` passes (none today: tenants
///   are segmented, and so are sandboxes of one tenant); the rest goes through the sandbox's verdict in
///   `egress` (a veth with no verdict is dropped).
/// - `inet <table>` drops everything a sandbox sends to the host itself (any of its addresses, the
///   daemon's ports among them) but replies, lets nothing from outside into the bridge but replies, and
///   masquerades the range out of the host.
public struct Ruleset: Sendable, Equatable {
    public var table: String
    public var bridge: String
    public var range: CIDR
    /// The bridge's address: every box's gateway, and its resolver (the DNS forwarder on port 53).
    public var gateway: String
    /// The prefix every sandbox veth name starts with.
    public static let vethPrefix = "vx"

    public init(table: String, bridge: String, range: CIDR) {
        self.table = table
        self.bridge = bridge
        self.range = range
        gateway = IPv4.format(IPv4.base(range) + 1)
    }

    /// The whole ruleset, replacing whatever this instance had (its tables are deleted and made anew in
    /// the same transaction), with no sandbox in it.
    public var install: String {
        let blocked = BlockedRanges.ipv4.joined(separator: ", ")
        let veths = "\"\(Self.vethPrefix)*\""
        return """
            table bridge \(table)
            delete table bridge \(table)
            table inet \(table)
            delete table inet \(table)
            table bridge \(table) {
                set addrs { type ifname . ipv4_addr; }
                map egress { type ifname : verdict; }
                set peers { type ifname . ifname; }
                set blocked { type ipv4_addr; flags interval; elements = { \(blocked) }; }
                set never { type ipv4_addr; flags interval; elements = { \(Self.never.joined(separator: ", ")), \(range) }; }
                counter denied { }
                map denied_by { type ifname : counter; }
                chain refuse {
                    counter name iifname map @denied_by
                    counter name denied drop
                }
                chain input {
                    type filter hook input priority -200; policy accept;
                    iifname != \(veths) accept
                    ether type arp accept
                    ether type != ip goto refuse
                    iifname . ip saddr != @addrs goto refuse
                    ip daddr \(gateway) tcp flags & (syn | ack) != syn accept
                    iifname vmap @egress
                    goto refuse
                }
                chain forward {
                    type filter hook forward priority -200; policy accept;
                    iifname != \(veths) accept
                    ether type arp accept
                    ether type != ip goto refuse
                    iifname . ip saddr != @addrs goto refuse
                    iifname . oifname @peers accept
                    goto refuse
                }
                chain public {
                    ip daddr \(gateway) udp dport 53 accept
                    ip daddr @blocked goto refuse
                    accept
                }
                chain deny {
                    goto refuse
                }
            }
            table inet \(table) {
                chain input {
                    type filter hook input priority -200; policy accept;
                    iifname "\(bridge)" ct state established,related accept
                    iifname "\(bridge)" ip daddr \(gateway) udp dport 53 accept
                    iifname "\(bridge)" drop
                }
                chain forward {
                    type filter hook forward priority -200; policy accept;
                    oifname "\(bridge)" ct state established,related accept
                    oifname "\(bridge)" drop
                    iifname "\(bridge)" ip saddr != \(range) drop
                }
                chain postrouting {
                    type nat hook postrouting priority 100; policy accept;
                    ip saddr \(range) oifname != "\(bridge)" masquerade
                }
            }

            """
    }

    /// What an allowlist never reaches, whatever its rules say (besides the host and other sandboxes,
    /// which the inet table and the bridge's forward chain keep out).
    static let never = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"]

    static func chain(_ veth: String) -> String { "allow_" + veth }

    static func verdict(_ p: NetworkPolicy, _ veth: String) -> String {
        switch p.egress {
        case .public: "jump public"
        case .none: "jump deny"
        case .allowlist: "jump \(chain(veth))"
        }
    }

    /// The sets of the addresses a veth's domain rules resolved to: any port, and address . port.
    static func domainSets(_ veth: String) -> (any: String, ports: String) { ("da_" + veth, "dp_" + veth) }

    /// The allowlist chain of one veth, made (or emptied) and filled, with its domain sets made (or
    /// emptied: what a former policy's domains resolved to goes with it).
    func allowChain(_ veth: String, _ rules: [AllowRule]) -> String {
        let c = "bridge \(table) \(Self.chain(veth))"
        let (any, ports) = Self.domainSets(veth)
        var out = """
            add set bridge \(table) \(any) { type ipv4_addr; flags timeout; }
            flush set bridge \(table) \(any)
            add set bridge \(table) \(ports) { type ipv4_addr . inet_service; flags timeout; }
            flush set bridge \(table) \(ports)
            add chain \(c)
            flush chain \(c)
            add rule \(c) ip daddr \(gateway) udp dport 53 accept
            add rule \(c) ip daddr @never goto refuse

            """
        for r in rules where r.domain == nil {
            if let port = r.port {
                out += "add rule \(c) ip daddr \(r.range) tcp dport \(port) accept\n"
                out += "add rule \(c) ip daddr \(r.range) udp dport \(port) accept\n"
            } else {
                out += "add rule \(c) ip daddr \(r.range) accept\n"
            }
        }
        if rules.contains(where: { $0.domain != nil }) {
            out += "add rule \(c) ip daddr @\(any) accept\n"
            out += "add rule \(c) ip daddr . tcp dport @\(ports) accept\n"
            out += "add rule \(c) ip daddr . udp dport @\(ports) accept\n"
        }
        return out + "add rule \(c) goto refuse\n"
    }

    /// Removes a veth's allowlist chain and its domain sets.
    func removeAllowChain(_ veth: String) -> String {
        let (any, ports) = Self.domainSets(veth)
        return """
            delete chain bridge \(table) \(Self.chain(veth))
            delete set bridge \(table) \(any)
            delete set bridge \(table) \(ports)

            """
    }

    /// Lets a veth reach `addresses` (what its domain rule `rule` resolved to) for `seconds`.
    public func pin(veth: String, rule: AllowRule, addresses: [String], seconds: Int) -> String {
        let (any, ports) = Self.domainSets(veth)
        let elements = addresses.map { a in
            (rule.port.map { "\(a) . \($0)" } ?? a) + " timeout \(seconds)s"
        }
        return "add element bridge \(table) \(rule.port == nil ? any : ports) { \(elements.joined(separator: ", ")) }\n"
    }

    /// The counter of what one veth had dropped.
    static func counter(_ veth: String) -> String { "d_" + veth }

    /// Puts a new sandbox's veth, address, policy and drop counter in (none of them may be there:
    /// `BridgeNetwork` keeps track, since the table is made anew at every start).
    public func attach(veth: String, address: String, policy: NetworkPolicy) -> String {
        (policy.egress == .allowlist ? allowChain(veth, policy.allow) : "")
            + """
            add counter bridge \(table) \(Self.counter(veth))
            add element bridge \(table) denied_by { "\(veth)" : "\(Self.counter(veth))" }
            add element bridge \(table) addrs { "\(veth)" . \(address) }
            add element bridge \(table) egress { "\(veth)" : \(Self.verdict(policy, veth)) }

            """
    }

    /// Lists one veth's drop counter.
    public func listCounter(veth: String) -> String { "list counter bridge \(table) \(Self.counter(veth))\n" }

    /// Replaces an attached sandbox's policy, in one transaction.
    public func change(veth: String, from old: NetworkPolicy, to policy: NetworkPolicy) -> String {
        var out = policy.egress == .allowlist ? allowChain(veth, policy.allow) : ""
        out += """
            delete element bridge \(table) egress { "\(veth)" }
            add element bridge \(table) egress { "\(veth)" : \(Self.verdict(policy, veth)) }

            """
        if old.egress == .allowlist, policy.egress != .allowlist { out += removeAllowChain(veth) }
        return out
    }

    /// Adds or removes `peers` elements (`"a" . "b"`: a may send to b across the bridge).
    public func peers(_ pairs: [String], add: Bool) -> String {
        "\(add ? "add" : "delete") element bridge \(table) peers { \(pairs.joined(separator: ", ")) }\n"
    }

    /// Takes an attached sandbox's veth out.
    public func detach(veth: String, address: String, policy: NetworkPolicy) -> String {
        """
        delete element bridge \(table) addrs { "\(veth)" . \(address) }
        delete element bridge \(table) egress { "\(veth)" }
        delete element bridge \(table) denied_by { "\(veth)" }
        delete counter bridge \(table) \(Self.counter(veth))

        """ + (policy.egress == .allowlist ? removeAllowChain(veth) : "")
    }
}

/// IPv4 addresses as numbers.
enum IPv4 {
    /// The network address of `c`.
    static func base(_ c: CIDR) -> UInt32 {
        let v = c.bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let mask: UInt32 = c.prefix == 0 ? 0 : ~UInt32(0) << (32 - c.prefix)
        return v & mask
    }

    static func format(_ v: UInt32) -> String { "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)" }
}
