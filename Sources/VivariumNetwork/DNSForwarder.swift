import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization
import VivariumCore
import VivariumOS

/// The sandboxes' resolver: UDP on the gateway's port 53, each query relayed to the upstream resolver
/// and its answer back, unchanged. Boxes reach nothing else of the host. Bounded: at most `maxInFlight`
/// queries at once (more are dropped, and the client retries), 2 s for the upstream to answer, 4 KiB a
/// message. UDP only: an answer too large for it arrives truncated, and a retry over TCP is refused.
public final class DNSForwarder: Sendable {
    public static let maxInFlight = 256
    static let timeoutMs: Int32 = 2000
    static let maxMessage = 4096

    let listener: Int32
    let upstream: sockaddr_in
    let namespace: String?
    let logger: Logger
    let inFlight = Atomic<Int>(0)

    /// Listens on `address:53` in `namespace` and relays to `upstream` (`ADDRESS[:PORT]`, IPv4).
    public init(namespace: String?, address: String, upstream: String, logger: Logger) throws {
        let parts = upstream.split(separator: ":")
        guard (1...2).contains(parts.count), let port = parts.count == 2 ? UInt16(parts[1]) : 53 else {
            throw VivariumError(.invalidArgument, "network_dns must be ADDRESS[:PORT] (IPv4), not \(upstream)")
        }
        self.upstream = try NamespaceSocket.ipv4(String(parts[0]), port: port)
        self.namespace = namespace
        self.logger = logger
        listener = try NamespaceSocket.udp(in: namespace, bind: address, port: 53)
        let thread = Thread { [self] in serve() }
        thread.name = "vivarium-dns"
        thread.start()
    }

    /// The first `nameserver` of a resolv.conf, for the default upstream.
    public static func systemResolver(_ resolvConf: String = "/etc/resolv.conf") -> String? {
        for line in (FileSystem.readAll(resolvConf) ?? "").split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if f.count >= 2, f[0] == "nameserver", !f[1].contains(":") { return String(f[1]) }
        }
        return nil
    }

    /// Receives queries for the daemon's life.
    func serve() {
        var buf = [UInt8](repeating: 0, count: Self.maxMessage)
        while true {
            var from = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(listener, &buf, buf.count, 0, $0, &len)
                }
            }
            if n < 0 {
                if errno == EINTR { continue }
                logger.error("the DNS forwarder stopped", metadata: ["error": "\(String(cString: strerror(errno)))"])
                return
            }
            // A header is 12 bytes; less is not a query.
            guard n >= 12 else { continue }
            guard inFlight.add(1, ordering: .relaxed).newValue <= Self.maxInFlight else {
                inFlight.subtract(1, ordering: .relaxed)
                continue
            }
            let query = Array(buf[0..<n])
            let client = from
            DispatchQueue.global().async { [self] in
                defer { inFlight.subtract(1, ordering: .relaxed) }
                if let answer = relay(query) { reply(answer, to: client) }
            }
        }
    }

    /// Sends the query upstream from a socket of its own and waits for the answer to that transaction id.
    func relay(_ query: [UInt8]) -> [UInt8]? {
        guard let fd = try? NamespaceSocket.udp(in: namespace) else { return nil }
        defer { close(fd) }
        var to = upstream
        let connected = withUnsafePointer(to: &to) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0, send(fd, query, query.count, 0) == query.count else { return nil }
        var buf = [UInt8](repeating: 0, count: Self.maxMessage)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&pfd, 1, Self.timeoutMs) == 1 {
            let n = recv(fd, &buf, buf.count, 0)
            guard n >= 12 else { return nil }
            if buf[0] == query[0], buf[1] == query[1] { return Array(buf[0..<n]) }
        }
        return nil
    }

    func reply(_ answer: [UInt8], to client: sockaddr_in) {
        var to = client
        _ = withUnsafePointer(to: &to) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(listener, answer, answer.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
}
