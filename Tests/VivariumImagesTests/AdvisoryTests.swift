import Foundation
import Testing
import VivariumCore

@testable import VivariumImages

/// The published OSV records in Tests/Fixtures/osv (see its SOURCES.md), matched against packages at
/// the edges of their own ranges.
@Suite struct AdvisoryTests {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/osv").path

    /// The JSON records and the YAML ones (read by Vivarium's YAML reader).
    static func records() throws -> [(String, Advisory)] {
        let json = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".json") }.sorted()
            .map {
                (
                    $0,
                    try JSONDecoder().decode(
                        Advisory.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/\($0)")))
                )
            }
        let yaml = try FileManager.default.contentsOfDirectory(atPath: dir + "/yaml").sorted().map {
            ("yaml/" + $0, try VulnDB.decodeYAML(Data(contentsOf: URL(fileURLWithPath: "\(dir)/yaml/\($0)"))))
        }
        #expect(yaml.count >= 5 && yaml.allSatisfy { $0.0.hasSuffix($0.1.id + ".yaml") })
        return json + yaml
    }

    /// Each YAML record reads as PyYAML (Debian's python3-yaml) reads it: every string it finds, at the
    /// same place (PyYAML turns dates into datetimes; those places are only checked to exist).
    @Test func yamlRecordsReadAsPyYAMLReadsThem() throws {
        let script = """
            import json, sys, yaml
            def norm(v):
                if isinstance(v, dict): return {k: norm(x) for k, x in v.items()}
                if isinstance(v, list): return [norm(x) for x in v]
                return v if isinstance(v, str) else "<not a string>"
            print(json.dumps(norm(yaml.safe_load(open(sys.argv[1])))))
            """
        for file in try FileManager.default.contentsOfDirectory(atPath: Self.dir + "/yaml").sorted() {
            let path = "\(Self.dir)/yaml/\(file)"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            p.arguments = ["-c", script, path]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "python3-yaml on \(file)")
            let theirs = try JSONSerialization.jsonObject(with: data)
            let ours = try OSVYAML.parse(try String(contentsOfFile: path, encoding: .utf8))
            var differences: [String] = []
            Self.compare(ours, theirs, "", &differences)
            #expect(differences.isEmpty, "\(file): \(differences.prefix(5))")
        }
    }

    static func compare(_ a: Any, _ b: Any, _ at: String, _ out: inout [String]) {
        if let x = a as? [String: Any], let y = b as? [String: Any] {
            if Set(x.keys) != Set(y.keys) { out.append("\(at): keys \(x.keys.sorted()) vs \(y.keys.sorted())") }
            for (k, v) in x { if let w = y[k] { compare(v, w, at + "." + k, &out) } }
        } else if let x = a as? [Any], let y = b as? [Any] {
            if x.count != y.count { out.append("\(at): \(x.count) items vs \(y.count)") }
            for (n, (v, w)) in zip(x, y).enumerated() { compare(v, w, "\(at)[\(n)]", &out) }
        } else if let y = b as? String, y != "<not a string>" {
            if (a as? String) != y { out.append("\(at): \(String(describing: a).prefix(60)) vs \(y.prefix(60))") }
        } else if b as? String == nil {
            out.append("\(at): shape")
        }
    }

    /// A version just below `v` in the ecosystem's order.
    static func below(_ v: String, _ ecosystem: String) -> String {
        switch ecosystem {
        case "Debian": return v + "~"
        case "PyPI": return v + ".dev0"
        default:
            guard let r = v.range(of: "-r", options: .backwards) else { return v + "_alpha" }
            return v[..<r.lowerBound] + "_alpha" + v[r.lowerBound...]
        }
    }

    @Test func eachRecordMatchesExactlyWhatItsRangesSay() throws {
        var checked = 0
        for (file, record) in try Self.records() {
            for entry in record.affected ?? [] {
                guard let pkg = entry.package,
                    let events = entry.ranges?.first(where: { $0.type == "ECOSYSTEM" })?.events,
                    let introduced = events.compactMap({ $0["introduced"] }).first,
                    let fixed = events.compactMap({ $0["fixed"] }).first
                else { continue }
                let parts = pkg.ecosystem.split(separator: ":").map(String.init)
                let release = parts.count == 2 ? String(parts[1].drop { $0 == "v" }) + ".1" : nil
                func sbom(_ version: String, release: String?) -> SBOM {
                    SBOM(
                        distro: nil, distroVersion: release,
                        packages: [
                            SBOMPackage(
                                ecosystem: parts[0], name: pkg.name, version: version, sourceName: pkg.name,
                                sourceVersion: version, purl: "pkg:x/\(pkg.name)@\(version)")
                        ])
                }
                func hit(_ v: String, release r: String? = release) -> Bool {
                    !record.findings(in: sbom(v, release: r)).isEmpty
                }
                #expect(hit(Self.below(fixed, parts[0])), "\(file): \(pkg.name) just below \(fixed)")
                #expect(!hit(fixed), "\(file): \(pkg.name) \(fixed) is fixed")
                if introduced != "0" {
                    #expect(hit(introduced), "\(file): \(pkg.name) \(introduced) is introduced")
                    #expect(!hit(Self.below(introduced, parts[0])), "\(file): before \(introduced)")
                }
                if release != nil {
                    #expect(!hit(Self.below(fixed, parts[0]), release: "99"), "\(file): another release")
                }
                checked += 1
            }
        }
        #expect(checked >= 25)
    }

    /// GitHub's records carry both a CVSS v3 vector and the database's rating: the base score computed
    /// from the vector rates the same.
    @Test func cvss3BaseScoresRateAsTheDatabaseDoes() throws {
        var checked = 0
        for (file, record) in try Self.records() where file.hasPrefix("GHSA-") {
            guard case .string(let word)? = record.databaseSpecific?["severity"], let entry = record.affected?.first
            else { continue }
            #expect(record.severity(of: entry) == Severity(word: word), "\(file)")
            checked += 1
        }
        #expect(checked >= 6)
        // The specification's examples.
        #expect(cvss3BaseScore("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H") == 9.8)
        #expect(cvss3BaseScore("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N") == 6.1)
        #expect(cvss3BaseScore("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:N") == 0)
        #expect(cvss3BaseScore("CVSS:2.0/AV:N") == nil)
    }
}
