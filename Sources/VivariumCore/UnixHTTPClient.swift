import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A small blocking HTTP/1.1 client over a unix socket or plain TCP (IPv4 loopback), for the CLI
/// and tests: one request per connection, bounded response size.
public struct UnixHTTPClient: Sendable {
    public enum Endpoint: Sendable {
        case unix(String)
        /// An IPv4 address and port.
        case tcp(String, UInt16)
    }
    public let endpoint: Endpoint
    public var maxResponseBytes = 64 << 20
    /// Sent as `Authorization: Bearer …` when set.
    public var bearer: String?
    public var extraHeaders: [(String, String)] = []
    /// Raw bytes sent before the request (a PROXY protocol header, in tests).
    public var rawPrefix: [UInt8] = []

    public init(socketPath: String) { endpoint = .unix(socketPath) }
    public init(host: String, port: UInt16) { endpoint = .tcp(host, port) }

    public struct Response: Sendable {
        public var status: Int
        public var headers: [String: String]
        public var body: Data
        public init(status: Int, headers: [String: String], body: Data) {
            self.status = status
            self.headers = headers
            self.body = body
        }
    }

    func connectTCP(_ host: String, _ port: UInt16) throws -> Int32 {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            throw VivariumError(.invalidArgument, "not an IPv4 address: \(host)")
        }
        return try Self.connected(AF_INET, &addr, unreachable: "cannot reach \(host):\(port)")
    }

    func connectUnix(_ socketPath: String) throws -> Int32 {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw VivariumError(.invalidArgument, "socket path too long: \(socketPath)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        return try Self.connected(
            AF_UNIX, &addr,
            unreachable: "cannot reach the vivarium daemon at \(socketPath) (is `vivarium serve` running?)")
    }

    /// A stream socket of `family` connected to `addr` (a sockaddr_in or sockaddr_un).
    static func connected<Address>(_ family: Int32, _ addr: inout Address, unreachable: String) throws -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot create a socket") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw VivariumError(.unavailable, "\(unreachable): \(why)")
        }
        return fd
    }

    public func send(_ method: String, _ path: String, body: Data? = nil) throws -> Response {
        let fd: Int32
        switch endpoint {
        case .unix(let p): fd = try connectUnix(p)
        case .tcp(let h, let port): fd = try connectTCP(h, port)
        }
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n"
        if let bearer { head += "Authorization: Bearer \(bearer)\r\n" }
        for (k, v) in extraHeaders { head += "\(k): \(v)\r\n" }
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else if method != "GET" && method != "DELETE" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var out = Data(rawPrefix) + Data(head.utf8)
        if let body { out.append(body) }
        try out.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw VivariumError(.unavailable, "connection to the daemon lost while sending") }
                off += n
            }
        }
        var data = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
            guard data.count <= maxResponseBytes else { throw VivariumError(.payloadTooLarge, "response too large") }
        }
        return try Self.parse(data)
    }

    static func parse(_ data: Data) throws -> Response {
        let sep = Data("\r\n\r\n".utf8)
        guard let r = data.range(of: sep) else {
            throw VivariumError(.unavailable, "the daemon closed the connection without a response")
        }
        let head = String(decoding: data[..<r.lowerBound], as: UTF8.self).split(separator: "\r\n")
        guard let statusLine = head.first,
            let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { throw VivariumError(.unavailable, "malformed response from the daemon") }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let c = line.firstIndex(of: ":") else { continue }
            headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[r.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" { body = try dechunk(body) }
        return Response(status: code, headers: headers, body: body)
    }

    static func dechunk(_ d: Data) throws -> Data {
        var out = Data()
        var i = d.startIndex
        let crlf = Data("\r\n".utf8)
        while i < d.endIndex {
            guard let e = d.range(of: crlf, in: i..<d.endIndex) else { break }
            let sizeLine = String(decoding: d[i..<e.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeLine.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw VivariumError(.unavailable, "malformed chunked response")
            }
            if size == 0 { break }
            let start = e.upperBound
            guard d.distance(from: start, to: d.endIndex) >= size else {
                throw VivariumError(.unavailable, "truncated chunked response")
            }
            let end = d.index(start, offsetBy: size)
            out.append(d[start..<end])
            i = d.index(end, offsetBy: 2, limitedBy: d.endIndex) ?? d.endIndex
        }
        return out
    }
}

/// Something that sends one HTTP request and returns the answer.
public protocol HTTPTransport: Sendable {
    func send(_ method: String, _ path: String, body: Data?) throws -> UnixHTTPClient.Response
}

extension UnixHTTPClient: HTTPTransport {}

/// Typed calls on top of a transport (the unix socket by default): decodes success bodies and turns
/// error bodies back into `VivariumError`s.
public struct APIClient: Sendable {
    public var http: UnixHTTPClient
    /// Replaces `http` when set (the CLI's pinned HTTPS transport).
    public var transport: (any HTTPTransport)?
    public init(socketPath: String) { http = UnixHTTPClient(socketPath: socketPath) }
    public init(http: UnixHTTPClient) { self.http = http }
    public init(transport: any HTTPTransport) {
        http = UnixHTTPClient(socketPath: "/nonexistent")
        self.transport = transport
    }

    func send(_ method: String, _ path: String, body: Data? = nil) throws -> UnixHTTPClient.Response {
        if let transport { return try transport.send(method, path, body: body) }
        return try http.send(method, path, body: body)
    }

    public func call<T: Decodable>(_ method: String, _ path: String, body: (some Encodable)? = Optional<Int>.none)
        throws -> T
    {
        let data = try body.map { try WireCoding.encoder().encode($0) }
        let r = try send(method, path, body: data)
        try Self.check(r)
        return try WireCoding.decoder().decode(T.self, from: r.body)
    }

    public func callNoContent(_ method: String, _ path: String) throws {
        try Self.check(try send(method, path))
    }

    public func callNoContentBody(_ method: String, _ path: String, body: some Encodable) throws {
        try Self.check(try send(method, path, body: try WireCoding.encoder().encode(body)))
    }

    static func check(_ r: UnixHTTPClient.Response) throws {
        guard (200..<300).contains(r.status) else {
            if let e = try? WireCoding.decoder().decode(ErrorBody.self, from: r.body) {
                throw VivariumError(VivariumError.Code(rawValue: e.error.code), e.error.message)
            }
            throw VivariumError(.unavailable, "the daemon answered HTTP \(r.status)")
        }
    }
}

extension String {
    /// Percent-encodes a path segment or query value.
    public var urlComponentEncoded: String {
        addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? self
    }
}
