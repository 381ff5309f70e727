import Crypto

/// Random identifiers: 12 bytes from the system CSPRNG, lower-case hex.
public struct SandboxID: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init?(rawValue: String) {
        guard rawValue.count == 24, rawValue.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        self.rawValue = rawValue
    }
    public static func random() -> SandboxID { SandboxID(rawValue: randomHex(bytes: 12))! }
    public var description: String { rawValue }
    /// A short prefix used in host-wide names (crun ids, cgroups).
    public var short: String { String(rawValue.prefix(12)) }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let id = SandboxID(rawValue: raw) else {
            throw VivariumError(.invalidArgument, "invalid sandbox id")
        }
        self = id
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

public func randomHex(bytes: Int) -> String {
    var g = SystemRandomNumberGenerator()
    var out = ""
    out.reserveCapacity(bytes * 2)
    for _ in 0..<bytes {
        let b = UInt8.random(in: 0...255, using: &g)
        out += String(b, radix: 16).leftPadded(to: 2)
    }
    return out
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

/// A DNS label (RFC 1123): 1–63 characters of a–z, 0–9 and '-', not starting or ending with '-'.
/// Used for sandbox, image and tenant names.
public struct ResourceName: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let rawValue: String

    public init?(rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    public static func parse(_ raw: String, what: String = "name") throws -> ResourceName {
        guard let n = ResourceName(rawValue: raw) else {
            throw VivariumError(
                .invalidName,
                "\(what) must be a DNS label: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
            )
        }
        return n
    }

    public static func isValid(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count) else { return false }
        for c in u {
            let ok = (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45
            if !ok { return false }
        }
        return u.first != 45 && u.last != 45
    }

    public var description: String { rawValue }
    public static func < (a: ResourceName, b: ResourceName) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: any Decoder) throws {
        self = try ResourceName.parse(try decoder.singleValueContainer().decode(String.self))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A content digest, `sha256:<64 hex>`.
public struct Digest: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String
    public init?(rawValue: String) {
        guard rawValue.hasPrefix("sha256:") else { return nil }
        let hex = rawValue.dropFirst(7)
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
        self.rawValue = rawValue
    }
    public init(sha256 bytes: some Sequence<UInt8>) {
        self.rawValue = "sha256:" + bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
    public static func of(_ data: some Sequence<UInt8>) -> Digest {
        var h = SHA256()
        h.update(data: Array(data))
        return Digest(sha256: h.finalize())
    }
    public var hex: String { String(rawValue.dropFirst(7)) }
    public var description: String { rawValue }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let d = Digest(rawValue: raw) else { throw VivariumError(.invalidArgument, "invalid digest") }
        self = d
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}
