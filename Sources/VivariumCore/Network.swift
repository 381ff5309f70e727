import Foundation

/// What a sandbox's network may reach.
public enum EgressPolicy: String, Codable, Sendable, CaseIterable {
    /// Loopback only: nothing leaves the box (a box created so has no interface but `lo`).
    case none
    /// The internet, masqueraded out of the host: never the private, shared, loopback, link-local (cloud
    /// metadata), documentation, benchmarking, multicast or reserved ranges, never the host itself, never
    /// another sandbox; no IPv6 at all.
    case `public`
    /// Only the destinations of the policy's `allow` rules (never the host, other sandboxes, loopback,
    /// link-local or multicast, whatever a rule says).
    case allowlist

    public static func parse(_ s: String) throws -> EgressPolicy {
        guard let p = EgressPolicy(rawValue: s) else {
            throw VivariumError(
                .invalidArgument, "egress must be one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return p
    }
}

/// One destination an `allowlist` sandbox may reach: an IPv4 range, or a domain name (exact, or
/// `*.example.com` for any name under it), and optionally one port (TCP and UDP). Written
/// `10.1.2.0/24:5432`, `1.2.3.4:443`, `1.2.3.0/24`, `pypi.org:443` or `*.pythonhosted.org`. A domain's
/// addresses are those the sandbox's resolver (the DNS forwarder) answered it, each for its TTL, and never
/// one of the ranges a `public` sandbox is kept from.
public struct AllowRule: Codable, Sendable, Equatable, CustomStringConvertible {
    /// The IPv4 range; empty for a domain rule.
    public var range: String
    public var domain: String?
    public var port: Int?

    public static let maxRules = 64

    public init(range: String, port: Int?) {
        self.range = range
        self.port = port
    }

    public init(domain: String, port: Int?) {
        range = ""
        self.domain = domain
        self.port = port
    }

    public static func parse(_ s: String) throws -> AllowRule {
        var text = Substring(s)
        var port: Int?
        if let colon = text.lastIndex(of: ":") {
            guard let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else {
                throw VivariumError(.invalidArgument, "allow rule \(s.prefix(300)): the port must be 1 to 65535")
            }
            port = p
            text = text[..<colon]
        }
        if text.contains(where: { $0.isLetter || $0 == "*" }), !text.contains(":") {
            let name = text.hasPrefix("*.") ? text.dropFirst(2) : text
            guard let host = try? PortRoute.hostname(String(name)), host.contains("."), !host.hasSuffix(".") else {
                throw VivariumError(
                    .invalidArgument, "allow rule \(s.prefix(300)): not a domain name such as pypi.org or *.example.com"
                )
            }
            return AllowRule(domain: (text.hasPrefix("*.") ? "*." : "") + host, port: port)
        }
        let cidr: CIDR
        do {
            cidr = try CIDR(text.contains("/") ? String(text) : text + "/32")
        } catch {
            throw VivariumError(
                .invalidArgument, "allow rule \(s.prefix(300)) is not ADDRESS[/PREFIX][:PORT] (IPv4) or DOMAIN[:PORT]")
        }
        guard cidr.bytes.count == 4 else {
            throw VivariumError(.invalidArgument, "allow rule \(s.prefix(300)): only IPv4 (sandboxes have no IPv6)")
        }
        return AllowRule(range: cidr.description, port: port)
    }

    /// Whether this domain rule covers the (lower-case) name `name`.
    public func matches(name: String) -> Bool {
        guard let domain else { return false }
        if domain.hasPrefix("*.") { return name.hasSuffix(domain.dropFirst()) }
        return name == domain
    }

    public var description: String {
        let what = domain ?? range
        return port.map { "\(what):\($0)" } ?? what
    }
}

/// A sandbox's egress policy with its rules.
public struct NetworkPolicy: Codable, Sendable, Equatable {
    public var egress: EgressPolicy
    public var allow: [AllowRule]

    public init(egress: EgressPolicy, allow: [AllowRule] = []) {
        self.egress = egress
        self.allow = allow
    }

    public static let none = NetworkPolicy(egress: .none)
    public static let `public` = NetworkPolicy(egress: .public)

    public func validated() throws -> NetworkPolicy {
        if egress != .allowlist, !allow.isEmpty {
            throw VivariumError(.invalidArgument, "allow rules need egress allowlist")
        }
        guard allow.count <= AllowRule.maxRules else {
            throw VivariumError(.invalidArgument, "at most \(AllowRule.maxRules) allow rules")
        }
        return self
    }
}

/// A sandbox's network, plugged in between `crun create` and `crun start`: the init exists, in its own
/// network namespace (`/proc/<pid>/ns/net`), and has not run yet. Attaching again (a sandbox adopted
/// after a restart) repairs what is missing.
public protocol NetworkAttachment: Sendable {
    func attach(initPid: Int32) async throws
    /// Undoes the attachment; called when the sandbox's host resources are released.
    func detach() async
}

/// IPv4 ranges a `public` sandbox never reaches (RFC 6890 special-purpose and private space).
public enum BlockedRanges {
    public static let ipv4 = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4",
    ]
}

/// Who may use an exposed port.
public enum RouteAccess: String, Codable, Sendable, CaseIterable {
    /// Anyone who reaches the ingress.
    case `public`
    /// A caller whose bearer token reaches the sandbox (the policy table's `sandbox.connect`).
    case token
}

/// A sandbox port published through the daemon's ingress: an HTTP route by host name, or a plain TCP
/// forward from a host port. Its key is the host name, or `tcp-HOSTPORT`.
public struct PortRoute: Sendable, Equatable {
    public var key: String
    public var tenant: String
    public var sandbox: SandboxID
    public var sandboxName: ResourceName
    public var port: Int
    public var access: RouteAccess
    public var tcpPort: Int?
    public var createdAt: Date

