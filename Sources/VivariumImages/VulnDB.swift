import Foundation
import Synchronization
import VivariumCore
import VivariumOS

/// The advisories the operator imported (`vivarium vulndb import`), kept in one file of the state
/// directory (written atomically) and in memory. Its version is the digest of what it holds: every
/// admission decision names it.
public final class VulnDB: Sendable {
    public let path: String
    struct Loaded: Sendable {
        var advisories: [String: Advisory] = [:]
        var version = "empty"
        /// Advisory ids by the package names their entries name (PyPI names in PEP 503 form): a scan
        /// looks at the advisories of an image's packages only.
        var byPackage: [String: [String]] = [:]

        init(advisories: [String: Advisory] = [:], version: String = "empty") {
            self.advisories = advisories
            self.version = version
            for a in advisories.values {
                for name in Set((a.affected ?? []).compactMap { $0.package.map { Advisory.normalPyPI($0.name) } }) {
                    byPackage[name, default: []].append(a.id)
                }
            }
        }
    }
    let state = Mutex(Loaded())
    public static let maxAdvisories = 1_000_000
    public static let maxRecordBytes = 4 << 20

    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else { return }
        let list: [Advisory]
        do { list = try JSONDecoder().decode([Advisory].self, from: data) } catch {
            throw VivariumError(.internalError, "the vulnerability database \(path) is damaged: \(error)")
        }
        let advisories = Dictionary(list.map { ($0.id, $0) }) { a, _ in a }
        state.withLock { $0 = Loaded(advisories: advisories, version: Self.version(data)) }
    }

    static func version(_ data: Data) -> String { "sha256:" + Digest.of(data).hex.prefix(16) }

    public var version: String { state.withLock { $0.version } }
    public var count: Int { state.withLock { $0.advisories.count } }

    static func isRecordName(_ name: String) -> Bool {
        name.hasSuffix(".json") || name.hasSuffix(".yaml") || name.hasSuffix(".yml")
    }

    /// A zip archive by its first bytes.
    static func isZip(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)) == Data([0x50, 0x4b, 0x03, 0x04])
    }

    /// The records of one file: OSV JSON (a record or an array of them) or YAML.
    static func decodeRecords(_ data: Data, _ name: String) throws -> [Advisory] {
        do {
            if !name.hasSuffix(".json") { return [try decodeYAML(data)] }
            if data.first(where: { !$0.isWhitespace }) == UInt8(ascii: "[") {
                return try JSONDecoder().decode([Advisory].self, from: data)
            }
            return [try JSONDecoder().decode(Advisory.self, from: data)]
        } catch {
            throw VivariumError(.invalidArgument, "\(name) is not an OSV record: \(error)")
        }
    }

    /// Reads OSV records from a file or a directory of `*.json`, `*.yaml` and `*.yml` files (one record, or
    /// a JSON array of them, per file) and OSV zip exports (`all.zip`); a record replaces one of the same
    /// id unless it is older (`modified`).
    public func importRecords(from path: String) throws -> (added: Int, version: String) {
        var files: [String] = []
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw VivariumError(.invalidArgument, "no such file or directory: \(path)")
        }
        if isDir.boolValue {
            let entries = try FileManager.default.contentsOfDirectory(atPath: path).filter {
                Self.isRecordName($0) || $0.hasSuffix(".zip")
            }
            files = entries.sorted().map { path + "/" + $0 }
        } else {
            files = [path]
        }
        var records: [Advisory] = []
        for f in files {
            if Self.isZip(f) {
                // An OSV export (`all.zip` of an ecosystem): one record per member.
                let zip = try ZipReader(path: f, maxMembers: Self.maxAdvisories)
                for m in zip.members where Self.isRecordName(m.name) {
                    records += try Self.decodeRecords(try zip.read(m, limit: Self.maxRecordBytes), "\(f): \(m.name)")
                }
                continue
            }
            guard let data = FileManager.default.contents(atPath: f), data.count <= Self.maxRecordBytes else {
                throw VivariumError(.invalidArgument, "cannot read \(f) (at most \(Self.maxRecordBytes) bytes)")
            }
            records += try Self.decodeRecords(data, f)
        }
        return try state.withLock { s in
            var next = s.advisories
            for r in records where (next[r.id]?.modified ?? "") <= (r.modified ?? "") { next[r.id] = r }
            guard next.count <= Self.maxAdvisories else {
                throw VivariumError(.resourceExhausted, "more than \(Self.maxAdvisories) advisories")
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(next.values.sorted { $0.id < $1.id })
            try FileSystem.writeAtomically(data, to: self.path)
            s = Loaded(advisories: next, version: Self.version(data))
            return (records.count, s.version)
        }
    }

    /// An OSV record in YAML, through its JSON form.
    static func decodeYAML(_ data: Data) throws -> Advisory {
        guard let text = String(data: data, encoding: .utf8) else {
            throw VivariumError(.invalidArgument, "not UTF-8")
        }
        let tree = try OSVYAML.parse(text)
        guard JSONSerialization.isValidJSONObject(tree) else { throw VivariumError(.invalidArgument, "not a record") }
        return try JSONDecoder().decode(Advisory.self, from: try JSONSerialization.data(withJSONObject: tree))
    }

    /// The findings of every advisory in an SBOM, and the database version they come from.
    public func scan(_ sbom: SBOM) -> (findings: [Finding], version: String) {
        let loaded = state.withLock { $0 }
        var findings: [Finding] = []
        for p in sbom.packages {
            let names = Set([p.name, p.sourceName ?? p.name].map(Advisory.normalPyPI))
            let ids = Set(names.flatMap { loaded.byPackage[$0] ?? [] })
            let one = SBOM(distro: sbom.distro, distroVersion: sbom.distroVersion, packages: [p])
            for id in ids.sorted() { findings += loaded.advisories[id]?.findings(in: one) ?? [] }
        }
        findings.sort {
            ($0.severity, $1.advisory) > ($1.severity, $0.advisory)
        }
        return (findings, loaded.version)
    }
}

extension UInt8 {
    fileprivate var isWhitespace: Bool { self == 32 || self == 9 || self == 10 || self == 13 }
}

/// The vulnerability gate of the admission policy: findings at or above `refuse` keep an image out,
/// unless a waiver names the advisory (or one of its aliases) and has not expired; `unknown` says what
/// a finding without a severity counts as.
public struct VulnerabilityGate: Sendable {
    public var refuse: Severity?
    public var unknownAs: Severity
    public var waivers: [Waiver]

    public struct Waiver: Sendable {
        public var advisory: String
        public var expires: Date
        public var reason: String?
        public init(advisory: String, expires: Date, reason: String?) {
            self.advisory = advisory
            self.expires = expires
            self.reason = reason
        }
    }

    public init(refuse: Severity? = nil, unknownAs: Severity = .unknown, waivers: [Waiver] = []) {
        self.refuse = refuse
        self.unknownAs = unknownAs
        self.waivers = waivers
    }

    /// The findings that refuse an image now, and the ones a live waiver lets through.
    public func judge(_ findings: [Finding], now: Date = Date()) -> (refusing: [Finding], waived: [Finding]) {
        guard let refuse else { return ([], []) }
        var refusing: [Finding] = []
        var waived: [Finding] = []
        for f in findings where (f.severity == .unknown ? unknownAs : f.severity) >= refuse {
            let ids = [f.advisory] + f.aliases
            if waivers.contains(where: { ids.contains($0.advisory) && $0.expires > now }) {
                waived.append(f)
            } else {
                refusing.append(f)
            }
        }
        return (refusing, waived)
    }
}
