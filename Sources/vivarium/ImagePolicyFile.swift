import Foundation
import TOMLKit
import VivariumCore
import VivariumImages

/// The image admission policy file (`image_policy`, TOML):
///
///     [default]                      # every scope no [[scope]] names
///     signature = "warn"             # enforce | warn | off (default: warn)
///     require_digest = false
///
///     [[scope]]
///     name = "registry.example.com/team"   # a registry, or registry/repository prefix
///     keys = ["/etc/vivarium/keys/team.pub"]  # ECDSA P-256 or Ed25519 public keys (PEM)
///     signature = "enforce"          # default: enforce when keys are given, else warn
///     require_digest = true
///
///     [vulnerabilities]              # the gate, for every registry image (off without `refuse`)
///     refuse = "high"                # findings at or above: low, medium, high, critical
///     unknown = "high"               # what a finding without a severity counts as (default: below all)
///
///     [[waiver]]
///     advisory = "CVE-2024-0001"     # an advisory id or alias
///     expires = 2027-01-31T00:00:00Z # a TOML date-time (or an RFC 3339 string); past it, no waiver
///     reason = "not reachable in our use"
///
/// The longest matching scope wins. A scope that enforces signatures needs at least one key.
enum ImagePolicyFile {
    static func load(_ path: String) throws -> ImagePolicy {
        guard let data = FileManager.default.contents(atPath: path), data.count <= 1 << 20,
            let text = String(data: data, encoding: .utf8)
        else { throw VivariumError(.invalidArgument, "cannot read the image policy \(path)") }
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch {
            throw VivariumError(.invalidArgument, "the image policy \(path) is not valid TOML: \(error)")
        }
        for key in table.keys where !["default", "scope", "vulnerabilities", "waiver"].contains(key) {
            throw VivariumError(
                .invalidArgument, "unknown section '\(key)' in \(path); known: default, scope, vulnerabilities, waiver")
        }
        var policy = ImagePolicy()
        if let d = table["default"] {
            guard let t = d.table else { throw VivariumError(.invalidArgument, "[default] in \(path) is not a table") }
            policy.defaultRule = try rule(t, scope: "*", path)
        }
        if let scopes = table["scope"] {
            guard let list = scopes.array else {
                throw VivariumError(.invalidArgument, "scope in \(path) must be an array of tables ([[scope]])")
            }
            for item in list {
                guard let t = item.table, let name = t["name"]?.string,
                    (try? ImageReference.parse(name + "/x"))?.registry != nil
                else {
                    throw VivariumError(
                        .invalidArgument, "every [[scope]] in \(path) needs name = a registry or registry/repository")
                }
                guard !policy.rules.contains(where: { $0.scope == name }) else {
                    throw VivariumError(.invalidArgument, "scope \(name) is named twice in \(path)")
                }
                policy.rules.append(try rule(t, scope: name, path))
            }
        }
        policy.vulnerabilities = try vulnerabilities(table, path)
        return policy
    }

    static func severity(_ v: TOMLValueConvertible?, _ key: String, _ path: String) throws -> Severity? {
        guard let v else { return nil }
        guard let word = v.string, let s = Severity(rawValue: word.lowercased()), s != .unknown, s != .none else {
            throw VivariumError(.invalidArgument, "\(key) in \(path) must be low, medium, high or critical")
        }
        return s
    }

    static func vulnerabilities(_ table: TOMLTable, _ path: String) throws -> VulnerabilityGate {
        var gate = VulnerabilityGate()
        if let v = table["vulnerabilities"] {
            guard let t = v.table else {
                throw VivariumError(.invalidArgument, "[vulnerabilities] in \(path) is not a table")
            }
            for key in t.keys where !["refuse", "unknown"].contains(key) {
                throw VivariumError(.invalidArgument, "unknown key '\(key)' in [vulnerabilities] of \(path)")
            }
            gate.refuse = try severity(t["refuse"], "refuse", path)
            gate.unknownAs = try severity(t["unknown"], "unknown", path) ?? .unknown
        }
        for item in table["waiver"]?.array ?? [] {
            guard let t = item.table, let advisory = t["advisory"]?.string, !advisory.isEmpty, advisory.count <= 128
            else {
                throw VivariumError(.invalidArgument, "every [[waiver]] in \(path) needs advisory = an id")
            }
            let expires: Date?
            if let d = t["expires"]?.dateTime {
                expires = ISO8601DateFormatter().date(from: d.debugDescription) ?? d.fDate ?? d.fDate
            } else {
                expires = t["expires"]?.string.flatMap { ISO8601DateFormatter().date(from: $0) }
            }
            guard let expires else {
                throw VivariumError(
                    .invalidArgument,
                    "the waiver of \(advisory) in \(path) needs expires = a date-time (2027-01-31T00:00:00Z)")
            }
            gate.waivers.append(.init(advisory: advisory, expires: expires, reason: t["reason"]?.string))
        }
        return gate
    }

    static func rule(_ t: TOMLTable, scope: String, _ path: String) throws -> ImagePolicy.Rule {
        let known = ["name", "keys", "signature", "require_digest"]
        for key in t.keys where !known.contains(key) {
            throw VivariumError(.invalidArgument, "unknown key '\(key)' for \(scope) in \(path)")
        }
        var mode: ImagePolicy.SignatureMode?
        if let v = t["signature"] {
            guard let m = v.string.flatMap(ImagePolicy.SignatureMode.init(rawValue:)) else {
                throw VivariumError(.invalidArgument, "signature for \(scope) in \(path) must be enforce, warn or off")
            }
            mode = m
        }
        var keys: [TrustedKey] = []
        if let v = t["keys"] {
            guard let list = v.array?.map(\.string), list.allSatisfy({ $0?.hasPrefix("/") == true }) else {
                throw VivariumError(.invalidArgument, "keys for \(scope) in \(path) must be absolute paths")
            }
            keys = try list.compactMap { $0 }.map(TrustedKey.load)
        }
        var requireDigest = false
        if let v = t["require_digest"] {
            guard let b = v.bool else {
                throw VivariumError(.invalidArgument, "require_digest for \(scope) in \(path) must be true or false")
            }
            requireDigest = b
        }
        let rule = ImagePolicy.Rule(scope: scope, signature: mode, keys: keys, requireDigest: requireDigest)
        if rule.signature == .enforce && keys.isEmpty {
            throw VivariumError(
                .invalidArgument, "\(scope) in \(path) enforces signatures but names no key to trust them with")
        }
        return rule
    }
}
