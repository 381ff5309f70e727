import Foundation

/// Version orderings of the package ecosystems an SBOM names.
public enum Versions {
    /// dpkg's ordering (deb-version(7)): `[epoch:]upstream[-revision]`, epochs numerically, then the
    /// upstream part and the revision each by dpkg's character order (`~` before everything, even the
    /// end; letters before other characters) alternating with numeric runs. A missing revision is `0`.
    public static func compareDebian(_ a: String, _ b: String) -> Int {
        let x = debianParts(a)
        let y = debianParts(b)
        if x.epoch != y.epoch { return x.epoch < y.epoch ? -1 : 1 }
        let u = debianCompare(x.upstream, y.upstream)
        return u != 0 ? u : debianCompare(x.revision, y.revision)
    }

    static func debianParts(_ v: String) -> (epoch: UInt64, upstream: [UInt8], revision: [UInt8]) {
        var s = Array(v.utf8)
        var epoch: UInt64 = 0
        if let colon = s.firstIndex(of: UInt8(ascii: ":")) {
            epoch = UInt64(String(decoding: s[..<colon], as: UTF8.self)) ?? 0
            s = Array(s[(colon + 1)...])
        }
        if let dash = s.lastIndex(of: UInt8(ascii: "-")) {
            return (epoch, Array(s[..<dash]), Array(s[(dash + 1)...]))
        }
        return (epoch, s, [])
    }

    /// The weight of a non-digit character: `~` lowest, then the end of the string, letters, the rest.
    static func debianOrder(_ c: UInt8?) -> Int {
        guard let c else { return 0 }
        if c == UInt8(ascii: "~") { return -1 }
        if isDigit(c) { return 0 }
        if isLetter(c) { return Int(c) }
        return Int(c) + 256
    }

    static func debianCompare(_ a: [UInt8], _ b: [UInt8]) -> Int {
        var i = 0
        var j = 0
        while i < a.count || j < b.count {
            while (i < a.count && !isDigit(a[i])) || (j < b.count && !isDigit(b[j])) {
                let x = debianOrder(i < a.count ? a[i] : nil)
                let y = debianOrder(j < b.count ? b[j] : nil)
                if x != y { return x < y ? -1 : 1 }
                i += 1
                j += 1
            }
            let (n, ni) = digits(a, from: i)
            let (m, mj) = digits(b, from: j)
            let c = compareNumbers(n, m)
            if c != 0 { return c }
            i = ni
            j = mj
        }
        return 0
    }

    /// The run of digits at `from`, without its leading zeros, and where it ends.
    static func digits(_ s: [UInt8], from: Int) -> (ArraySlice<UInt8>, Int) {
        var start = from
        var end = from
        while end < s.count, isDigit(s[end]) { end += 1 }
        while start < end, s[start] == UInt8(ascii: "0") { start += 1 }
        return (s[start..<end], end)
    }

