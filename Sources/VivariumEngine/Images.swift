import Foundation
import Logging
import VivariumAudit
import VivariumCore
import VivariumImages
import VivariumOS
import VivariumStore

import struct Synchronization.Mutex

/// The image use cases: list, import from a host path, remove, and the `base` image made at first start.
public final class Images: Sendable {
    let config: EngineConfiguration
    let store: any Store
    let content: ImageStore
    /// Registry pulls and their admission; nil when the daemon makes none.
    let puller: ImagePuller?
    let admission: Admission?
    /// The imported advisories the vulnerability gate and `image scan` match against.
    public let vulndb: VulnDB
    let secrets: Secrets
    let gate: Gate
    let logger: Logger
    let locks = KeyedLock()
    /// Pulls in flight by tenant and reference, for `pulls`.
    let inFlight = Mutex<[String: (tenant: String, reference: String, progress: PullProgress)]>([:])
    /// Wakes the `ImageCollector` service.
    let collectionWanted = WakeSignal()
    /// Ingests share the content store; its garbage collection runs alone.
    let ingesting = SharedExclusiveLock()

    init(
        config: EngineConfiguration, store: any Store, content: ImageStore, puller: ImagePuller?, secrets: Secrets,
        gate: Gate, logger: Logger
    ) throws {
        try FileSystem.makeDirectory(config.stateDir + "/vulndb", mode: 0o700)
        vulndb = try VulnDB(path: config.stateDir + "/vulndb/advisories.json")
        self.puller = puller
        self.admission = puller.map { Admission(policy: config.imagePolicy, client: $0.client) }
        self.secrets = secrets
        self.config = config
        self.store = store
        self.content = content
        self.gate = gate
        self.logger = logger
    }

