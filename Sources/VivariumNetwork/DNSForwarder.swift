import Dispatch
import Foundation
import Glibc
import Logging
import Synchronization
import VivariumCore
import VivariumOS

/// What the forwarder answers a sandbox (by its address).
public enum DNSAccess: Sendable {
    /// Every name (a `public` sandbox).
    case all
    /// Only names a domain rule covers; their A answers are pinned for the rule (an `allowlist` sandbox).
    case only([AllowRule])
    /// Nothing (an unknown address, or a sandbox that may reach nothing).
    case refused
}

/// The sandboxes' resolver: UDP on the gateway's port 53, each query relayed to the upstream resolver
/// and its answer back, unchanged. Boxes reach nothing else of the host. An `allowlist` sandbox gets
/// answers only for the names its domain rules cover (REFUSED for the rest), and the IPv4 addresses of
/// each answer are pinned into its domain sets (`pin`) before the answer is sent, so that the connection
/// that follows passes. Bounded: at most `maxInFlight` queries at once (more are dropped, and the client
/// retries), 2 s for the upstream to answer, 4 KiB a message. UDP only: an answer too large for it
/// arrives truncated, and a retry over TCP is refused.
public final class DNSForwarder: Sendable {
    public static let maxInFlight = 256
    static let timeoutMs: Int32 = 2000
    static let maxMessage = 4096

    let listener: Int32
    let upstream: sockaddr_in
    let namespace: String?
    let logger: Logger
    let inFlight = Atomic<Int>(0)
    let access: @Sendable (String) -> DNSAccess
    let pin: @Sendable (String, AllowRule, [(address: String, ttl: UInt32)]) -> Void

    /// Listens on `address:53` in `namespace` and relays to `upstream` (`ADDRESS[:PORT]`, IPv4); `access`
    /// says what a client address may resolve, `pin` receives the answers of a domain rule's names.
    public init(
        namespace: String?, address: String, upstream: String, logger: Logger,
        access: @escaping @Sendable (String) -> DNSAccess,
        pin: @escaping @Sendable (String, AllowRule, [(address: String, ttl: UInt32)]) -> Void
    ) throws {
        self.access = access
        self.pin = pin
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
                if let answer = answer(query, from: client) { reply(answer, to: client) }
            }
        }
    }

    /// The answer a client gets: relayed, or REFUSED where its policy says so.
    func answer(_ query: [UInt8], from client: sockaddr_in) -> [UInt8]? {
        let source = IPv4.format(UInt32(bigEndian: client.sin_addr.s_addr))
        switch access(source) {
        case .all: return relay(query)
        case .refused: return DNSMessage.refused(query)
        case .only(let rules):
            guard let (name, _) = DNSMessage.question(query), let rule = rules.first(where: { $0.matches(name: name) })
            else { return DNSMessage.refused(query) }
            guard let answer = relay(query) else { return nil }
            let found = DNSMessage.addresses(answer)
            if !found.isEmpty { pin(source, rule, found) }
            return answer
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

/// The little of DNS messages (RFC 1035) the forwarder reads: the question's name, and an answer's A
/// records; and the REFUSED answer it makes itself.
enum DNSMessage {
    /// The first question's name (lower case, no trailing dot) and type.
    static func question(_ m: [UInt8]) -> (String, UInt16)? {
        guard m.count >= 12, m[4] == 0, m[5] >= 1 else { return nil }
        var i = 12
        guard let name = readName(m, &i), i + 4 <= m.count else { return nil }
        return (name, UInt16(m[i]) << 8 | UInt16(m[i + 1]))
    }

    /// The IPv4 addresses of the answer section's A records, with their TTLs.
    static func addresses(_ m: [UInt8]) -> [(address: String, ttl: UInt32)] {
        guard m.count >= 12 else { return [] }
        let qd = Int(m[4]) << 8 | Int(m[5])
        let an = Int(m[6]) << 8 | Int(m[7])
        var i = 12
        for _ in 0..<qd {
            guard readName(m, &i) != nil, i + 4 <= m.count else { return [] }
            i += 4
        }
        var out: [(String, UInt32)] = []
        for _ in 0..<an {
            guard readName(m, &i) != nil, i + 10 <= m.count else { break }
            let type = Int(m[i]) << 8 | Int(m[i + 1])
            let cls = Int(m[i + 2]) << 8 | Int(m[i + 3])
            let ttl = m[(i + 4)..<(i + 8)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let len = Int(m[i + 8]) << 8 | Int(m[i + 9])
            i += 10
            guard i + len <= m.count else { break }
            if type == 1, cls == 1, len == 4 { out.append(("\(m[i]).\(m[i + 1]).\(m[i + 2]).\(m[i + 3])", ttl)) }
            i += len
        }
        return out
    }

    /// Reads a (possibly compressed) name at `i`, moving `i` past it.
    static func readName(_ m: [UInt8], _ i: inout Int) -> String? {
        var labels: [String] = []
        var at = i
        var jumped = false
        var hops = 0
        while true {
            guard at < m.count else { return nil }
            let len = Int(m[at])
            if len == 0 {
                if !jumped { i = at + 1 }
                break
            }
            if len & 0xC0 == 0xC0 {
                guard at + 1 < m.count, hops < 16 else { return nil }
                if !jumped { i = at + 2 }
                jumped = true
                hops += 1
                at = (len & 0x3F) << 8 | Int(m[at + 1])
                continue
            }
            guard len <= 63, at + 1 + len <= m.count else { return nil }
            labels.append(String(decoding: m[(at + 1)...(at + len)], as: UTF8.self).lowercased())
            at += 1 + len
        }
        let name = labels.joined(separator: ".")
        return name.utf8.count <= 253 ? name : nil
    }

    /// The REFUSED answer to a query: its id, its question, no records.
    static func refused(_ q: [UInt8]) -> [UInt8]? {
        guard q.count >= 12 else { return nil }
        var end = 12
        if q[4] != 0 || q[5] != 0 {
            guard readName(q, &end) != nil, end + 4 <= q.count else { return nil }
            end += 4
        }
        var out = Array(q[0..<end])
        out[2] = 0x80 | (q[2] & 0x79)  // QR, the opcode and RD kept
        out[3] = 0x80 | 5  // RA, REFUSED
        out[4] = 0
        out[5] = q[4] != 0 || q[5] != 0 ? 1 : 0
        for k in 6..<12 { out[k] = 0 }
        return out
    }
}
