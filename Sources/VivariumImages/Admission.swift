import Foundation
import VivariumCore
import VivariumOCI

/// Which registry images may run, per scope (a registry, or a registry/repository prefix; the longest
/// match wins, the default rule covers the rest).
public struct ImagePolicy: Sendable {
    public enum SignatureMode: String, Sendable, CaseIterable {
        /// Only images with a valid signature by a trusted key of the scope.
        case enforce
        /// Signatures are checked and the outcome audited; an unsigned image is still admitted.
        case warn
        /// Signatures are not looked up.
        case off
    }

    public struct Rule: Sendable {
        public var scope: String
        public var signature: SignatureMode
        public var keys: [TrustedKey]
        /// Tag-only references are refused: the caller names the digest.
        public var requireDigest: Bool

        public init(
            scope: String, signature: SignatureMode? = nil, keys: [TrustedKey] = [], requireDigest: Bool = false
        ) {
            self.scope = scope
            // A scope with trusted keys enforces them unless it says otherwise.
            self.signature = signature ?? (keys.isEmpty ? .warn : .enforce)
            self.keys = keys
            self.requireDigest = requireDigest
        }
    }

    public var defaultRule: Rule
    public var rules: [Rule]
    /// The vulnerability gate, for every registry image.
    public var vulnerabilities: VulnerabilityGate

    public init(defaultRule: Rule = Rule(scope: "*"), rules: [Rule] = [], vulnerabilities: VulnerabilityGate = .init())
    {
        self.defaultRule = defaultRule
        self.rules = rules
        self.vulnerabilities = vulnerabilities
    }

    /// The rule for `registry/repository`.
    public func rule(registry: String, repository: String) -> Rule {
        let name = registry + "/" + repository
        return
            rules.filter { name == $0.scope || name.hasPrefix($0.scope + "/") }.max { $0.scope.count < $1.scope.count }
            ?? defaultRule
    }
}

/// The outcome of admitting an image: how its signature was judged, for the audit trail.
public struct AdmissionDecision: Sendable {
    public var signature: String
    public var scope: String
}

/// Checks an image against its scope's rule before any of its layers is fetched.
public struct Admission: Sendable {
    public let policy: ImagePolicy
    public let client: RegistryClient

    public init(policy: ImagePolicy, client: RegistryClient) {
        self.policy = policy
        self.client = client
    }

    /// Refuses a tag-only reference where the scope requires a digest.
    public func checkReference(_ ref: ImageReference) throws {
        let rule = policy.rule(registry: ref.registry ?? "", repository: ref.repository)
        if rule.requireDigest && ref.digest == nil {
            throw VivariumError(
                .imageRefused,
                "\(ref) names no digest, and images of \(rule.scope) are admitted by digest only (require_digest)")
        }
    }

    /// Judges the signatures of an image resolved to `digests` (the reference already passed
    /// `checkReference`) (the digest its reference resolves to,
    /// then, through an index, the platform manifest's): one valid signature by a trusted key over
    /// either digest, naming this repository, admits it.
    public func check(_ ref: ImageReference, digests: [Digest], login: RegistryLogin?) async throws -> AdmissionDecision
    {
        let registry = ref.registry ?? ""
        let rule = policy.rule(registry: registry, repository: ref.repository)
        if rule.signature == .off { return AdmissionDecision(signature: "not checked", scope: rule.scope) }
        var found: [FoundSignature] = []
        var problems: [String] = []
        for d in digests {
            do { found += try await signatures(ref, of: d, login: login) } catch let e as VivariumError {
                problems.append(e.message)
            }
        }
        var why = found.isEmpty ? "no signature" : "no valid signature by a trusted key"
        for s in found {
            guard let claim = try? Cosign.claim(s.payload) else {
                why = "a signature's payload is not cosign's"
                continue
            }
            guard digests.contains(claim.digest) else {
                why = "a signature names another digest (\(claim.digest))"
                continue
            }
            guard Cosign.names(claim.repository, registry: registry, repository: ref.repository) else {
                why = "a signature names another repository (\(claim.repository))"
                continue
            }
            if let key = rule.keys.first(where: { $0.verifies(s.signature, over: s.payload) }) {
                return AdmissionDecision(signature: "verified: key \(key.id) (\(s.source))", scope: rule.scope)
            }
        }
        if !problems.isEmpty && found.isEmpty {
            why = "signatures could not be read: " + problems.joined(separator: "; ")
        }
        guard rule.signature == .warn else {
            throw VivariumError(
                .imageRefused,
                "\(ref) (\(digests[0])) is refused: \(why), and \(rule.scope) requires signatures (signature = enforce)"
            )
        }
        return AdmissionDecision(signature: "unverified (warn): \(why)", scope: rule.scope)
    }

