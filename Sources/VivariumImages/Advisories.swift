import Foundation
import VivariumCore

/// The CVSS v3.0 and v3.1 base score of a vector (`CVSS:3.1/AV:N/AC:L/...`), or nil when the vector is
/// not one.
public func cvss3BaseScore(_ vector: String) -> Double? {
    let parts = vector.split(separator: "/")
    guard let head = parts.first, head == "CVSS:3.0" || head == "CVSS:3.1" else { return nil }
    var m: [String: String] = [:]
    for p in parts.dropFirst() {
        let kv = p.split(separator: ":")
        guard kv.count == 2 else { return nil }
        m[String(kv[0])] = String(kv[1])
    }
    let changed = m["S"] == "C"
    guard m["S"] == "U" || changed,
        let av = ["N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2][m["AV"] ?? ""],
        let ac = ["L": 0.77, "H": 0.44][m["AC"] ?? ""],
        let pr = (changed ? ["N": 0.85, "L": 0.68, "H": 0.5] : ["N": 0.85, "L": 0.62, "H": 0.27])[m["PR"] ?? ""],
        let ui = ["N": 0.85, "R": 0.62][m["UI"] ?? ""]
    else { return nil }
    let cia = ["H": 0.56, "L": 0.22, "N": 0.0]
    guard let c = cia[m["C"] ?? ""], let i = cia[m["I"] ?? ""], let a = cia[m["A"] ?? ""] else { return nil }
    let iss = 1 - (1 - c) * (1 - i) * (1 - a)
    let impact = changed ? 7.52 * (iss - 0.029) - 3.25 * pow(iss - 0.02, 15) : 6.42 * iss
    let exploitability = 8.22 * av * ac * pr * ui
    guard impact > 0 else { return 0 }
    let base = changed ? min(1.08 * (impact + exploitability), 10) : min(impact + exploitability, 10)
    // CVSS v3.1's Roundup: the smallest one-decimal number not below the value, computed in integers.
    let n = Int((base * 100_000).rounded())
    return n % 10_000 == 0 ? Double(n) / 100_000 : Double(n / 10_000 + 1) / 10
}

/// One OSV advisory (the fields the gate reads).
public struct Advisory: Codable, Sendable {
    public var id: String
    public var aliases: [String]?
    public var summary: String?
    public var modified: String?
    public var severity: [SeverityEntry]?
    public var affected: [Affected]?
    public var databaseSpecific: [String: JSONValue]?

    public struct SeverityEntry: Codable, Sendable {
        public var type: String
        public var score: String
    }
    public struct Affected: Codable, Sendable {
        public var package: Package?
        public var ranges: [Range]?
        public var versions: [String]?
        public var severity: [SeverityEntry]?
        public var ecosystemSpecific: [String: JSONValue]?
        public var databaseSpecific: [String: JSONValue]?
        enum CodingKeys: String, CodingKey {
            case package, ranges, versions, severity
            case ecosystemSpecific = "ecosystem_specific"
            case databaseSpecific = "database_specific"
        }
    }
    public struct Package: Codable, Sendable {
        public var ecosystem: String
        public var name: String
    }
    public struct Range: Codable, Sendable {
        public var type: String
        public var events: [[String: String]]
    }
    enum CodingKeys: String, CodingKey {
        case id, aliases, summary, modified, severity, affected
        case databaseSpecific = "database_specific"
    }

    /// The advisory's severity for one affected entry: a CVSS v3 vector's base score (the entry's, then
    /// the record's), else the database's word for it; v2 and v4 vectors go by the database's word.
    public func severity(of entry: Affected) -> Severity {
        for s in (entry.severity ?? []) + (severity ?? []) where s.type == "CVSS_V3" {
            if let score = cvss3BaseScore(s.score) { return Severity(score: score) }
        }
        for bag in [entry.databaseSpecific, entry.ecosystemSpecific, databaseSpecific] {
            if case .string(let word)? = bag?["severity"] { return Severity(word: word) }
        }
        return .unknown
    }
}

/// A JSON value of unknown shape.
public enum JSONValue: Codable, Sendable {
    case string(String)
    case other

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        self = (try? c.decode(String.self)).map(JSONValue.string) ?? .other
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if case .string(let s) = self { try c.encode(s) } else { try c.encodeNil() }
    }
}

