import Foundation

/// What a sandbox's network may reach.
public enum EgressPolicy: String, Codable, Sendable, CaseIterable {
    /// Loopback only: the sandbox gets no interface but `lo`.
    case none
    /// The internet, masqueraded out of the host: never the private, shared, loopback, link-local (cloud
    /// metadata), documentation, benchmarking, multicast or reserved ranges, never the host itself, never
    /// another sandbox; no IPv6 at all.
    case `public`

    public static func parse(_ s: String) throws -> EgressPolicy {
        guard let p = EgressPolicy(rawValue: s) else {
            throw VivariumError(
                .invalidArgument, "network must be one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return p
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