    /// The caller's tenant's images and the shared ones of the default tenant (which every tenant may use).
    public func list(_ caller: Caller) async throws -> [ImageRecord] {
        try await gate.perform(caller, .imageList, target: nil) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let shared = await tenant == Identity.defaultTenant ? [] : try store.images(tenant: Identity.defaultTenant)
            return try await store.images(tenant: tenant) + shared
        }
    }

    /// The caller's tenant's pulls in flight and how far each is.
    public func pulls(_ caller: Caller) async throws -> [PullStatus] {
        try await gate.perform(caller, .imageList, target: nil) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let now = ContinuousClock.now
            return inFlight.withLock { $0.values.filter { $0.tenant == tenant } }.map {
                let s = $0.progress.current
                let elapsed = now - $0.progress.started
                return PullStatus(
                    reference: $0.reference, phase: s.phase, blobs: s.blobs, blobsDone: s.blobsDone, bytes: s.bytes,
                    totalBytes: s.totalBytes,
                    elapsedSeconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            }.sorted { $0.reference < $1.reference }
        }
    }

    /// Imports a root file system from a directory or tar archive on the daemon's host: local root on
    /// the unix socket only. A remote caller, admin or not, uploads an archive instead (`upload`).
    public func importRootfs(
        _ caller: Caller, path: String, name: ResourceName, format: ImportFormat = .auto
    ) async throws -> ImageRecord {
        try await gate.perform(caller, .imageImport, target: name.rawValue) {
            guard caller.isLocal else {
                throw VivariumError(
                    .forbidden,
                    "importing from a host path is for local root on the unix socket; upload an archive instead")
            }
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            return try await importRootfs(tenant: tenant, path: path, name: name, format: format)
        }
    }

    /// Imports an archive sent by the caller (`body` hands over its bytes as they arrive) into the
    /// caller's tenant, or with `shared` (admins only) into the shared images every tenant sees.
    public func upload(
        _ caller: Caller, name: ResourceName, shared: Bool,
        _ body: @escaping @Sendable (_ feed: (UnsafeRawBufferPointer) throws -> Void) async throws -> Void
    ) async throws -> ImageRecord {
        try await gate.perform(caller, .imageUpload, target: name.rawValue) {
            let tenant = try writableTenant(caller, shared: shared)
            return try await add(tenant: tenant, name: name, source: ["source": "upload"]) { [self] in
                try await LayerIngest.run(into: content, rules: config.unpackRules, body)
            }
        }
    }

    /// Pulls an image from a registry into the caller's tenant (its login from the tenant's secrets), and
    /// pins the reference to the digest pulled.
    public func pull(_ caller: Caller, reference: ImageReference) async throws -> ImageRecord {
        try await gate.perform(caller, .imagePull, target: reference.description) {
            return try await pull(tenant: try writableTenant(caller, shared: false), reference)
        }
    }

    /// The image a sandbox of `tenant` runs for a registry reference: the one pinned by an earlier pull
    /// (a tag is never resolved again behind the user's back), or a pull now.
    func resolve(tenant: String, _ reference: ImageReference) async throws -> ImageRecord {
        let full = reference.resolved(defaultRegistry: config.defaultRegistry)
        try admission?.checkReference(full)
        if let pinned = try await store.image(tenant: tenant, reference: full.description) { return pinned }
        return try await pull(tenant: tenant, reference)
    }

    /// The registry client, or why this daemon has none.
    func registry() throws -> (ImagePuller, Admission) {
        guard let puller, let admission else { throw VivariumError(.unavailable, "this daemon pulls from no registry") }
        return (puller, admission)
    }

    /// A reference in full, refused before any connection when its repository is not allowed.
    func allowed(_ reference: ImageReference) throws -> (ImageReference, registry: String) {
        let full = reference.resolved(defaultRegistry: config.defaultRegistry)
        guard let registry = full.registry else {
            throw VivariumError(.invalidArgument, "\(reference) names no registry")
        }
        if let allowed = config.allowedRegistries {
            let repo = registry + "/" + full.repository
            guard allowed.contains(where: { repo == $0 || repo.hasPrefix($0 + "/") }) else {
                throw VivariumError(.forbidden, "pulls from \(repo) are not allowed here (registry_allowed)")
            }
        }
        return (full, registry)
    }

    func pull(tenant: String, _ reference: ImageReference) async throws -> ImageRecord {
        let (puller, admission) = try registry()
        let (full, registry) = try allowed(reference)
        try admission.checkReference(full)
        let key = full.description
        do {
            let earlier = try await store.image(tenant: tenant, reference: key)
            let rec = try await ingesting.shared { [self] in
                try await pinPull(tenant: tenant, full, registry: registry, key: key, puller, admission)
            }
            // A reference moved to another digest: what it named before may be unused now.
            if let earlier, earlier.digest != rec.digest { collectInBackground() }
            return rec
        } catch {
            collectInBackground()
            throw error
        }
    }

    func pinPull(
        tenant: String, _ full: ImageReference, registry: String, key: String, _ puller: ImagePuller,
        _ admission: Admission
    ) async throws -> ImageRecord {
        try await locks.withLock("pull:\(tenant)/\(key)") { [self] in
            let progress = PullProgress()
            let slot = "\(tenant)/\(key)"
            inFlight.withLock { $0[slot] = (tenant, key, progress) }
            defer { _ = inFlight.withLock { $0.removeValue(forKey: slot) } }
            let login = try await secrets.registryLogin(tenant: tenant, registry: registry)
            let resolved = try await puller.resolve(full, login: login)
            // Admitted (or refused, and the refusal audited with the digest) before any layer is fetched.
            let decision = try await admission.check(full, digests: resolved.digests, login: login)
            let pulled = try await puller.pull(full, resolved, login: login, progress: progress)
            progress.update { $0.phase = "checking" }
            let verdict = try await vulnerabilityVerdict(full, digest: pulled.digest, rootfs: pulled.rootfs)
            let name = ResourceName(rawValue: "ref-" + Digest.of(Array("\(tenant)/\(key)".utf8)).hex.prefix(12))!
            let rec = try await store.pinImage(
                ImageRecord(
                    tenant: tenant, name: name, digest: pulled.digest, rootfs: pulled.rootfs,
                    sizeBytes: pulled.sizeBytes,
                    createdAt: Date(), reference: key),
                audit: AuditEvent(
                    "image.pull", target: key, tenant: tenant,
                    details: [
                        "digest": pulled.digest.rawValue, "resolved_digest": resolved.digests[0].rawValue,
                        "registry": registry, "size_bytes": String(pulled.sizeBytes),
                        "login": login == nil ? "anonymous" : "tenant secret",
                        "signature": decision.signature, "policy_scope": decision.scope,
                    ].merging(verdict) { a, _ in a }))
            logger.info(
                "image pulled",
                metadata: ["reference": "\(key)", "digest": "\(pulled.digest)", "signature": "\(decision.signature)"])
            return rec
        }
    }

    /// The packages installed in an image (a local name, or a pulled reference), as CycloneDX.
    public func sbom(_ caller: Caller, reference: ImageReference) async throws -> CycloneDX {
        try await gate.perform(caller, .imageSBOM, target: reference.description) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let rec = try await find(tenant: tenant, reference)
            let sbom = try await Self.packages(rec.rootfs)
            return sbom.cycloneDX(image: rec.reference ?? rec.name.rawValue, digest: rec.digest)
        }
    }

    /// The SBOM of an image root, read off the caller's executor.
    static func packages(_ rootfs: String) async throws -> SBOM {
        try await Task.detached { try SBOM.scan(rootfs: rootfs) }.value
    }

    /// A tenant's image by local name (its own, then the shared ones) or by a reference it pulled.
    func find(tenant: String, _ reference: ImageReference) async throws -> ImageRecord {
        if let name = reference.localName {
            if let rec = try await store.image(tenant: tenant, name: name) { return rec }
            if let rec = try await store.image(tenant: Identity.defaultTenant, name: name) { return rec }
        } else {
            let full = reference.resolved(defaultRegistry: config.defaultRegistry)
            if let rec = try await store.image(tenant: tenant, reference: full.description) { return rec }
        }
        throw VivariumError(.imageNotFound, "no image \(reference) here (pull it first)")
    }

    /// The vulnerability gate on a pulled image: refuses it when a finding at or above the policy's
    /// severity has no live waiver; otherwise the audit details of the decision.
    func vulnerabilityVerdict(_ ref: ImageReference, digest: Digest, rootfs: String) async throws -> [String: String] {
        let gate = config.imagePolicy.vulnerabilities
        guard gate.refuse != nil else { return [:] }
        let sbom = try await Self.packages(rootfs)
        let (findings, version) = vulndb.scan(sbom)
        let (refusing, waived) = gate.judge(findings)
        if !refusing.isEmpty {
            let list = refusing.prefix(10).map {
                "\($0.advisory) (\($0.package) \($0.version), \($0.severity.rawValue))"
            }
            throw VivariumError(
                .imageRefused,
                "\(ref) (\(digest)) is refused: \(refusing.count) finding(s) at or above \(gate.refuse!.rawValue) "
                    + "without a live waiver: \(list.joined(separator: ", ")) (advisory database \(version))")
        }
        return [
            "vulndb": version, "findings": String(findings.count),
            "waived": waived.map(\.advisory).joined(separator: ","),
        ]
    }

    /// An image's findings against the imported advisories.
    public func scan(_ caller: Caller, reference: ImageReference) async throws -> ScanReport {
        try await gate.perform(caller, .imageScan, target: reference.description) {
            guard let tenant = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
            let rec = try await find(tenant: tenant, reference)
            let sbom = try await Self.packages(rec.rootfs)
            let (findings, version) = vulndb.scan(sbom)
            return ScanReport(
                reference: rec.reference ?? rec.name.rawValue, digest: rec.digest.rawValue, vulndbVersion: version,
                findings: findings)
        }
    }

    /// Imports OSV records from a path on the daemon's host: local root on the unix socket only.
    public func importAdvisories(_ caller: Caller, path: String) async throws -> VulnDBInfo {
        try await gate.perform(caller, .vulndbImport, target: path) {
            guard caller.isLocal else {
                throw VivariumError(.forbidden, "advisories are imported from a host path by local root only")
            }
            guard path.hasPrefix("/"), path.utf8.count <= 4096 else {
                throw VivariumError(.invalidArgument, "path must be an absolute path on the daemon's host")
            }
            let db = vulndb
            let (read, version) = try await Task.detached { try db.importRecords(from: path) }.value
            try await gate.audit.append([
                AuditEvent("vulndb.import", target: path, details: ["read": String(read), "version": version])
            ])
            return VulnDBInfo(advisories: db.count, version: version, read: read)
        }
    }

    /// What to sign for `reference`: the digest it resolves to in its registry now, and cosign's payload
    /// for it. The caller signs the payload with its own key (the daemon never sees it) and hands the
    /// signature to `publishSignature`.
    public func signingPayload(_ caller: Caller, reference: ImageReference) async throws -> SigningPayload {
        try await gate.perform(caller, .imageSigningPayload, target: reference.description) {
            let tenant = try writableTenant(caller, shared: false)
            let (puller, _) = try registry()
            let (full, registry) = try allowed(reference)
            let login = try await secrets.registryLogin(tenant: tenant, registry: registry)
            let resolved = try await puller.resolve(full, login: login)
            let repository = registry + "/" + full.repository
            return SigningPayload(
                reference: full.description, digest: resolved.digests[0],
                payload: Cosign.payload(repository: repository, digest: resolved.digests[0]))
        }
    }

    /// Publishes a signature the caller made over a payload of `signingPayload`, next to the image in its
    /// registry (the `sha256-<hex>.sig` tag, with the tenant's login).
    public func publishSignature(
        _ caller: Caller, reference: ImageReference, payload: Data, signature: Data
    ) async throws -> SigningPayload {
        try await gate.perform(caller, .imageSign, target: reference.description) {
            let tenant = try writableTenant(caller, shared: false)
            let (puller, _) = try registry()
            let (full, registry) = try allowed(reference)
            guard payload.count <= 4096 else {
                throw VivariumError(.invalidArgument, "a payload is at most 4096 bytes")
            }
            let claim = try Cosign.claim(payload)
            guard Cosign.names(claim.repository, registry: registry, repository: full.repository) else {
                throw VivariumError(
                    .invalidArgument, "the payload names \(claim.repository), not \(registry)/\(full.repository)")
            }
            guard (1...1024).contains(signature.count) else {
                throw VivariumError(.invalidArgument, "a signature is 1 to 1024 bytes")
            }
            let login = try await secrets.registryLogin(tenant: tenant, registry: registry)
            // The digest must be in the repository: a signature is never published for nothing.
            _ = try await puller.client.manifest(full, reference: claim.digest.rawValue, login: login)
            let tag = try await Admission.publish(
                client: puller.client, full, digest: claim.digest, payload: payload, signature: signature, login: login)
            try await gate.audit.append([
                AuditEvent(
                    "image.sign", target: full.description, tenant: tenant,
                    details: ["digest": claim.digest.rawValue, "tag": tag])
            ])
            return SigningPayload(reference: full.description, digest: claim.digest, payload: payload)
        }
    }

    public func remove(_ caller: Caller, name: ResourceName) async throws {
        try await gate.perform(caller, .imageDelete, target: name.rawValue) {
            try await remove(tenant: try writableTenant(caller, shared: false), name: name)
        }
    }

    /// The tenant whose images the caller changes: its own; the default tenant's (the shared images)
    /// only for an admin.
    func writableTenant(_ caller: Caller, shared: Bool) throws -> String {
        guard let own = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
        let tenant = shared ? Identity.defaultTenant : own
        if tenant == Identity.defaultTenant && caller.role != .admin {
            throw VivariumError(.forbidden, "only an admin changes the shared images")
        }
        return tenant
    }

    func importRootfs(
        tenant: String, path: String, name: ResourceName, format: ImportFormat
    ) async throws -> ImageRecord {
        guard path.hasPrefix("/"), path.utf8.count <= 4096 else {
            throw VivariumError(.invalidArgument, "path must be an absolute path on the daemon's host")
        }
        let real = try Self.checkedSource(path, stateDir: config.stateDir)
        var st = stat()
        guard lstat(real, &st) == 0 else { throw VivariumError(.invalidArgument, "no such file or directory: \(path)") }
        var sd = stat()
        guard stat(config.stateDir, &sd) == 0 else {
            throw VivariumError(.internalError, "cannot stat the state directory")
        }
        let isDirectory = st.st_mode & S_IFMT == S_IFDIR
        let skip = (sd.st_dev, sd.st_ino)
        return try await add(tenant: tenant, name: name, source: ["path": real, "format": format.rawValue]) {
            [self] in
            if let image = try await content.importImage(real, format: format, rules: config.unpackRules) {
                return image
            }
            if isDirectory {
                return try await content.importDirectory(real, skip: [skip], rules: config.unpackRules)
            }
            return try await content.importArchive(file: real, rules: config.unpackRules)
        }
    }

    /// The real path of an import source, refused when it is inside the state directory or contains it
    /// (the keys, the database and every sandbox's disk live there).
    static func checkedSource(_ path: String, stateDir: String) throws -> String {
        guard let resolved = realpath(path, nil) else {
            throw VivariumError(.invalidArgument, "no such file or directory: \(path)")
        }
        defer { free(resolved) }
        let real = String(cString: resolved)
        let state = (try? FileSystem.canonical(stateDir)) ?? stateDir
        func within(_ a: String, _ b: String) -> Bool { a == b || b == "/" || a.hasPrefix(b + "/") }
        if within(real, state) || within(state, real) {
            throw VivariumError(
                .forbidden, "\(real) is or holds the daemon's state directory: it cannot be imported")
        }
        return real
    }

    /// Adds an image under `name` from what `ingest` places in the content store.
    func add(
        tenant: String, name: ResourceName, source: [String: String],
        _ ingest: @escaping @Sendable () async throws -> ImageStore.Imported
    ) async throws -> ImageRecord {
        do {
            return try await locks.withLock("image:\(tenant)/\(name)") { [self] in
                try await ingesting.shared { try await addLocked(tenant: tenant, name: name, source: source, ingest) }
            }
        } catch {
            collectInBackground()
            throw error
        }
    }

    /// Asks the `ImageCollector` service for a collection: what a failed or refused ingest placed in the
    /// store leaves it, once no other ingest runs (the caller's answer does not wait for it).
    func collectInBackground() { collectionWanted.signal() }

    func addLocked(
        tenant: String, name: ResourceName, source: [String: String],
        _ ingest: @escaping @Sendable () async throws -> ImageStore.Imported
    ) async throws -> ImageRecord {
        if try await store.image(tenant: tenant, name: name) != nil {
            throw VivariumError(.alreadyExists, "an image named \(name) already exists")
        }
        let imported = try await ingest()
        let rec = try await store.insertImage(
            ImageRecord(
                tenant: tenant, name: name, digest: imported.digest, rootfs: imported.rootfs,
                sizeBytes: imported.sizeBytes, createdAt: Date()),
            audit: AuditEvent(
                "image.import", target: name.rawValue, tenant: tenant,
                details: [
                    "digest": imported.digest.rawValue, "size_bytes": String(imported.sizeBytes),
                ].merging(source) { a, _ in a }))
        logger.info("image imported", metadata: ["image": "\(name)", "digest": "\(imported.digest)"])
        return rec
    }

    func remove(tenant: String, name: ResourceName) async throws {
        try await locks.withLock("image:\(tenant)/\(name)") { [self] in
            _ = try await store.deleteImage(
                tenant: tenant, name: name, audit: AuditEvent("image.delete", target: name.rawValue, tenant: tenant))
            logger.info("image removed", metadata: ["image": "\(name)"])
        }
        _ = try await collectGarbage()
    }

    /// Removes from the content store every blob and root that no image record or sandbox names.
    @discardableResult
    public func collectGarbage() async throws -> ImageStore.Collected {
        try await ingesting.exclusive { [self] in
            await content.collect(keeping: try await store.imageDigestsInUse())
        }
    }

    /// Creates the default `base` image (static busybox) on first start.
    public func ensureBase() async throws {
        let base = Sandboxes.defaultImage
        guard try await store.image(tenant: Identity.defaultTenant, name: base) == nil else { return }
        let dir = config.imagesDir + "/tmp/base-" + randomHex(bytes: 6)
        try FileSystem.makeDirectory(dir, mode: 0o755)
        do {
            try await ImageStore.buildBusyboxRootfs(at: dir, busybox: config.busybox)
            // Built by the daemon inside its own state directory: the one source that skips the checks.
            _ = try await add(tenant: Identity.defaultTenant, name: base, source: ["source": "busybox"]) { [self] in
                try await content.importDirectory(dir, skip: [], rules: config.unpackRules)
            }
        } catch {
            try? await FileSystem.removeTree(dir)
            throw error
        }
        try await FileSystem.removeTree(dir)
    }
}
