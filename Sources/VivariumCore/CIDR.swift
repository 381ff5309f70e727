import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 network, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public let bytes: [UInt8]
    public let prefix: Int

    public init(_ s: String) throws {
        let parts = s.trimmingCharacters(in: .whitespaces).split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let addr = CIDR.parseAddress(first) else {
            throw VivariumError(.invalidArgument, "invalid address or network '\(s.prefix(64))'")
        }
        let bits = addr.count * 8
        let p = parts.count == 2 ? Int(parts[1]) : bits
        guard let p, (0...bits).contains(p) else {
            throw VivariumError(.invalidArgument, "invalid prefix in '\(s.prefix(64))'")
        }
        bytes = addr
        prefix = p
    }

    /// 4 bytes for IPv4, 16 for IPv6 (an IPv4-mapped IPv6 address counts as IPv4).
    public static func parseAddress(_ s: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, s, &v6) == 1 else { return nil }
        let b = withUnsafeBytes(of: &v6) { Array($0) }
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff { return Array(b[12...]) }
        return b
    }

    public func contains(_ address: String) -> Bool {
        guard let a = CIDR.parseAddress(address), a.count == bytes.count else { return false }
        var left = prefix
        for i in 0..<a.count where left > 0 {
            let n = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xff << (8 - n))
            if a[i] & mask != bytes[i] & mask { return false }
            left -= n
        }
        return true
    }

    public static func parseList(_ s: String) throws -> [CIDR] {
        try s.split(separator: ",").map { try CIDR(String($0)) }
    }

    public var description: String {
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        var buf = [UInt8](repeating: 0, count: 64)
        _ = bytes.withUnsafeBytes { src in
            buf.withUnsafeMutableBytes { inet_ntop(family, src.baseAddress, $0.baseAddress, 64) }
        }
        return String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self) + "/\(prefix)"
    }
}
