import Foundation
import VivariumCore

/// The YAML that OSV databases publish (PyPA's advisory database, for one): block mappings and
/// sequences, plain, quoted and multi-line scalars, literal and folded blocks, empty flow collections.
/// Every scalar is read as a string, which is what OSV's fields are. Anchors, tags, flow collections
/// with content and multiple documents are refused.
enum OSVYAML {
    struct Line {
        var indent: Int
        var text: Substring
        var number: Int
    }

    static func parse(_ text: String) throws -> Any {
        var lines: [Line] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            let indent = line.prefix { $0 == " " }.count
            let body = line.dropFirst(indent)
            if n == 0 && body == "---" { continue }
            guard body != "---" && body != "..." else { throw error(n, "more than one document") }
            lines.append(Line(indent: indent, text: body, number: n + 1))
        }
        var p = OSVYAMLParser(lines: lines)
        p.skipBlank()
        guard p.i < lines.count else { return [String: Any]() }
        let value = try p.node(indent: lines[p.i].indent)
        p.skipBlank()
        guard p.i >= lines.count else { throw error(lines[p.i].number, "unexpected indentation") }
        return value
    }

    static func error(_ line: Int, _ why: String) -> VivariumError {
        VivariumError(.invalidArgument, "YAML line \(line): \(why)")
    }
}

struct OSVYAMLParser {
    var lines: [OSVYAML.Line]
    var i = 0

    static func isBlank(_ l: OSVYAML.Line) -> Bool { l.text.isEmpty || l.text.hasPrefix("#") }

    mutating func skipBlank() { while i < lines.count, Self.isBlank(lines[i]) { i += 1 } }

    /// The node whose first line is at `i`, indented by `indent`.
    mutating func node(indent: Int) throws -> Any {
        skipBlank()
        let l = lines[i]
        if l.text == "-" || l.text.hasPrefix("- ") { return try sequence(indent: indent) }
        return try mapping(indent: indent)
    }

    mutating func sequence(indent: Int) throws -> [Any] {
        var out: [Any] = []
        while true {
            skipBlank()
            guard i < lines.count, lines[i].indent == indent, lines[i].text == "-" || lines[i].text.hasPrefix("- ")
            else { break }
            let rest = lines[i].text.dropFirst(1).drop { $0 == " " }
            if rest.isEmpty {
                i += 1
                skipBlank()
                guard i < lines.count, lines[i].indent > indent else {
                    out.append("")
                    continue
                }
                out.append(try node(indent: lines[i].indent))
            } else {
                // "- key: value" opens a mapping (or "- - x" a sequence) at the item's column.
                let column = indent + (lines[i].text.count - rest.count)
                lines[i] = OSVYAML.Line(indent: column, text: rest, number: lines[i].number)
                if rest.hasPrefix("- ") || keyValue(rest) != nil {
                    out.append(try node(indent: column))
                } else {
                    out.append(try scalar(rest, indent: indent))
                }
            }
        }
        return out
    }

    mutating func mapping(indent: Int) throws -> [String: Any] {
        var out: [String: Any] = [:]
        while true {
            skipBlank()
            guard i < lines.count, lines[i].indent == indent else { break }
            let l = lines[i]
            guard let (key, value) = keyValue(l.text) else { throw OSVYAML.error(l.number, "expected `key: value`") }
            guard out[key] == nil else { throw OSVYAML.error(l.number, "key \(key) twice") }
            if value.isEmpty {
                i += 1
                skipBlank()
                if i < lines.count, lines[i].indent > indent {
                    out[key] = try node(indent: lines[i].indent)
                } else if i < lines.count, lines[i].indent == indent, lines[i].text.hasPrefix("- ") {
                    out[key] = try sequence(indent: indent)
                } else {
                    out[key] = ""
                }
            } else if value.hasPrefix("|") || value.hasPrefix(">") {
                i += 1
                out[key] = block(folded: value.hasPrefix(">"), indent: indent)
            } else {
                out[key] = try scalar(value, indent: indent)
            }
        }
        return out
    }

