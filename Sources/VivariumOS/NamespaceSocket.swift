import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// Sockets made in another network namespace (a short-lived thread of the shim joins it): they send
/// and receive there from any thread.
public enum NamespaceSocket {
    /// An IPv4 socket of `type` in the namespace at `namespacePath` (nil: the daemon's own).
    static func socket(in namespacePath: String?, type: Int32) throws -> Int32 {
        var ns: Int32 = -1
        if let namespacePath {
            ns = open(namespacePath, O_RDONLY | O_CLOEXEC)
            guard ns >= 0 else { throw posixError("open the network namespace \(namespacePath)") }
        }
        defer { if ns >= 0 { close(ns) } }
        let fd = vv_socket_in_ns(ns, AF_INET, type, 0)
        guard fd >= 0 else { throw posixError("make a socket", -fd) }
        return fd
    }

    /// A TCP connection from the namespace at `namespacePath` to `address:port`, within `timeoutMs`
    /// (blocks the calling thread that long at most). The caller closes it.
    public static func connectTCP(in namespacePath: String?, to address: String, port: UInt16, timeoutMs: Int32)
        throws -> Int32
    {
        let fd = try socket(in: namespacePath, type: Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        var sa = try ipv4(address, port: port)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var e = rc == 0 ? 0 : errno
        if e == EINPROGRESS {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            if poll(&p, 1, timeoutMs) == 1 {
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len)
            } else {
                e = ETIMEDOUT
            }
        }
        guard e == 0 else {
            close(fd)
            throw posixError("connect to \(address):\(port)", e)
        }
        return fd
    }

    /// A UDP socket in the namespace at `namespacePath` (nil: the daemon's own), bound to `address:port`
    /// when `address` is given. The caller closes it.
    public static func udp(in namespacePath: String?, bind address: String? = nil, port: UInt16 = 0) throws -> Int32 {
        let fd = try socket(in: namespacePath, type: Int32(SOCK_DGRAM.rawValue))
        if let address {
            var sa = try ipv4(address, port: port)
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard rc == 0 else {
                let e = errno
                close(fd)
                throw posixError("bind \(address):\(port)", e)
            }
        }
        return fd
    }

    /// An IPv4 socket address.
    public static func ipv4(_ address: String, port: UInt16) throws -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
            throw VivariumError(.invalidArgument, "\(address) is not an IPv4 address")
        }
        return sa
    }
}
