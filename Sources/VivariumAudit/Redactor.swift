import Foundation

/// Removes credentials from text before it is written to the audit trail: tokens, keys and anything
/// that looks like one. It errs on the side of removing too much. Every pattern starts only where a run
/// of its characters starts and matches without backtracking into that run, so the work is linear in the
/// input, which is also capped (`maxLength`): hostile input cannot stall the request path.
public enum Redactor {
    public static let mark = "[redacted]"
    /// Longest text kept per field; the rest is cut at a word boundary (a cut secret cannot leak a prefix).
    public static let maxLength = 4096

    /// Names that make what is assigned to them a secret: detail keys, `name=value`, `name: value` and
    /// `--name value`.
    static let secretNameWords = [
        "pass", "pwd", "secret", "token", "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key",
        "auth", "credential", "private_key", "private-key", "privatekey", "cookie",
    ]

    static let wholesale: [NSRegularExpression] = [
        // JWTs (our access tokens and anyone else's).
        #"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"#,
        // Vivarium API keys and refresh tokens.
        #"(?<![A-Za-z0-9_])viv_[0-9a-f]{12}_[0-9a-f]{16,}+"#, #"(?<![A-Za-z0-9_])vivr_[0-9a-f]{16,}+"#,
        // Well-known cloud and forge token shapes.
        #"(?<![A-Za-z0-9])AKIA[0-9A-Z]{16}(?![A-Za-z0-9])"#,
        #"(?<![A-Za-z0-9_])(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}+"#,
        #"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}+"#, #"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{16,}+"#,
        #"(?<![A-Za-z0-9_-])xox[abprs]-[A-Za-z0-9-]{10,}+"#, #"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}+"#,
        // Bearer and basic credentials.
        #"(?i)(?<![A-Za-z0-9])(bearer|basic)\s++[A-Za-z0-9._~+/=-]{8,}+"#,
        // Long hex (20 bytes or more), except a digest after "sha256:".
        #"(?<![0-9A-Za-z:])[0-9a-fA-F]{40,}+(?![0-9A-Za-z])"#,
        // URL user info: the password goes.
        #"(?<=://)[^/\s:@]{1,256}+:[^/\s@]{1,256}+(?=@)"#,
    ].map { try! NSRegularExpression(pattern: $0) }

    /// Runs of base64 / base64url characters of 40 or more: a secret when they mix digits, upper and
    /// lower case (paths and words rarely do).
    static let opaqueRun = try! NSRegularExpression(pattern: #"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}+={0,2}+"#)

    public static func redact(_ text: String) -> String {
        guard !text.isEmpty else { return text }
        // NUL would end the string where SQLite binds it, but not where the chain hashes it.
        let s = cut(text.contains("\0") ? text.replacingOccurrences(of: "\0", with: "\\0") : text)
        let m = NSMutableString(string: s)
        for re in wholesale {
            _ = re.replaceMatches(in: m, range: NSRange(location: 0, length: m.length), withTemplate: mark)
        }
        for match in opaqueRun.matches(in: m as String, range: NSRange(location: 0, length: m.length)).reversed() {
            let run = m.substring(with: match.range)
            if run.contains(where: \.isNumber) && run.contains(where: \.isUppercase)
                && run.contains(where: \.isLowercase)
            {
                m.replaceCharacters(in: match.range, with: mark)
            }
        }
        return assignments(privateKeys(m as String))
    }

    /// The first `maxLength` bytes, ending at a space (the partial word is dropped).
    static func cut(_ s: String) -> String {
        guard s.utf8.count > maxLength else { return s }
        var prefix = String(decoding: s.utf8.prefix(maxLength), as: UTF8.self)
        if let space = prefix.lastIndex(where: \.isWhitespace) {
            prefix = String(prefix[..<space])
        } else {
            prefix = ""
        }
        return prefix + " …[cut]"
    }

    /// PEM private key blocks, to their END line or the end of the text.
    static func privateKeys(_ s: String) -> String {
        var out = ""
        var rest = Substring(s)
        while let begin = rest.range(of: "-----BEGIN "), let header = rest[begin.upperBound...].range(of: "-----"),
            rest[begin.upperBound..<header.lowerBound].hasSuffix("PRIVATE KEY")
        {
            out += rest[..<begin.lowerBound] + mark
            guard let end = rest[header.upperBound...].range(of: "PRIVATE KEY-----") else { return out }
            rest = rest[end.upperBound...]
        }
        return out + rest
    }

    /// `name=value`, `name: value` and `name value` (after `--name:`/`name=` with nothing attached) where
    /// the name says it is a secret: the name stays, the value goes, quoted words included.
    static func assignments(_ s: String) -> String {
        var out: [Substring] = []
        var hideNext = false
        var openQuote: Character?
        for word in s.split(separator: " ", omittingEmptySubsequences: false) {
            if let q = openQuote {
                if word.last == q { openQuote = nil }
                continue
            }
            if hideNext && !word.isEmpty {
                out.append(Substring(mark))
                hideNext = false
                openQuote = unclosedQuote(word)
                continue
            }
            guard let sep = word.firstIndex(where: { $0 == "=" || $0 == ":" }), isSecretName(word[..<sep]) else {
                out.append(word)
                continue
            }
            let value = word[word.index(after: sep)...]
            if value.isEmpty {
                hideNext = true
                out.append(word)
            } else if !value.hasPrefix("//") {  // a URL's scheme: its user info is handled above
                out.append(word[...sep] + mark)
                openQuote = unclosedQuote(value)
            } else {
                out.append(word)
            }
        }
        return out.joined(separator: " ")
    }

    /// The quote a word opens and does not close.
    static func unclosedQuote(_ w: Substring) -> Character? {
        guard let q = w.first, q == "'" || q == "\"", w.count == 1 || w.last != q else { return nil }
        return q
    }

    static func isSecretName(_ name: Substring) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128 else { return false }
        let lower = name.lowercased()
        return secretNameWords.contains(where: lower.contains)
    }

    public static func redact(_ details: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in details { out[k] = isSecretName(Substring(k)) ? mark : redact(v) }
        return out
    }

    /// An argument vector as one line for the trail: each argument redacted, and a flag that names a
    /// secret (`--password`, `--token`) takes its following argument with it.
    public static func argv(_ args: [String]) -> String {
        var out: [String] = []
        var hideNext = false
        for (i, a) in args.prefix(256).enumerated() {
            if hideNext {
                out.append(mark)
                hideNext = false
                continue
            }
            // curl -u user:password
            if i > 0, ["-u", "--user", "--proxy-user"].contains(args[i - 1]), let colon = a.firstIndex(of: ":") {
                out.append(String(a[...colon]) + mark)
                continue
            }
            if a.hasPrefix("-"), !a.contains("="), !a.contains(":"), isSecretName(Substring(a)) { hideNext = true }
            out.append(redact(a))
        }
        if args.count > 256 { out.append("…[\(args.count - 256) more]") }
        return cut(out.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " "))
    }
}
