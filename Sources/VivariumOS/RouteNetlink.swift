import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// An rtnetlink socket in one network namespace: links, IPv4 addresses and routes, with no `ip` process.
/// The socket is made in the namespace by a short-lived thread of the shim, so no Swift thread ever
/// changes namespace. One request at a time per socket (callers make one per operation).
public final class Netlink: Sendable {
    let fd: Int32

    /// A socket in the namespace open at `namespace` (nil: the caller's).
    public init(namespace: Int32?) throws {
        let rc = vv_rtnl_open(namespace ?? -1)
        guard rc >= 0 else { throw posixError("open an rtnetlink socket", -rc) }
        fd = rc
    }

    /// A socket in the namespace at `namespacePath` (/proc/PID/ns/net, /run/netns/NAME).
    public convenience init(namespacePath: String) throws {
        let ns = open(namespacePath, O_RDONLY | O_CLOEXEC)
        guard ns >= 0 else { throw posixError("open the network namespace \(namespacePath)") }
        defer { close(ns) }
        try self.init(namespace: ns)
    }

    deinit { close(fd) }

    /// The interface's index, or nil when there is none of that name.
    public func index(of name: String) throws -> Int32? {
        let rc = try checked(name) { vv_rtnl_index(fd, name) }
        if rc == -ENODEV { return nil }
        guard rc > 0 else { throw posixError("look up the interface \(name)", -rc) }
        return rc
    }

    public func exists(_ name: String) throws -> Bool { try index(of: name) != nil }

    /// Creates a bridge; one that exists already is kept.
    public func createBridge(_ name: String) throws {
        let rc = try checked(name) { vv_rtnl_bridge(fd, name) }
        guard rc == 0 || rc == -EEXIST else { throw posixError("create the bridge \(name)", -rc) }
    }

    /// Creates the veth `hostName` here, up and enslaved to `master`, with its peer `peerName` made directly
    /// in the namespace open at `peerNamespace`: one request, no move between namespaces.
    public func createVeth(_ hostName: String, master: String?, peer peerName: String, in peerNamespace: Int32)
        throws
    {
        _ = try checked(peerName) { 0 }
        var masterIndex: Int32 = 0
        if let master {
            guard let i = try index(of: master) else {
                throw VivariumError(.unavailable, "the bridge \(master) does not exist")
            }
            masterIndex = i
        }
        let rc = try checked(hostName) { vv_rtnl_veth(fd, hostName, masterIndex, peerName, peerNamespace) }
        guard rc == 0 else { throw posixError("create the veth pair \(hostName)/\(peerName)", -rc) }
    }

    /// `createVeth` with the peer in the namespace at `path` (/proc/PID/ns/net).
    public func createVeth(_ hostName: String, master: String?, peer peerName: String, inNamespaceAt path: String)
        throws
    {
        let ns = open(path, O_RDONLY | O_CLOEXEC)
        guard ns >= 0 else { throw posixError("open the network namespace \(path)") }
        defer { close(ns) }
        try createVeth(hostName, master: master, peer: peerName, in: ns)
    }

    public func setUp(_ name: String) throws {
        let rc = vv_rtnl_up(fd, try require(name))
        guard rc == 0 else { throw posixError("set \(name) up", -rc) }
    }

    /// Deletes the interface (a veth takes its peer along); none of that name is success.
    public func delete(_ name: String) throws {
        guard let i = try index(of: name) else { return }
        let rc = vv_rtnl_delete(fd, i)
        guard rc == 0 || rc == -ENODEV else { throw posixError("delete \(name)", -rc) }
    }

    /// Adds `address/prefix` to the interface; an address it has already is kept.
    public func addAddress(_ name: String, _ address: String, prefix: Int) throws {
        let rc = vv_rtnl_addr4(fd, try require(name), try Self.ipv4(address), Int32(prefix))
        guard rc == 0 || rc == -EEXIST else { throw posixError("add \(address)/\(prefix) to \(name)", -rc) }
    }

    /// Adds the IPv4 default route via `gateway`.
    public func addDefaultRoute(via gateway: String) throws {
        let rc = vv_rtnl_default_route4(fd, try Self.ipv4(gateway))
        guard rc == 0 || rc == -EEXIST else { throw posixError("add the default route via \(gateway)", -rc) }
    }

    func require(_ name: String) throws -> Int32 {
        guard let i = try index(of: name) else { throw VivariumError(.notFound, "no interface \(name)") }
        return i
    }

    /// Interface names are at most 15 bytes (IFNAMSIZ - 1).
    func checked(_ name: String, _ body: () -> Int32) throws -> Int32 {
        guard !name.isEmpty, name.utf8.count < IFNAMSIZ, !name.contains("/"), !name.contains(" ") else {
            throw VivariumError(.invalidArgument, "\(name) is not a valid interface name (1 to 15 bytes)")
        }
        return body()
    }

    /// An IPv4 address in network byte order.
    static func ipv4(_ s: String) throws -> UInt32 { try NamespaceSocket.ipv4(s, port: 0).sin_addr.s_addr }
}
