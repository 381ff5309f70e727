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

/// The vectors of `file` that `compare` orders otherwise, either way round (nil: not ordered).
func misordered(
    _ file: String, _ vectors: [(a: String, op: Int, b: String, line: Int)], _ compare: (String, String) -> Int?
)
    -> [String]
{
    vectors.filter { v in compare(v.a, v.b)?.signum() != v.op || compare(v.b, v.a)?.signum() != -v.op }.map {
        "\(file):\($0.line) \($0.a) vs \($0.b)"
    }
}

@Suite struct VersionOrderTests {
    @Test(arguments: ["debian-versions.txt", "debian-versions-generated.txt"])
    func dpkgOrdering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        let wrong = misordered(file, vectors, Versions.compareDebian)
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
    }

    @Test(arguments: ["pypi-versions.txt", "pypi-versions-generated.txt"])
    func pep440Ordering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        let wrong = misordered(file, vectors, Versions.comparePython)
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
    }

    /// Every pair of versions of apk's grammar sorts as given; a pair with an invalid version (the
    /// hand-written file's `# invalid` cases, which apk releases sort differently) is not ordered at all.
    @Test(arguments: ["alpine-versions.txt", "alpine-versions-generated.txt"])
    func apkOrdering(_ file: String) throws {
        let vectors = try orderingVectors(file)
        #expect(vectors.count > 20)
        let valid = vectors.filter { Versions.isAlpineVersion($0.a) && Versions.isAlpineVersion($0.b) }
        let invalid = vectors.filter { !(Versions.isAlpineVersion($0.a) && Versions.isAlpineVersion($0.b)) }
        let wrong = misordered(file, valid, Versions.compareAlpine)
        #expect(wrong.isEmpty, "\(wrong.count) wrong: \(wrong.prefix(10))")
        #expect(invalid.allSatisfy { Versions.compareAlpine($0.a, $0.b) == nil })
        // The generated vectors (sorted by a real apk) are all valid; the hand-written ones hold a few
        // invalid cases.
        if file.contains("generated") { #expect(invalid.isEmpty) } else { #expect((1..<40).contains(invalid.count)) }
    }
}
