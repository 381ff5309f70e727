import Foundation

/// A secret's name: also its file name under `/run/secrets` in a box. 1 to 128 letters, digits, '.',
/// '_' and '-', starting with a letter or digit.
public struct SecretName: RawRepresentable, Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String

    public init?(rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    public static func isValid(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, (1...128).contains(s.utf8.count), first.isASCIIAlphanumeric
        else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "." || $0 == "_" || $0 == "-" }
    }

    public static func parse(_ s: String) throws -> SecretName {
        guard let n = SecretName(rawValue: s) else {
            throw VivariumError(
                .invalidName,
                "invalid secret name '\(s.prefix(64))': 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        }
        return n
    }

    public var description: String { rawValue }
    public static func < (a: SecretName, b: SecretName) -> Bool { a.rawValue < b.rawValue }

    /// The secret that holds a tenant's login for a registry (`vivarium registry login`): bound to no box,
    /// read only by the tenant's pulls.
    public static func registryLogin(_ registry: String) throws -> SecretName {
        try parse("registry-" + registry.replacingOccurrences(of: ":", with: "_"))
    }
}

extension Unicode.Scalar {
    var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}

/// Which sandboxes of its tenant a secret is delivered to: those named, and those whose labels hold every
/// pair given. With neither, it is delivered to none (a credential the daemon itself uses, such as a
/// registry login).
public struct SecretBinding: Sendable, Equatable, Codable {
    public static let maxSandboxes = 64
    /// The largest value: a file in a tmpfs of every bound box.
    public static let maxValueBytes = 4 << 20

    public var sandboxes: [ResourceName]
    public var labels: [String: String]
    /// The group (inside the box) that may read the file; the owner is the box's root.
    public var gid: UInt32

    public init(sandboxes: [ResourceName] = [], labels: [String: String] = [:], gid: UInt32 = 0) {
        self.sandboxes = sandboxes
        self.labels = labels
        self.gid = gid
    }

    public func validated() throws -> SecretBinding {
        guard sandboxes.count <= Self.maxSandboxes else {
            throw VivariumError(.invalidArgument, "a secret is bound to at most \(Self.maxSandboxes) sandboxes")
        }
        try FieldRules.validateLabels(labels)
        guard gid < 65536 else { throw VivariumError(.invalidArgument, "gid must be below 65536 (the box's ids)") }
        var b = self
        b.sandboxes = Array(Set(sandboxes)).sorted { $0.rawValue < $1.rawValue }
        return b
    }

    /// Whether a sandbox of the secret's tenant gets the file (a sandbox yet unnamed: by its labels).
    public func covers(name: ResourceName?, labels boxLabels: [String: String]) -> Bool {
        if let name, sandboxes.contains(name) { return true }
        return !labels.isEmpty && labels.allSatisfy { boxLabels[$0.key] == $0.value }
    }
}

/// A stored secret's metadata: never its value.
public struct Secret: Sendable, Equatable {
    public var tenant: String
    public var name: SecretName
    public var version: Int64
    public var binding: SecretBinding
    public var keyID: String
    public var createdAt: Date

    public init(
        tenant: String, name: SecretName, version: Int64, binding: SecretBinding, keyID: String, createdAt: Date
    ) {
        self.tenant = tenant
        self.name = name
        self.version = version
        self.binding = binding
        self.keyID = keyID
        self.createdAt = createdAt
    }
}

/// A secret as the API shows it: names, version and bindings, never the value.
public struct SecretInfo: Codable, Sendable, Equatable {
    public var name: String
    public var version: Int64
    /// Versions kept (older ones until pruned).
    public var versions: Int64
    public var sandboxes: [String]
    public var labels: [String: String]
    public var gid: UInt32
    public var createdAt: Date

    public init(
        name: String, version: Int64, versions: Int64, sandboxes: [String], labels: [String: String], gid: UInt32,
        createdAt: Date
    ) {
        self.name = name
        self.version = version
        self.versions = versions
        self.sandboxes = sandboxes
        self.labels = labels
        self.gid = gid
        self.createdAt = createdAt
    }
}

/// The key-encryption keys: which provider, which key is current, what each one still wraps.
public struct KMSInfo: Codable, Sendable, Equatable {
    public struct Key: Codable, Sendable, Equatable {
        public var id: String
        /// Data keys (secret versions and sandbox environments) still wrapped by it.
        public var wrapped: Int64
        public var current: Bool

        public init(id: String, wrapped: Int64, current: Bool) {
            self.id = id
            self.wrapped = wrapped
            self.current = current
        }
    }
    public var provider: String
    public var keys: [Key]

    public init(provider: String, keys: [Key]) {
        self.provider = provider
        self.keys = keys
    }
}

/// A data key wrapped by a key-encryption key: `keyID` names that key (its provider's own id).
public struct WrappedKey: Sendable, Equatable {
    public var keyID: String
    public var bytes: [UInt8]

    public init(keyID: String, bytes: [UInt8]) {
        self.keyID = keyID
        self.bytes = bytes
    }
}

/// A value sealed under its own data key: AES-256-GCM (nonce, ciphertext and tag in `ciphertext`), the
/// data key wrapped by the provider's current key-encryption key.
public struct SealedValue: Sendable, Equatable {
    public var key: WrappedKey
    public var ciphertext: [UInt8]

    public init(key: WrappedKey, ciphertext: [UInt8]) {
        self.key = key
        self.ciphertext = ciphertext
    }
}

/// A secret's bytes. It never prints, logs or reflects its value: every description says only how long
/// it is, so that a value passed by mistake to a logger or an error message stays out of both.
public struct SecretValue: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ data: Data) { bytes = Array(data) }

    public var count: Int { bytes.count }
    public var description: String { "<secret, \(bytes.count) bytes>" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [:]) }
}