    public init(
        key: String, tenant: String, sandbox: SandboxID, sandboxName: ResourceName, port: Int, access: RouteAccess,
        tcpPort: Int?, createdAt: Date
    ) {
        self.key = key
        self.tenant = tenant
        self.sandbox = sandbox
        self.sandboxName = sandboxName
        self.port = port
        self.access = access
        self.tcpPort = tcpPort
        self.createdAt = createdAt
    }

    /// The host name of an HTTP route; nil for a TCP forward.
    public var hostname: String? { tcpPort == nil ? key : nil }

    public static func tcpKey(_ hostPort: Int) -> String { "tcp-\(hostPort)" }

    /// A port number of a sandbox or the host (1 to 65535).
    public static func port(_ n: Int, what: String) throws -> Int {
        guard (1...65535).contains(n) else { throw VivariumError(.invalidArgument, "\(what) must be 1 to 65535") }
        return n
    }

    /// A host name as routes are keyed: lower case, DNS labels of a-z, 0-9 and '-', at most 253 bytes.
    public static func hostname(_ s: String) throws -> String {
        let h = s.lowercased()
        let labels = h.split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            h.utf8.count <= 253
            && labels.allSatisfy { l in
                (1...63).contains(l.count) && l.first != "-" && l.last != "-"
                    && l.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" }
            }
        guard valid else {
            throw VivariumError(
                .invalidArgument, "\(s.prefix(64)) is not a host name (DNS labels of a-z, 0-9 and '-', dot-separated)")
        }
        return h
    }

    /// The host name e2b's SDKs build for a sandbox port: `PORT-SANDBOXID.DOMAIN`.
    public static func portHostname(port: Int, sandbox: SandboxID, domain: String) -> String {
        "\(port)-\(sandbox.rawValue).\(domain)"
    }

    /// The port and sandbox of a `PORT-SANDBOXID.DOMAIN` host name, or nil.
    public static func parsePortHostname(_ host: String, domain: String) -> (port: Int, sandbox: SandboxID)? {
        guard host.hasSuffix("." + domain) else { return nil }
        let label = host.dropLast(domain.count + 1)
        guard let dash = label.firstIndex(of: "-"), let port = Int(label[..<dash]), (1...65535).contains(port),
            let id = SandboxID(rawValue: String(label[label.index(after: dash)...]))
        else { return nil }
        return (port, id)
    }
}
