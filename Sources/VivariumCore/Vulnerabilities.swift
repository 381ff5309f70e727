/// Severities, lowest first.
public enum Severity: String, Codable, Sendable, Comparable, CaseIterable {
    case unknown, none, low, medium, high, critical

    public static func < (a: Severity, b: Severity) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// A database's word for it (GitHub's `MODERATE` is medium).
    public init(word: String) {
        switch word.lowercased() {
        case "critical": self = .critical
        case "high", "important": self = .high
        case "medium", "moderate": self = .medium
        case "low", "negligible", "unimportant": self = .low
        case "none": self = .none
        default: self = .unknown
        }
    }

    /// CVSS v3's qualitative rating of a base score.
    public init(score: Double) {
        switch score {
        case 9.0...: self = .critical
        case 7.0..<9.0: self = .high
        case 4.0..<7.0: self = .medium
        case 0.1..<4.0: self = .low
        default: self = .none
        }
    }
}

/// A finding: an installed package inside an advisory's affected range.
public struct Finding: Codable, Sendable, Equatable {
    public var advisory: String
    public var aliases: [String]
    public var ecosystem: String
    public var package: String
    public var version: String
    public var severity: Severity
    /// The first fixed version named, if any.
    public var fixed: String?
    public init(
        advisory: String, aliases: [String], ecosystem: String, package: String, version: String, severity: Severity,
        fixed: String?
    ) {
        self.advisory = advisory
        self.aliases = aliases
        self.ecosystem = ecosystem
        self.package = package
        self.version = version
        self.severity = severity
        self.fixed = fixed
    }
}

/// What an image holds that the imported advisories name.
public struct ScanReport: Codable, Sendable {
    public var reference: String
    public var digest: String
    /// The advisory database the findings come from (`vivarium vulndb`).
    public var vulndbVersion: String
    public var findings: [Finding]
    public init(reference: String, digest: String, vulndbVersion: String, findings: [Finding]) {
        self.reference = reference
        self.digest = digest
        self.vulndbVersion = vulndbVersion
        self.findings = findings
    }
}

public struct ImportVulnDBRequest: Codable, Sendable {
    /// A file or directory of OSV JSON records on the daemon's host.
    public var path: String
    public init(path: String) { self.path = path }
}

public struct VulnDBInfo: Codable, Sendable {
    public var advisories: Int
    public var version: String
    /// Records read by this import.
    public var read: Int?
    public init(advisories: Int, version: String, read: Int?) {
        self.advisories = advisories
        self.version = version
        self.read = read
    }
}