    /// `key: value` (the key plain or quoted), or nil when the line is not one.
    func keyValue(_ text: Substring) -> (String, Substring)? {
        var key: String
        var rest: Substring
        if let q = text.first, q == "'" || q == "\"" {
            guard let end = text.dropFirst().firstIndex(of: q) else { return nil }
            key = String(text[text.index(after: text.startIndex)..<end])
            rest = text[text.index(after: end)...]
            guard rest.hasPrefix(":") else { return nil }
        } else {
            guard
                let colon = text.range(of: ": ")?.lowerBound
                    ?? (text.hasSuffix(":") ? text.index(before: text.endIndex) : nil)
            else { return nil }
            key = String(text[..<colon])
            rest = text[colon...]
            if key.contains(" #") || key.hasPrefix("[") || key.hasPrefix("{") { return nil }
        }
        return (key, rest.dropFirst().drop { $0 == " " })
    }

    /// A literal (`|`) or folded (`>`) block: the lines indented deeper than the key.
    mutating func block(folded: Bool, indent: Int) -> String {
        var parts: [Substring] = []
        var column: Int?
        while i < lines.count, lines[i].text.isEmpty || lines[i].indent > indent {
            let l = lines[i]
            if column == nil && !l.text.isEmpty { column = l.indent }
            parts.append(
                l.text.isEmpty
                    ? "" : Substring(String(repeating: " ", count: max(0, l.indent - (column ?? l.indent)))) + l.text)
            i += 1
        }
        while parts.last?.isEmpty == true { parts.removeLast() }
        return parts.joined(separator: folded ? " " : "\n") + "\n"
    }

    /// A scalar starting on the current line; a plain one continues on deeper lines.
    mutating func scalar(_ first: Substring, indent: Int) throws -> Any {
        let number = lines[i].number
        i += 1
        if first == "[]" { return [Any]() }
        if first == "{}" { return [String: Any]() }
        if let q = first.first, q == "'" || q == "\"" {
            var text = String(first)
            while !closes(text, q) {
                guard i < lines.count, lines[i].indent > indent || lines[i].text.isEmpty else {
                    throw OSVYAML.error(number, "unterminated quoted string")
                }
                text += " " + lines[i].text
                i += 1
            }
            return unquote(text, q)
        }
        guard !first.hasPrefix("&"), !first.hasPrefix("*"), !first.hasPrefix("!"), !first.hasPrefix("["),
            !first.hasPrefix("{")
        else { throw OSVYAML.error(number, "anchors, aliases, tags and flow collections are not read") }
        var text = String(first.split(separator: " #", maxSplits: 1).first ?? first)
        while i < lines.count, lines[i].indent > indent, !Self.isBlank(lines[i]) {
            text += " " + lines[i].text
            i += 1
        }
        return text.trimmingCharacters(in: .whitespaces)
    }

    func closes(_ text: String, _ q: Character) -> Bool {
        guard text.count >= 2, text.last == q else { return false }
        if q == "'" {
            // '' is an escaped quote: the closing one is the last of an odd run.
            let run = text.dropFirst().reversed().prefix { $0 == "'" }.count
            return run % 2 == 1
        }
        var escaped = false
        for c in text.dropFirst().dropLast() { escaped = c == "\\" && !escaped }
        return !escaped
    }

    func unquote(_ text: String, _ q: Character) -> String {
        let inner = String(text.dropFirst().dropLast())
        if q == "'" { return inner.replacingOccurrences(of: "''", with: "'") }
        var out = ""
        var escape = false
        for c in inner {
            if escape {
                switch c {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(c)
                }
                escape = false
            } else if c == "\\" {
                escape = true
            } else {
                out.append(c)
            }
        }
        return out
    }
}
