import Foundation
import Synchronization
import VivariumCore

#if canImport(Glibc)
    import Glibc
#endif

/// An HTTP answer: status, headers (names lower-cased) and the whole body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: Data
    public init(status: Int, headers: [String: String], body: Data) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Something that sends one HTTP request and returns the answer.
public protocol HTTPTransport: Sendable {
    func send(_ method: String, _ path: String, body: Data?) throws -> HTTPAnswer
}

/// A small blocking HTTP/1.1 client over a unix socket or plain TCP (IPv4 loopback), for the CLI, the
/// tests and the benchmark. It keeps its connection open between requests and reads each answer by its
/// Content-Length or chunked terminator, never by waiting for the server to close.
public struct SocketHTTPClient: HTTPTransport {
    public enum Endpoint: Sendable {
        case unix(String)
        /// An IPv4 address and port.
        case tcp(String, UInt16)
    }
    public let endpoint: Endpoint
    public var maxResponseBytes = 64 << 20
    /// Sent as `Authorization: Bearer …` when set.
    public var bearer: String?
    public var extraHeaders: [(String, String)] = [] { didSet { connection = Connection() } }
    /// Raw bytes sent at the start of each connection (a PROXY protocol header, in tests).
    public var rawPrefix: [UInt8] = [] { didSet { connection = Connection() } }
    /// Give up on an answer after this long without a byte (nil: wait as long as the command runs).
    public var receiveTimeout: Duration? { didSet { connection = Connection() } }

    /// The idle connections, shared by copies of this client until its settings change.
    private var connection = Connection()

    public init(socketPath: String) { endpoint = .unix(socketPath) }
    public init(host: String, port: UInt16) { endpoint = .tcp(host, port) }

    /// A small pool: a request takes an idle connection (or opens one) and gives it back after a complete
    /// answer, so that concurrent requests through one client never wait for each other.
    final class Connection: Sendable {
        let idle = Mutex<[(fd: Int32, pending: [UInt8])]>([])
        static let maxIdle = 4

        func take() -> (fd: Int32, pending: [UInt8])? { idle.withLock { $0.popLast() } }

        func give(_ c: (fd: Int32, pending: [UInt8])) {
            let kept = idle.withLock { all -> Bool in
                guard all.count < Self.maxIdle else { return false }
                all.append(c)
                return true
            }
            if !kept { close(c.fd) }
        }

        deinit { idle.withLock { for c in $0 { close(c.fd) } } }
    }

    public func send(_ method: String, _ path: String, body: Data? = nil) throws -> HTTPAnswer {
        if let reused = connection.take() {
            do {
                return try exchange(reused, method, path, body)
            } catch is Retry {
                // The server closed an idle connection before reading this request: send it on a new one.
            }
        }
        do {
            return try exchange(nil, method, path, body)
        } catch is Retry {
            throw VivariumError(.unavailable, "the daemon closed the connection without an answer")
        }
    }

    /// Thrown when a connection turns out closed before any byte of the answer arrived.
    struct Retry: Error {}

    private func exchange(_ reused: (fd: Int32, pending: [UInt8])?, _ method: String, _ path: String, _ body: Data?)
        throws -> HTTPAnswer
    {
        let fd: Int32
        var pending: [UInt8] = []
        if let reused {
            (fd, pending) = reused
        } else {
            fd = try connect()
            if let t = receiveTimeout {
                var tv = timeval(
                    tv_sec: Int(t.components.seconds), tv_usec: Int(t.components.attoseconds / 1_000_000_000_000))
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            }
            do {
                if !rawPrefix.isEmpty { try Self.writeAll(fd, rawPrefix) }
            } catch {
                close(fd)
                throw error
            }
        }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        if let bearer { head += "Authorization: Bearer \(bearer)\r\n" }
        for (k, v) in extraHeaders { head += "\(k): \(v)\r\n" }
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else if method != "GET" && method != "DELETE" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var out = Array(head.utf8)
        if let body { out += body }
        do {
            try Self.writeAll(fd, out)
        } catch {
            close(fd)
            throw reused != nil ? Retry() : error
        }
        var reader = Reader(fd: fd, buffer: pending, limit: maxResponseBytes)
        let answer: HTTPAnswer
        let keep: Bool
        do {
            (answer, keep) = try reader.readAnswer(requestMethod: method)
        } catch let e as Retry {
            close(fd)
            if reused != nil { throw e }
            throw VivariumError(.unavailable, "the daemon closed the connection without an answer")
        } catch {
            close(fd)
            throw error
        }
        if keep {
            connection.give((fd, reader.rest))
        } else {
            close(fd)
        }
        return answer
    }

