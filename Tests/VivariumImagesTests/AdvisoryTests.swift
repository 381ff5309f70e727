import Foundation
import Testing
import VivariumCore
import VivariumTestSupport

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

    /// An OSV export as osv.dev publishes it (`all.zip`: one JSON record per member), written by
    /// Python's zipfile: deflated and stored members import as the same files do one by one; a member
    /// that inflates past the record limit, or whose bytes fail its CRC, is refused.
    @Test func importsOSVZipExports() throws {
        let work = NSTemporaryDirectory() + "vivarium-osvzip-" + randomHex(bytes: 4)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let script = """
            import sys, os, zipfile
            src, out = sys.argv[1], sys.argv[2]
            names = sorted(n for n in os.listdir(src) if n.endswith(".json"))
            with zipfile.ZipFile(out + "/all.zip", "w") as z:
                for i, n in enumerate(names):
                    z.write(os.path.join(src, n), n, zipfile.ZIP_DEFLATED if i % 2 else zipfile.ZIP_STORED)
            with zipfile.ZipFile(out + "/bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("BOMB-1.json", b"[" + b" " * (80 << 20) + b"]")
            data = bytearray(open(out + "/all.zip", "rb").read())
            first = data.index(b"{")
            data[first + 2] ^= 0x20
            open(out + "/corrupt.zip", "wb").write(data)
            print(len(names))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        p.arguments = ["-c", script, Self.dir, work]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let printed = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        let count = try #require(Int(printed.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(count >= 10)

        let fromZip = try VulnDB(path: work + "/zip.json")
        #expect(try fromZip.importRecords(from: work + "/all.zip").added == count)
        let fromFiles = try VulnDB(path: work + "/files.json")
        for (name, _) in try Self.records() where !name.hasPrefix("yaml/") {
            _ = try fromFiles.importRecords(from: "\(Self.dir)/\(name)")
        }
        #expect(fromZip.count == fromFiles.count && fromZip.version == fromFiles.version)
        for (bad, why) in [("bomb", "is larger than"), ("corrupt", "fails its CRC-32 check")] {
            let db = try VulnDB(path: work + "/\(bad).json")
            expectCode(.invalidArgument, "\(bad).zip") { try db.importRecords(from: work + "/\(bad).zip") }
            do { _ = try db.importRecords(from: work + "/\(bad).zip") } catch {
                #expect("\(error)".contains(why), "\(error)")
            }
            #expect(db.count == 0)
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
