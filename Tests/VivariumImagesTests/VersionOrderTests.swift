import Foundation
import Testing

@testable import VivariumImages

/// The upstream ordering vectors in Tests/Fixtures/osv/ordering (see its SOURCES.md): each line
/// `A < B`, `A = B` or `A > B`, sorted by the ecosystem's own tool.
func orderingVectors(_ file: String) throws -> [(a: String, op: Int, b: String, line: Int)] {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/osv/ordering/" + file).path
    let text = try String(contentsOfFile: path, encoding: .utf8)
    var out: [(String, Int, String, Int)] = []
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.trimmingCharacters(in: .whitespaces)
        if line.isEmpty || line.hasPrefix("#") || line.hasPrefix("//") { continue }
        let parts = line.split(separator: " ")
        guard parts.count == 3, let op = ["<": -1, "=": 0, ">": 1][String(parts[1])] else {
            Issue.record("\(file):\(n + 1) is not a comparison: \(line)")
            continue
        }
        out.append((String(parts[0]), op, String(parts[2]), n + 1))
    }
    return out
}

@Suite struct VersionOrderTests {
    @Test(arguments: ["debian-versions.txt", "debian-versions-generated.txt"])
    func dpkgOrdering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        var wrong: [String] = []
        for v in vectors {
            if Versions.compareDebian(v.a, v.b).signum() != v.op || Versions.compareDebian(v.b, v.a).signum() != -v.op {
                wrong.append("\(file):\(v.line) \(v.a) vs \(v.b)")
            }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
    }
}

extension VersionOrderTests {
    @Test(arguments: ["pypi-versions.txt", "pypi-versions-generated.txt"])
    func pep440Ordering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        var wrong: [String] = []
        for v in vectors {
            let (a, b) = (PythonVersion(v.a), PythonVersion(v.b))
            let got = a < b ? -1 : (b < a ? 1 : 0)
            if got != v.op { wrong.append("\(file):\(v.line) \(v.a) vs \(v.b)") }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
    }
}

extension VersionOrderTests {
    /// Every pair of versions of apk's grammar sorts as given; a pair with an invalid version (the
    /// hand-written file's `# invalid` cases, which apk releases sort differently) is not ordered at all.
    @Test(arguments: ["alpine-versions.txt", "alpine-versions-generated.txt"])
    func apkOrdering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        var wrong: [String] = []
        var unordered = 0
        for v in vectors {
            guard Versions.isAlpineVersion(v.a) && Versions.isAlpineVersion(v.b) else {
                unordered += 1
                if Versions.compareAlpine(v.a, v.b) != nil { wrong.append("\(file):\(v.line) ordered \(v.a)") }
                continue
            }
            if Versions.compareAlpine(v.a, v.b)?.signum() != v.op || Versions.compareAlpine(v.b, v.a)?.signum() != -v.op
            {
                wrong.append("\(file):\(v.line) \(v.a) vs \(v.b)")
            }
        }
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
        // The generated vectors (sorted by a real apk) are all valid; the hand-written ones hold a few
        // invalid cases.
        if file.contains("generated") { #expect(unordered == 0) } else { #expect((1..<40).contains(unordered)) }
    }
}