    func connect() throws -> Int32 {
        switch endpoint {
        case .unix(let p):
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let pathBytes = Array(p.utf8)
            guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                throw VivariumError(.invalidArgument, "socket path too long: \(p)")
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                raw.copyBytes(from: pathBytes)
                raw[pathBytes.count] = 0
            }
            return try Self.connected(
                AF_UNIX, &addr, unreachable: "cannot reach the vivarium daemon at \(p) (is `vivarium serve` running?)")
        case .tcp(let host, let port):
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
                throw VivariumError(.invalidArgument, "not an IPv4 address: \(host)")
            }
            return try Self.connected(AF_INET, &addr, unreachable: "cannot reach \(host):\(port)")
        }
    }

    /// A stream socket of `family` connected to `addr` (a sockaddr_in or sockaddr_un).
    static func connected<Address>(_ family: Int32, _ addr: inout Address, unreachable: String) throws -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot create a socket") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw VivariumError(.unavailable, "\(unreachable): \(why)")
        }
        if family == AF_INET {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        return fd
    }

    /// Writes everything; MSG_NOSIGNAL so that a daemon going away is an error, never a SIGPIPE.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw VivariumError(.unavailable, "connection to the daemon lost while sending") }
                off += n
            }
        }
    }
}

/// Reads one HTTP/1.1 answer from a socket: the head, then a body delimited by Content-Length, by the
/// chunked terminator, or (only when the server said neither) by the end of the connection.
struct Reader {
    let fd: Int32
    var buffer: [UInt8]
    let limit: Int
    /// Bytes past the answer (the start of the next one, which a server never sends unasked).
    var rest: [UInt8] { buffer }
    var receivedAny = false

    init(fd: Int32, buffer: [UInt8], limit: Int) {
        self.fd = fd
        self.buffer = buffer
        self.limit = limit
    }

    /// Reads more bytes; false at the end of the connection.
    mutating func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw VivariumError(.unavailable, "the daemon did not answer in time")
            }
            if n < 0 {
                throw VivariumError(.unavailable, "connection to the daemon lost: \(String(cString: strerror(errno)))")
            }
            if n == 0 { return false }
            receivedAny = true
            buffer += chunk[0..<n]
            guard buffer.count <= limit + 65536 else { throw VivariumError(.payloadTooLarge, "response too large") }
            return true
        }
    }

    /// Takes `n` bytes off the front of the buffer, reading as needed.
    mutating func take(_ n: Int) throws -> [UInt8] {
        while buffer.count < n {
            guard try fill() else { throw VivariumError(.unavailable, "the daemon closed the connection mid-answer") }
        }
        let out = Array(buffer[0..<n])
        buffer.removeFirst(n)
        return out
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    mutating func line() throws -> [UInt8] {
        var from = 0
        while true {
            if let i = buffer[from...].firstIndex(of: 10), i > 0, buffer[i - 1] == 13 {
                let out = Array(buffer[0..<(i - 1)])
                buffer.removeFirst(i + 1)
                return out
            }
            from = max(0, buffer.count - 1)
            guard buffer.count < 65536 else { throw VivariumError(.unavailable, "malformed response from the daemon") }
            guard try fill() else {
                if !receivedAny { throw SocketHTTPClient.Retry() }
                throw VivariumError(.unavailable, "the daemon closed the connection mid-answer")
            }
        }
    }

    /// The answer, and whether the connection may be used again.
    mutating func readAnswer(requestMethod: String) throws -> (HTTPAnswer, Bool) {
        let statusLine = String(decoding: try line(), as: UTF8.self)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else {
            throw VivariumError(.unavailable, "malformed response from the daemon")
        }
        var headers: [String: String] = [:]
        while true {
            let l = try line()
            if l.isEmpty { break }
            let text = String(decoding: l, as: UTF8.self)
            guard let c = text.firstIndex(of: ":") else { continue }
            headers[text[..<c].lowercased()] = text[text.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var keep = headers["connection"]?.lowercased() != "close" && parts[0] == "HTTP/1.1"
        var body: [UInt8] = []
        if requestMethod == "HEAD" || code == 204 || code == 304 || (100..<200).contains(code) {
            // No body.
        } else if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                let sizeLine = String(decoding: try line(), as: UTF8.self)
                guard
                    let size = Int(
                        sizeLine.split(separator: ";").first?.trimmingCharacters(in: .whitespaces) ?? "",
                        radix: 16), size >= 0
                else { throw VivariumError(.unavailable, "malformed chunked response") }
                if size == 0 {
                    while try !line().isEmpty {}  // trailers
                    break
                }
                guard body.count + size <= limit else { throw VivariumError(.payloadTooLarge, "response too large") }
                body += try take(size)
                _ = try take(2)
            }
        } else if let len = headers["content-length"].flatMap({ Int($0) }) {
            guard len >= 0, len <= limit else { throw VivariumError(.payloadTooLarge, "response too large") }
            body = try take(len)
        } else {
            while try fill() {}
            body = buffer
            buffer = []
            keep = false
        }
        return (HTTPAnswer(status: code, headers: headers, body: Data(body)), keep)
    }
}
