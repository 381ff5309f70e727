/// An image as a tenant names it: a local image of the host's store (`base`), or a registry reference
/// in Docker's grammar (`python:3.12`, `ghcr.io/org/app:1.0`, `localhost:5000/tools@sha256:…`). The
/// first path component is a registry when it holds a `.` or a `:`, or is `localhost`; short references
/// are resolved against a default registry by `resolved(defaultRegistry:)`, with Docker Hub's `library/`
/// prefix. Encoded as its string.
public struct ImageReference: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The registry host (and port) when the reference names one.
    public let registry: String?
    /// The repository path: slash-separated components of a-z, 0-9 and single separators (`.`, `_`,
    /// `__`, runs of `-`).
    public let repository: String
    public let tag: String?
    public let digest: Digest?

    public static let maxLength = 255
    public static let dockerHub = "docker.io"

    public init(registry: String?, repository: String, tag: String?, digest: Digest?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// A local image by name.
    public init(_ local: ResourceName) { self.init(registry: nil, repository: local.rawValue, tag: nil, digest: nil) }

    public static func parse(_ raw: String) throws -> ImageReference {
        func invalid(_ why: String) -> VivariumError {
            VivariumError(.invalidArgument, "invalid image reference: \(why)")
        }
        guard !raw.isEmpty, raw.utf8.count <= maxLength else {
            throw invalid("1 to \(maxLength) characters")
        }
        var rest = Substring(raw)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            guard let d = Digest(rawValue: String(rest[rest.index(after: at)...])) else {
                throw invalid("the digest must be sha256: and 64 lowercase hex digits")
            }
            digest = d
            rest = rest[..<at]
        }
        var tag: String?
        // A tag follows the last ':' after the last '/' (a ':' before it is a registry's port).
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let t = String(rest[rest.index(after: colon)...])
            guard isTag(t) else {
                throw invalid("a tag is 1-128 of A-Z, a-z, 0-9, '_', '.', '-', not starting with '.' or '-'")
            }
            tag = t
            rest = rest[..<colon]
        }
        var parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var registry: String?
        if parts.count > 1, parts[0].contains(".") || parts[0].contains(":") || parts[0] == "localhost" {
            guard isRegistry(parts[0]) else { throw invalid("\(parts[0]) is not a registry host[:port]") }
            registry = parts.removeFirst()
        }
        guard !parts.isEmpty, parts.allSatisfy(isComponent) else {
            throw invalid("repository components are a-z and 0-9 joined by '.', '_', '__' or '-'")
        }
        return ImageReference(registry: registry, repository: parts.joined(separator: "/"), tag: tag, digest: digest)
    }

    /// The name of a local image: one component, no registry, tag or digest.
    public var localName: ResourceName? {
        guard registry == nil, tag == nil, digest == nil else { return nil }
        return ResourceName(rawValue: repository)
    }

    /// The reference in full: the registry (`defaultRegistry` when none is named), Docker Hub's
    /// `library/` prefix for one-component names there, and the tag `latest` when neither a tag nor a
    /// digest is given.
    public func resolved(defaultRegistry: String = dockerHub) -> ImageReference {
        let host = registry ?? defaultRegistry
        let repo = host == Self.dockerHub && !repository.contains("/") ? "library/" + repository : repository
        return ImageReference(
            registry: host, repository: repo, tag: tag ?? (digest == nil ? "latest" : nil), digest: digest)
    }

    public var description: String {
        (registry.map { $0 + "/" } ?? "") + repository + (tag.map { ":" + $0 } ?? "")
            + (digest.map { "@" + $0.rawValue } ?? "")
    }

    public init(from decoder: any Decoder) throws {
        self = try Self.parse(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    static func isLowerAlnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    static func isComponent(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard let first = u.first, let last = u.last, isLowerAlnum(first), isLowerAlnum(last) else { return false }
        var i = 0
        while i < u.count {
            if isLowerAlnum(u[i]) {
                i += 1
                continue
            }
            var j = i
            while j < u.count, !isLowerAlnum(u[j]) { j += 1 }
            let sep = u[i..<j]
            let ok =
                sep.elementsEqual([46]) || sep.elementsEqual([95]) || sep.elementsEqual([95, 95])
                || sep.allSatisfy { $0 == 45 }
            guard ok else { return false }
            i = j
        }
        return true
    }

    static func isTag(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...128).contains(u.count), u[0] != 46, u[0] != 45 else { return false }
        return u.allSatisfy { isLowerAlnum($0) || ($0 >= 65 && $0 <= 90) || $0 == 95 || $0 == 46 || $0 == 45 }
    }

    /// A host name (labels of letters, digits and '-') or an IPv4 address, with an optional port.
    static func isRegistry(_ s: String) -> Bool {
        let hostPort = s.split(separator: ":", omittingEmptySubsequences: false)
        guard (1...2).contains(hostPort.count) else { return false }
        if hostPort.count == 2 {
            guard let port = Int(hostPort[1]), (1...65535).contains(port) else { return false }
        }
        let labels = hostPort[0].split(separator: ".", omittingEmptySubsequences: false)
        return labels.allSatisfy { l in
            let u = Array(l.utf8)
            return (1...63).contains(u.count) && u.first != 45 && u.last != 45
                && u.allSatisfy { isLowerAlnum($0) || ($0 >= 65 && $0 <= 90) || $0 == 45 }
        }
    }
}
