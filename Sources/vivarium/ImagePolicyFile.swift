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
        for key in table.keys where !["default", "scope"].contains(key) {
            throw VivariumError(.invalidArgument, "unknown section '\(key)' in \(path); known: default, scope")
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
        return policy
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