    /// The cosign signatures of `digest`: the `sha256-<hex>.sig` tag's layers, and the referrers API's
    /// signature manifests where the registry offers it.
    public func signatures(_ ref: ImageReference, of digest: Digest, login: RegistryLogin?) async throws
        -> [FoundSignature]
    {
        var manifests: [(Manifest, String)] = []
        do {
            let m = try await client.manifest(ref, reference: Cosign.signatureTag(digest), login: login)
            manifests.append((try JSONDecoder().decode(Manifest.self, from: m.data), "tag"))
        } catch let e as VivariumError where e.code == .imageNotFound {
        } catch is DecodingError {
            throw VivariumError(.registryFailure, "the signature manifest of \(digest) is not a manifest")
        }
        if let index = try await client.referrers(ref, of: digest, login: login) {
            for d in index.manifests.prefix(Cosign.maxSignatures)
            where d.artifactType == nil || d.artifactType == Cosign.artifactType {
                let m = try await client.manifest(ref, reference: d.digest.rawValue, login: login)
                if let manifest = try? JSONDecoder().decode(Manifest.self, from: m.data) {
                    manifests.append((manifest, "referrers"))
                }
            }
        }
        var found: [FoundSignature] = []
        for (m, source) in manifests {
            for layer in m.layers where layer.mediaType == Cosign.payloadType {
                guard found.count < Cosign.maxSignatures,
                    let b64 = layer.annotations?[Cosign.signatureAnnotation], let sig = Data(base64Encoded: b64)
                else { continue }
                let payload = try await client.blobData(ref, layer, limit: Cosign.maxPayloadBytes, login: login)
                found.append(FoundSignature(payload: payload, signature: sig, source: source))
            }
        }
        return found
    }

    /// Adds a signature to the image's signature tag (keeping the ones there), as cosign does.
    public static func publish(
        client: RegistryClient, _ ref: ImageReference, digest: Digest, payload: Data, signature: Data,
        login: RegistryLogin?
    ) async throws -> String {
        let tag = Cosign.signatureTag(digest)
        var layers: [Descriptor] = []
        do {
            let m = try await client.manifest(ref, reference: tag, login: login)
            layers = (try? JSONDecoder().decode(Manifest.self, from: m.data))?.layers ?? []
        } catch let e as VivariumError where e.code == .imageNotFound {}
        let sig = signature.base64EncodedString()
        let payloadDigest = Digest.of(payload)
        if !layers.contains(where: { $0.digest == payloadDigest && $0.annotations?[Cosign.signatureAnnotation] == sig })
        {
            guard layers.count < Cosign.maxSignatures else {
                throw VivariumError(.resourceExhausted, "\(ref) already has \(layers.count) signatures")
            }
            var layer = try await client.pushBlob(ref, payload, login: login)
            layer.mediaType = Cosign.payloadType
            layer.annotations = [Cosign.signatureAnnotation: sig]
            layers.append(layer)
        }
        var config = try await client.pushBlob(ref, Cosign.config(payloads: layers.map(\.digest)), login: login)
        config.mediaType = MediaType.ociConfig
        let manifest = Manifest(mediaType: MediaType.ociManifest, config: config, layers: layers)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        try await client.pushManifest(
            ref, reference: tag, try encoder.encode(manifest), mediaType: MediaType.ociManifest, login: login)
        return tag
    }
}