    /// Two digit runs without leading zeros, by value, of any length.
    static func compareNumbers(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Int {
        if a.count != b.count { return a.count < b.count ? -1 : 1 }
        for (x, y) in zip(a, b) where x != y { return x < y ? -1 : 1 }
        return 0
    }

    /// PEP 440's ordering (see `PythonVersion`).
    public static func comparePython(_ a: String, _ b: String) -> Int {
        let (x, y) = (PythonVersion(a), PythonVersion(b))
        return x < y ? -1 : (y < x ? 1 : 0)
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
    static func isLetter(_ c: UInt8) -> Bool { (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
}

/// A Python package version ordered as PEP 440 (and `packaging`) order them: epoch, release (trailing
/// zeros ignored), pre-release, post-release, dev-release, local label. A string that is not a PEP 440
/// version is a legacy version: it sorts before every valid one, by setuptools' old part-wise rules.
public struct PythonVersion: Comparable, Sendable {
    enum Key: Equatable, Sendable {
        case legacy([String])
        case valid(Valid)
    }
    /// `Int.min` / `Int.max` stand for packaging's negative and positive infinity.
    struct Valid: Comparable, Sendable {
        var epoch: Int
        var release: [Int]
        var pre: [Int]
        var post: Int
        var dev: Int
        var local: [LocalPart]?

        static func < (a: Valid, b: Valid) -> Bool {
            if a.epoch != b.epoch { return a.epoch < b.epoch }
            if a.release != b.release { return a.release.lexicographicallyPrecedes(b.release) }
            if a.pre != b.pre { return a.pre.lexicographicallyPrecedes(b.pre) }
            if a.post != b.post { return a.post < b.post }
            if a.dev != b.dev { return a.dev < b.dev }
            switch (a.local, b.local) {
            case (nil, nil): return false
            case (nil, _): return true
            case (_, nil): return false
            case (let x?, let y?): return x.lexicographicallyPrecedes(y)
            }
        }
    }
    /// A local label's part: numbers sort after strings, numbers by value, strings lexically.
    enum LocalPart: Comparable, Sendable {
        case text(String)
        case number(Int)
    }

    let key: Key

    static let pattern = try! NSRegularExpression(
        pattern: #"""
            ^v?(?:(?:([0-9]+)!)?([0-9]+(?:\.[0-9]+)*)\#
            ([-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?([0-9]+)?)?\#
            ((?:-([0-9]+))|(?:[-_.]?(post|rev|r)[-_.]?([0-9]+)?))?\#
            ([-_.]?(dev)[-_.]?([0-9]+)?)?)\#
            (?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?$
            """#.replacingOccurrences(of: "\\#\n", with: ""), options: [.caseInsensitive])

    public init(_ raw: String) {
        let s = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let ns = s as NSString
        guard let m = Self.pattern.firstMatch(in: s, range: NSRange(location: 0, length: ns.length)) else {
            key = .legacy(Self.legacyParts(s))
            return
        }
        func group(_ i: Int) -> String? {
            let r = m.range(at: i)
            return r.location == NSNotFound ? nil : ns.substring(with: r)
        }
        func number(_ i: Int) -> Int { group(i).flatMap { Int($0) } ?? 0 }
        var release = (group(2) ?? "0").split(separator: ".").map { Int($0) ?? 0 }
        while release.count > 1, release.last == 0 { release.removeLast() }
        let hasPost = group(6) != nil
        let hasDev = group(10) != nil
        var pre: [Int]
        if let label = group(4) {
            let rank = ["a": 0, "alpha": 0, "b": 1, "beta": 1][label] ?? 2
            pre = [rank, number(5)]
        } else {
            pre = !hasPost && hasDev ? [Int.min] : [Int.max]
        }
        let post = hasPost ? (group(7).flatMap { Int($0) } ?? number(9)) : Int.min
        let local = group(13).map { l in
            l.split(whereSeparator: { "-_.".contains($0) }).map { p in
                Int(p).map(LocalPart.number) ?? .text(String(p))
            }
        }
        key = .valid(
            Valid(
                epoch: number(1), release: release, pre: pre, post: post, dev: hasDev ? number(12) : Int.max,
                local: local))
    }

    /// setuptools' legacy parts: runs of digits (zero-padded), runs of letters and `-`, with the old
    /// spellings of pre- and dev-releases folded.
    static func legacyParts(_ s: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        func flush() {
            if !current.isEmpty { tokens.append(current) }
            current = ""
        }
        for c in s {
            if c == "." || c == "-" {
                flush()
                tokens.append(String(c))
            } else if let last = current.last, last.isNumber != c.isNumber || !(c.isNumber || c.isLetter) {
                flush()
                current = String(c)
            } else {
                current.append(c)
            }
        }
        flush()
        var parts: [String] = []
        for token in tokens + ["*final-sentinel"] {
            let part: String
            if token == "*final-sentinel" {
                part = "*final"
            } else {
                let t = ["pre": "c", "preview": "c", "-": "final-", "rc": "c", "dev": "@"][token] ?? token
                if t == "." || t.isEmpty { continue }
                part = t.first!.isNumber ? String(repeating: "0", count: max(0, 8 - t.count)) + t : "*" + t
            }
            if part.hasPrefix("*") {
                if part < "*final" { while parts.last == "*final-" { parts.removeLast() } }
                while parts.last == "00000000" { parts.removeLast() }
            }
            parts.append(part)
        }
        return parts
    }

    public static func < (a: PythonVersion, b: PythonVersion) -> Bool {
        switch (a.key, b.key) {
        case (.legacy(let x), .legacy(let y)): x.lexicographicallyPrecedes(y)
        case (.legacy, .valid): true
        case (.valid, .legacy): false
        case (.valid(let x), .valid(let y)): x < y
        }
    }

    public static func == (a: PythonVersion, b: PythonVersion) -> Bool { !(a < b) && !(b < a) }
}

extension Versions {
    /// apk's ordering (apk-package(5)): `number{.number}...{letter}{_suffix{number}}...{~hash}{-r#}`, read
    /// token by token as apk reads it; a component after a dot with leading zeros compares as a
    /// fraction, pre-release suffixes (`_alpha`, `_beta`, `_pre`, `_rc`) sort before the bare version and
    /// post-release ones (`_cvs`, `_svn`, `_git`, `_hg`, `_p`) after it. nil when either is not a version
    /// of that grammar: apk releases disagree on how those sort (see the ordering vectors' comments), so
    /// the gate counts such a package as unknown rather than guess.
    public static func compareAlpine(_ a: String, _ b: String) -> Int? {
        guard isAlpineVersion(a), isAlpineVersion(b) else { return nil }
        var x = ApkTokens(a)
        var y = ApkTokens(b)
        var av: Int64 = 0
        var bv: Int64 = 0
        while x.type == y.type && x.type != .end && x.type != .invalid && av == bv {
            av = x.next()
            bv = y.next()
        }
        if av != bv { return av < bv ? -1 : 1 }
        if x.type == y.type { return 0 }
        // Equal so far: the longer version is greater, unless what it goes on with is a pre-release.
        if x.type == .suffix, x.peekSuffix() < 0 { return -1 }
        if y.type == .suffix, y.peekSuffix() < 0 { return 1 }
        return x.type.rawValue > y.type.rawValue ? -1 : (x.type.rawValue < y.type.rawValue ? 1 : 0)
    }
}

extension Versions {
    /// Whether apk reads `v` to its end without an invalid token.
    public static func isAlpineVersion(_ v: String) -> Bool {
        guard (1...256).contains(v.utf8.count) else { return false }
        var t = ApkTokens(v)
        while t.type != .end && t.type != .invalid { _ = t.next() }
        return t.type == .end
    }
}

/// apk's version tokenizer: the kind of the next token and its value.
struct ApkTokens {
    enum Kind: Int {
        case invalid = -1
        case digitOrZero, digit, letter, suffix, suffixNumber, revisionNumber, end
    }
    static let preSuffixes = ["alpha", "beta", "pre", "rc"]
    static let postSuffixes = ["cvs", "svn", "git", "hg", "p"]

    let s: [UInt8]
    var i = 0
    var type = Kind.digit

    init(_ v: String) { s = Array(v.utf8) }

    /// The value of the suffix token at the cursor, without consuming it.
    func peekSuffix() -> Int64 {
        var copy = self
        return copy.next()
    }

    /// Reads the token of kind `type` at the cursor, returns its value and sets `type` to the kind of
    /// the token after it.
    mutating func next() -> Int64 {
        guard i < s.count else {
            type = .end
            return 0
        }
        var v: Int64 = 0
        var after: Kind?
        switch type {
        case .digitOrZero where s[i] == UInt8(ascii: "0"):
            // Leading zeros after a dot: the more zeros, the smaller.
            var zeros: Int64 = 0
            while i < s.count, s[i] == UInt8(ascii: "0") {
                i += 1
                zeros += 1
            }
            v = -zeros
            after = .digit
        case .digitOrZero, .digit, .suffixNumber, .revisionNumber:
            let start = i
            while i < s.count, Versions.isDigit(s[i]) {
                v = v &* 10 &+ Int64(s[i] - 48)
                i += 1
            }
            // A version component is never empty (`0.r1`, `1..2`); a revision or suffix number may be.
            if i == start && (type == .digitOrZero || start == 0) {
                type = .invalid
                return -1
            }
        case .letter:
            v = Int64(s[i])
            i += 1
        case .suffix:
            let rest = s[i...]
            if let n = Self.preSuffixes.firstIndex(where: { rest.starts(with: $0.utf8) }) {
                v = Int64(n - Self.preSuffixes.count)
                i += Self.preSuffixes[n].utf8.count
            } else if let n = Self.postSuffixes.firstIndex(where: { rest.starts(with: $0.utf8) }) {
                v = Int64(n)
                i += Self.postSuffixes[n].utf8.count
            } else {
                type = .invalid
                return -1
            }
        case .invalid, .end:
            type = .invalid
            return -1
        }
        if i >= s.count {
            type = .end
        } else if let after {
            type = after
        } else {
            advance()
        }
        return v
    }

    /// Decides the kind of the next token from the character at the cursor (consuming separators).
    mutating func advance() {
        var n = Kind.invalid
        let c = s[i]
        if (type == .digit || type == .digitOrZero) && c >= 97 && c <= 122 {
            n = .letter
        } else if type == .letter && Versions.isDigit(c) {
            n = .digit
        } else if type == .suffix && Versions.isDigit(c) {
            n = .suffixNumber
        } else {
            switch c {
            case UInt8(ascii: "."): n = .digitOrZero
            case UInt8(ascii: "_"): n = .suffix
            case UInt8(ascii: "-"):
                if i + 1 < s.count, s[i + 1] == UInt8(ascii: "r") {
                    n = .revisionNumber
                    i += 1
                }
            default: break
            }
            i += 1
        }
        if n.rawValue < type.rawValue
            && !((n == .digitOrZero && type == .digit) || (n == .suffix && type == .suffixNumber)
                || (n == .digit && type == .letter))
        {
            n = .invalid
        }
        type = n
    }
}
