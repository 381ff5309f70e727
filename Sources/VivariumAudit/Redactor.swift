import Foundation
import VivariumCore

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
        "pass", "pw", "secret", "token", "apikey", "api_key", "api-key", "accesskey", "access_key", "access-key",
        "auth", "credential", "private_key", "private-key", "privatekey", "cookie", "session",
    ]

    /// Every shape removed wholesale, as one alternation: one pass over the text.
    static let wholesale = try! NSRegularExpression(
        pattern: [
            // JWTs (our access tokens and anyone else's).
            #"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+"#,
            // Vivarium API keys and refresh tokens.
            #"(?<![A-Za-z0-9_])viv_[0-9a-f]{12}_[0-9a-f]{16,}+"#, #"(?<![A-Za-z0-9_])vivr_[0-9a-f]{16,}+"#,
            // Well-known cloud and forge token shapes.
            #"(?<![A-Za-z0-9])(AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"#, #"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}+"#,
            #"(?<![A-Za-z0-9_])(sk|rk|pk)_(live|test)_[0-9A-Za-z]{10,}+"#,
            #"(?<![A-Za-z0-9_])(ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}+"#,
            #"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}+"#, #"(?<![A-Za-z0-9_-])glpat-[A-Za-z0-9_-]{16,}+"#,
            #"(?<![A-Za-z0-9_-])xox[abprs]-[A-Za-z0-9-]{10,}+"#, #"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}+"#,
            // Bearer and basic credentials.
            #"(?i:(?<![A-Za-z0-9])(bearer|basic)\s++[A-Za-z0-9._~+/=-]{8,}+)"#,
            // Long hex (20 bytes or more), except a digest after "sha256:".
            #"(?<![0-9A-Za-z])(?<!sha256:)[0-9a-fA-F]{40,}+(?![0-9A-Za-z])"#,
            // URL user info (user and password, up to the authority's last @).
            #"(?<=://)[^/\s:@]{0,256}+:[^/\s]*@"#,
        ].map { "(?:\($0))" }.joined(separator: "|"))

    /// Runs of base64 / base64url characters of 40 or more: a secret when they mix digits, upper and
    /// lower case (paths and words rarely do).
    static let opaqueRun = try! NSRegularExpression(pattern: #"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}+={0,2}+"#)

    public static func redact(_ text: String) -> String {
        // The shortest shape any rule matches is 13 characters, or holds whitespace, `=`, `:` or `@`: a
        // short plain word (a name, a number, a state) cannot hold one.
        if text.utf8.count < 13,
            text.utf8.allSatisfy({
                ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x7a || (0x30...0x39).contains($0) || $0 == 0x2e || $0 == 0x5f
                    || $0 == 0x2d
            })
        {
            return text
        }
        // NUL would end the string where SQLite binds it, but not where the chain hashes it.
        var s = cut(text)
        if s.contains("\0") { s = s.replacingOccurrences(of: "\0", with: "\\0") }
        let m = NSMutableString(string: s)
        _ = wholesale.replaceMatches(in: m, range: NSRange(location: 0, length: m.length), withTemplate: mark)
        for match in opaqueRun.matches(in: m as String, range: NSRange(location: 0, length: m.length)).reversed() {
            let run = m.substring(with: match.range)
            if run.contains(where: \.isNumber) && run.contains(where: \.isUppercase)
                && run.contains(where: \.isLowercase)
            {
                m.replaceCharacters(in: match.range, with: mark)
            }
        }
        // Cut again: markers can be longer than what they replace.
        return cut(assignments(privateKeys(m as String)))
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

    /// PEM private key blocks, to their END line or the end of the text (other blocks stay).
    static func privateKeys(_ s: String) -> String {
        var out = ""
        var rest = Substring(s)
        while let begin = rest.range(of: "-----BEGIN ") {
            guard let header = rest[begin.upperBound...].range(of: "-----") else { break }
            guard rest[begin.upperBound..<header.lowerBound].hasSuffix("PRIVATE KEY") else {
                out += rest[..<header.upperBound]
                rest = rest[header.upperBound...]
                continue
            }
            out += rest[..<begin.lowerBound] + mark
            guard let end = rest[header.upperBound...].range(of: "PRIVATE KEY-----") else { return out }
            rest = rest[end.upperBound...]
        }
        return out + rest
    }

    /// Word by word (any whitespace separates; a field may hold a shell script), with each word also cut
    /// at `?&;,` (query strings, JSON, cookies, chained assignments):
    /// - `name=value` and `name: value` where the name says secret: the value goes, quoted words included;
    ///   after `Authorization:` the scheme and the credential go;
    /// - `--password value`: a secret-named flag takes the next word with it;
    /// - `-u user:password`, `-uuser:password`, `--user=user:password`: the password goes.
    /// - programs with their own password arguments: `mysql -pPASS`, `sshpass -p PASS`, `htpasswd -b FILE
    ///   USER PASS` (`-nb USER PASS`), `openssl ... -k PASS` and `-pass pass:PASS` (any `pass:` value).
    static func assignments(_ s: String) -> String {
        var out: [String] = []
        var hide = 0
        var openQuote: Character?
        var userNext = false
        var program = ProgramContext()
        for word in s.split(whereSeparator: \.isWhitespace) {
            if let q = openQuote {
                if word.last == q { openQuote = nil }
                continue
            }
            if hide > 0 {
                out.append(mark)
                hide -= 1
                openQuote = unclosedQuote(word)
                continue
            }
            switch program.next(word) {
            case .keep: break
            case .hideWord:
                out.append(mark)
                continue
            case .hideNext:
                out.append(String(word))
                hide = 1
                continue
            case .hideAfter(let prefix):
                out.append(word.prefix(prefix) + mark)
                continue
            }
            if userNext {
                userNext = false
                if let colon = word.firstIndex(of: ":") {
                    out.append(word[...colon] + mark)
                    continue
                }
            }
            let lower = word.lowercased()
            if lower == "-u" || lower == "--user" || lower == "--proxy-user" {
                userNext = true
                out.append(String(word))
                continue
            }
            if let redacted = userPassword(word) {
                out.append(redacted)
                continue
            }
            // A flag naming a secret or a key (`--password`, `--client-key`) takes the next word with it.
            if word.hasPrefix("-"), !word.contains("="), !word.contains(":"),
                isSecretName(word) || lower.contains("key")
            {
                hide = 1
                out.append(String(word))
                continue
            }
            var rewritten = ""
            var segment = Substring("")
            var pendingHide = 0
            func flush() {
                guard !segment.isEmpty else { return }
                if let sep = segment.firstIndex(where: { $0 == "=" || $0 == ":" }),
                    isSecretName(segment[..<sep]) || isKeyOrPasswordName(segment[..<sep])
                {
                    let value = segment[segment.index(after: sep)...]
                    if value.isEmpty {
                        pendingHide = segment[..<sep].lowercased().contains("authorization") ? 2 : 1
                        rewritten += segment
                    } else if value.hasPrefix("//") {
                        rewritten += segment  // a URL's scheme: its user info is handled above
                    } else {
                        rewritten += segment[...sep] + mark
                        openQuote = unclosedQuote(value)
                    }
                } else {
                    rewritten += segment
                }
                segment = ""
            }
            for c in word {
                if "?&;,".contains(c) {
                    flush()
                    rewritten.append(c)
                } else {
                    segment.append(c)
                }
            }
            flush()
            hide = pendingHide
            out.append(rewritten)
        }
        return out.joined(separator: " ")
    }

    /// In assignments (`SSH_KEY=value`, `DB_PWD=value`) "key" and "pwd" also name a secret; in detail
    /// keys they do not (`key_id` and `public_key` are recorded on purpose).
    static func isKeyOrPasswordName(_ name: Substring) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128, !name.hasPrefix("/") else { return false }
        let lower = name.lowercased()
        return lower.contains("key") || lower.contains("pwd")
    }

    /// Follows which program a word belongs to (from a word naming one of `programs`, with or without a
    /// path, to the end of its shell command) and what that program takes as a password.
    struct ProgramContext {
        enum Verdict {
            case keep, hideWord, hideNext
            /// Keep this many leading characters, hide the rest.
            case hideAfter(Int)
        }
        var name: Substring?
        /// Words after the program that are not options, counted for htpasswd's positional password.
        var operands = 0
        var htpasswdBatch = false
        var htpasswdNoFile = false
        static let programs: Set<Substring> = [
            "mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "sshpass", "openssl", "htpasswd",
        ]

        mutating func next(_ word: Substring) -> Verdict {
            let lower = word.lowercased()
            if lower.hasPrefix("pass:") && lower.count > 5 { return .hideAfter(5) }
            // A known program named anywhere starts its context (`sudo mysql`, `docker exec db mysql`); its
            // own arguments (`htpasswd -b /etc/htpasswd`) do not.
            if name == nil, let base = word.split(separator: "/").last, Self.programs.contains(base) {
                self = ProgramContext(name: base)
                return .keep
            }
            if let last = word.last, ";|&".contains(last) {
                self = ProgramContext()
                return .keep
            }
            if let first = word.first, first == "'" || first == "\"" {
                // A quoted script (`sh -c 'mysql -pX'`) starts a command of its own.
                self = ProgramContext()
                return next(word.dropFirst())
            }
            switch name ?? "" {
            case "mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump":
                return word.hasPrefix("-p") && word.count > 2 && !word.hasPrefix("--") ? .hideAfter(2) : .keep
            case "sshpass":
                if word == "-p" { return .hideNext }
                return word.hasPrefix("-p") && word.count > 2 ? .hideAfter(2) : .keep
            case "openssl":
                return word == "-k" || word == "-K" ? .hideNext : .keep
            case "htpasswd":
                if word.hasPrefix("-"), word.count > 1 {
                    if word.contains("b") { htpasswdBatch = true }
                    if word.contains("n") { htpasswdNoFile = true }
                    return .keep
                }
                operands += 1
                return htpasswdBatch && operands == (htpasswdNoFile ? 2 : 3) ? .hideWord : .keep
            default:
                return .keep
            }
        }
    }

    /// `-uuser:password`, `--user=user:password`: the password redacted; nil for any other word.
    static func userPassword(_ word: Substring) -> String? {
        let lower = word.lowercased()
        for prefix in ["--user=", "--proxy-user=", "-u"] where lower.hasPrefix(prefix) && lower.count > prefix.count {
            guard let colon = word.dropFirst(prefix.count).firstIndex(of: ":") else { return nil }
            return word[...colon] + mark
        }
        return nil
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

    /// An argument vector as one line (arguments holding whitespace quoted), at most about `maxLength`
    /// bytes. Not redacted: it is recorded like any other detail, and the store redacts those.
    public static func commandLine(_ args: [String]) -> String {
        var out = ""
        for (i, a) in args.enumerated() {
            guard out.utf8.count <= maxLength else { return out + " …[\(args.count - i) more]" }
            if i > 0 { out += " " }
            out += a.contains(where: \.isWhitespace) ? "'\(a)'" : a
        }
        return out
    }
}
