import Foundation

/// Removes credentials from text before it is written to the audit trail: tokens, keys and anything
/// that looks like one. It errs on the side of removing too much.
public enum Redactor {
    public static let mark = "[redacted]"

    /// Detail keys whose values are never recorded.
    static let secretKeyWords = [
        "token", "secret", "password", "passwd", "credential", "authorization", "cookie", "private", "apikey",
        "api_key",
    ]

    /// Patterns replaced wholesale, and `name=value` patterns whose value goes.
    static let wholesale: [NSRegularExpression] = [
        // JWTs (our access tokens and anyone else's).
        #"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"#,
        // Vivarium API keys and refresh tokens.
        #"viv_[0-9a-f]{12}_[0-9a-f]{16,}"#, #"vivr_[0-9a-f]{16,}"#,
        // PEM private keys.
        #"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)"#,
        // Well-known cloud and forge token shapes.
        #"\bAKIA[0-9A-Z]{16}\b"#, #"\b(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}"#, #"\bgithub_pat_[A-Za-z0-9_]{20,}"#,
        #"\bglpat-[A-Za-z0-9_-]{16,}"#, #"\bxox[abprs]-[A-Za-z0-9-]{10,}"#, #"\bsk-[A-Za-z0-9_-]{20,}"#,
        // Bearer credentials.
        #"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"#,
        // Long opaque strings: hex of 20 bytes or more, except after sha256:
        // (a digest names content, not a secret), and mixed-case runs.
        #"(?<!sha256:)\b[0-9a-fA-F]{40,}\b"#,
        #"(?<![A-Za-z0-9+/_=-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[A-Z])(?=[A-Za-z0-9+/_-]*[a-z])[A-Za-z0-9+/_-]{40,}={0,2}"#,
    ].map { try! NSRegularExpression(pattern: $0) }

    /// `password=...`, `--token ...`-style assignments and URL user info: the name stays, the value goes.
    static let assignment = try! NSRegularExpression(
        pattern:
            #"(?i)([A-Za-z0-9_.-]*(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|auth|credential|private[_-]?key)[A-Za-z0-9_.-]*\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)"#
    )
    static let userinfo = try! NSRegularExpression(pattern: #"(://[^/\s:@]+:)[^/\s@]+@"#)

    public static func redact(_ s: String) -> String {
        guard !s.isEmpty else { return s }
        let m = NSMutableString(string: s)
        for re in wholesale {
            _ = re.replaceMatches(in: m, range: NSRange(location: 0, length: m.length), withTemplate: mark)
        }
        _ = assignment.replaceMatches(in: m, range: NSRange(location: 0, length: m.length), withTemplate: "$1" + mark)
        _ = userinfo.replaceMatches(
            in: m, range: NSRange(location: 0, length: m.length), withTemplate: "$1" + mark + "@")
        return m as String
    }

    public static func redact(_ details: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in details {
            let lower = k.lowercased()
            out[k] = secretKeyWords.contains(where: lower.contains) ? mark : redact(v)
        }
        return out
    }

    /// An argument vector as one line for the trail: each argument redacted, and a flag that names a
    /// secret (`--password`, `--token`) takes its following argument with it.
    public static func argv(_ args: [String]) -> String {
        var out: [String] = []
        var hideNext = false
        for a in args {
            if hideNext {
                out.append(mark)
                hideNext = false
                continue
            }
            let lower = a.lowercased()
            if lower.hasPrefix("-"), !lower.contains("="), secretFlagWords.contains(where: lower.contains) {
                hideNext = true
            }
            out.append(redact(a))
        }
        return out.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    }

    static let secretFlagWords = ["pass", "secret", "token", "key", "credential", "auth"]
}