extension Advisory {
    /// The version order of an ecosystem: nil for versions it cannot order.
    static func compare(_ ecosystem: String, _ a: String, _ b: String) -> Int? {
        switch ecosystem {
        case "Debian": Versions.compareDebian(a, b)
        case "Alpine": Versions.compareAlpine(a, b)
        case "PyPI": Versions.comparePython(a, b)
        default: nil
        }
    }

    /// PEP 503's normal form of a Python project name.
    static func normalPyPI(_ name: String) -> String {
        var out = ""
        var lastSep = false
        for c in name.lowercased() {
            if c == "-" || c == "_" || c == "." {
                if !lastSep { out.append("-") }
                lastSep = true
            } else {
                out.append(c)
                lastSep = false
            }
        }
        return out
    }

    /// Whether `entry` names this package of the SBOM: the ecosystem (a distribution's release when the
    /// entry names one: `Debian:12`, `Alpine:v3.19`), and the source package for distributions.
    static func names(_ entry: Affected, _ p: SBOMPackage, distroVersion: String?) -> String? {
        guard let pkg = entry.package else { return nil }
        let parts = pkg.ecosystem.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.first == p.ecosystem else { return nil }
        if parts.count == 2 {
            let release = parts[1].hasPrefix("v") ? String(parts[1].dropFirst()) : parts[1]
            guard let v = distroVersion, v == release || v.hasPrefix(release + ".") else { return nil }
        }
        switch p.ecosystem {
        case "PyPI": return normalPyPI(pkg.name) == normalPyPI(p.name) ? p.version : nil
        default:
            if pkg.name == (p.sourceName ?? p.name) { return p.sourceVersion ?? p.version }
            return pkg.name == p.name ? p.version : nil
        }
    }

    /// Whether `version` falls in the entry: listed in `versions`, or inside an ECOSYSTEM range (events
    /// in version order: introduced opens, fixed closes, last_affected closes after it). A version the ecosystem
    /// cannot order is not matched.
    static func affects(_ entry: Affected, ecosystem: String, version: String) -> Bool {
        if entry.versions?.contains(version) == true { return true }
        for range in entry.ranges ?? [] where range.type == "ECOSYSTEM" {
            // Events are evaluated in version order (`introduced: 0` first), whatever order they are listed in.
            func at(_ e: [String: String]) -> String { e.values.first ?? "" }
            let events = range.events.enumerated().sorted { x, y in
                let (a, b) = (at(x.element), at(y.element))
                if a == "0" || b == "0" { return a == "0" && (b != "0" || x.offset < y.offset) }
                let c = compare(ecosystem, a, b) ?? 0
                return c != 0 ? c < 0 : x.offset < y.offset
            }.map(\.element)
            var affected = false
            for e in events {
                if let v = e["introduced"] {
                    if v == "0" || (compare(ecosystem, version, v) ?? -1) >= 0 { affected = true }
                } else if let v = e["fixed"], let c = compare(ecosystem, version, v), c >= 0 {
                    affected = false
                } else if let v = e["last_affected"], let c = compare(ecosystem, version, v), c > 0 {
                    affected = false
                } else if let v = e["limit"], let c = compare(ecosystem, version, v), c >= 0 {
                    affected = false
                }
            }
            if affected { return true }
        }
        return false
    }

    /// The findings of this advisory in an SBOM.
    public func findings(in sbom: SBOM) -> [Finding] {
        var out: [Finding] = []
        for p in sbom.packages {
            for entry in affected ?? [] {
                guard let version = Self.names(entry, p, distroVersion: sbom.distroVersion),
                    Self.affects(entry, ecosystem: p.ecosystem, version: version)
                else { continue }
                let fixed = entry.ranges?.lazy.flatMap { $0.events }.compactMap { $0["fixed"] }.first
                out.append(
                    Finding(
                        advisory: id, aliases: aliases ?? [], ecosystem: p.ecosystem, package: p.name,
                        version: p.version, severity: severity(of: entry), fixed: fixed))
                break
            }
        }
        return out
    }
}
