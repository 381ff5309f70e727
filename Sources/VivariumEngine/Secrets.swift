import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumImages
import VivariumOCI
import VivariumOS
import VivariumRuntime
import VivariumSecrets
import VivariumStore

/// The secret use cases: write-only values sealed under their own data keys, delivered as files to the
/// sandboxes they are bound to, and the key-encryption keys behind them (rotate, re-wrap, retire). A
/// value is never returned, logged or recorded: the trail names secrets by name and version.
public final class Secrets: Sendable {
    let config: EngineConfiguration
    let envelope: Envelope
    let files: SecretFiles
    let store: any Store
    let audit: any AuditStore
    let gate: Gate
    let logger: Logger
    /// One per tenant: sets, deletes and deliveries of a tenant's secrets never interleave, so a delivery
    /// cannot put back what a delete or a new version just replaced.
    let locks = KeyedLock()
    /// Wakes the re-wrap service: a rotation happened.
    let rotated = WakeSignal()
    /// Values being sealed and not yet stored: a key is not retired under them.
    let sealing = Mutex(0)
    public static let maxSecretsPerTenant = 256
    public static let maxVersions = 32

    init(
        config: EngineConfiguration, keys: any KeyProvider, store: any Store, audit: any AuditStore, gate: Gate,
        logger: Logger
    ) {
        self.config = config
        envelope = Envelope(keys: keys)
        files = SecretFiles(root: config.secretsDir)
        self.store = store
        self.audit = audit
        self.gate = gate
        self.logger = logger
    }

    // MARK: Entry points

    /// Stores a new version (the first is 1) and replaces the file in every sandbox it is bound to,
    /// atomically; a sandbox no longer bound loses the file. Returns it with the versions now kept.
    public func set(_ caller: Caller, name: SecretName, value: SecretValue, binding: SecretBinding) async throws
        -> (Secret, versions: Int64)
    {
        try await gate.perform(caller, .secretSet, target: name.rawValue) {
            let tenant = try Sandboxes.tenant(caller)
            let binding = try binding.validated()
            guard (1...SecretBinding.maxValueBytes).contains(value.count) else {
                throw VivariumError(
                    .invalidArgument, "a secret's value is 1 byte to \(SecretBinding.maxValueBytes >> 20) MiB")
            }
            return try await locks.withLock(Self.lockKey(tenant)) { [self] in
                let all = try await store.secrets(tenant: tenant)
                let current = all.first(where: { $0.0.name == name })
                let kept = current?.versions ?? 0
                if kept >= Self.maxVersions {
                    throw VivariumError(
                        .quotaExceeded,
                        "secret \(name) keeps \(kept) versions, the most: prune them (secret rm --prune)")
                }
                if !all.contains(where: { $0.0.name == name }), all.count >= Self.maxSecretsPerTenant {
                    throw VivariumError(.quotaExceeded, "tenant \(tenant) holds \(all.count) secrets, the most it may")
                }
                let version = (current?.0.version ?? 0) + 1
                let s = try await whileSealing {
                    let sealed = try await envelope.seal(
                        value, SealContext(.secret, tenant: tenant, name: name.rawValue, version: version))
                    let s = Secret(
                        tenant: tenant, name: name, version: version, binding: binding, keyID: sealed.key.keyID,
                        createdAt: Date())
                    try await store.insertSecret(
                        s, sealed: sealed,
                        audit: AuditEvent(
                            "secret.set", target: name.rawValue, tenant: tenant,
                            details: [
                                "version": String(version), "key_id": sealed.key.keyID, "bytes": String(value.count),
                                "sandboxes": binding.sandboxes.map(\.rawValue).joined(separator: ","),
                                "labels": binding.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                                    .joined(separator: ","),
                                "gid": String(binding.gid),
                            ]))
                    return s
                }
                logger.info(
                    "secret set", metadata: ["secret": "\(name)", "version": "\(version)", "tenant": "\(tenant)"])
                await redeliver(s, value)
                return (s, kept + 1)
            }
        }
    }

    /// The newest version of each of the tenant's secrets: names, versions, bindings, never a value.
    public func list(_ caller: Caller) async throws -> [(Secret, versions: Int64)] {
        try await gate.perform(caller, .secretList, target: nil) {
            try await store.secrets(tenant: try Sandboxes.tenant(caller))
        }
    }

    /// Deletes every version (the file leaves every sandbox), or with `keepLatest` prunes the older ones.
    public func delete(_ caller: Caller, name: SecretName, keepLatest: Bool) async throws {
        try await gate.perform(caller, .secretDelete, target: name.rawValue) {
            let tenant = try Sandboxes.tenant(caller)
            try await locks.withLock(Self.lockKey(tenant)) { [self] in
                let n = try await store.deleteSecret(
                    tenant: tenant, name: name, keepLatest: keepLatest,
                    audit: AuditEvent(
                        "secret.delete", target: name.rawValue, tenant: tenant,
                        details: ["prune": String(keepLatest)]))
                logger.info("secret deleted", metadata: ["secret": "\(name)", "versions": "\(n)"])
                guard !keepLatest else { return }
                // Stopped boxes too: their directory is kept for the next boot.
                for r in try await store.allSandboxes() where r.tenant == tenant && files.remove(r.id, name) {
                    await record(
                        AuditEvent(
                            "secret.withdraw", target: name.rawValue, tenant: tenant,
                            details: ["sandbox": r.name.rawValue, "id": r.id.rawValue]))
                }
            }
        }
    }

    public func keys(_ caller: Caller) async throws -> KMSInfo {
        try await gate.perform(caller, .kmsShow, target: nil) { try await keyInfo() }
    }

    /// A new key-encryption key, current at once; every data key is re-wrapped by it in the background.
    public func rotate(_ caller: Caller) async throws -> KMSInfo {
        try await gate.perform(caller, .kmsRotate, target: nil) {
            let id = try await envelope.keys.rotate()
            try await audit.append([AuditEvent("kms.rotate", target: id, details: ["provider": envelope.keys.kind])])
            logger.info("key-encryption key rotated", metadata: ["key": "\(id)"])
            rotated.signal()
            return try await keyInfo()
        }
    }

    /// Removes a key-encryption key; refused while any data key is still wrapped by it.
    public func retire(_ caller: Caller, keyID: String) async throws -> KMSInfo {
        try await gate.perform(caller, .kmsRetire, target: keyID) {
            guard sealing.withLock({ $0 }) == 0 else {
                throw VivariumError(.invalidState, "a value is being sealed right now: try the retire again")
            }
            let n = try await store.wrappedKeyCounts()[keyID] ?? 0
            guard n == 0 else {
                throw VivariumError(
                    .invalidState,
                    "\(n) data keys are still wrapped by \(keyID): rotate, and retire it once kms ls shows none")
            }
            try await envelope.keys.retire(keyID)
            try await audit.append([AuditEvent("kms.retire", target: keyID, details: ["provider": envelope.keys.kind])])
            return try await keyInfo()
        }
    }

    // MARK: Inside the engine

    static func lockKey(_ tenant: String) -> String { "secrets/" + tenant }

    /// Runs a seal and the insert of what it sealed, counted in `sealing`: a key that wrapped a data key
    /// still on its way into the store is not retired.
    func whileSealing<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        sealing.withLock { $0 += 1 }
        defer { sealing.withLock { $0 -= 1 } }
        return try await body()
    }

    /// Whether secrets of the tenant would be delivered to a sandbox of this name and labels.
    func covered(tenant: String, name: ResourceName?, labels: [String: String]) async throws -> Bool {
        try await store.secrets(tenant: tenant).contains { $0.0.binding.covers(name: name, labels: labels) }
    }

    func keyInfo() async throws -> KMSInfo {
        let counts = try await store.wrappedKeyCounts()
        let current = try await envelope.keys.currentKeyID()
        var ids = try await envelope.keys.keyIDs()
        // A data key wrapped by a key the provider no longer lists is shown too: it cannot be opened.
        ids += counts.keys.filter { !ids.contains($0) }.sorted()
        return KMSInfo(
            provider: envelope.keys.kind,
            keys: ids.map { KMSInfo.Key(id: $0, wrapped: counts[$0] ?? 0, current: $0 == current) })
    }

    /// Re-wraps every data key not wrapped by the current key (read again for each batch, so a second
    /// rotation mid-way is followed), in batches; one record says how many. A data key that does not
    /// re-wrap (tampered with) is skipped and recorded, and keeps its key from being retired.
    func rewrap() async {
        var done = 0
        var failed: [SealedRow] = []
        var current = ""
        do {
            while !Task.isCancelled {
                current = try await envelope.keys.currentKeyID()
                let batch = try await store.wrappedKeys(notBy: current, limit: 100 + failed.count)
                    .filter { !failed.contains($0.0) }
                if batch.isEmpty { break }
                for (row, old) in batch {
                    do {
                        try await store.replaceWrappedKey(row, old: old, new: try await envelope.keys.rewrap(old))
                        done += 1
                    } catch {
                        failed.append(row)
                        logger.error("a data key does not re-wrap", metadata: ["row": "\(row)", "error": "\(error)"])
                    }
                }
            }
        } catch {
            logger.error(
                "re-wrapping data keys stopped; it is retried at the next rotation or start",
                metadata: ["error": "\(error)"])
        }
        guard done > 0 || !failed.isEmpty else { return }
        await record(
            AuditEvent(
                "kms.rewrap", target: current, outcome: failed.isEmpty ? .ok : .failed,
                details: ["data_keys": String(done), "failed": String(failed.count), "provider": envelope.keys.kind]))
        logger.info("data keys re-wrapped", metadata: ["key": "\(current)", "count": "\(done)"])
    }

    /// Seals the environments of sandboxes stored in plain text by an earlier version; returns how many.
    public func sealLegacyEnvironments() async throws -> Int {
        var n = 0
        for r in try await store.allSandboxes()
        where r.sealedEnv == nil && r.spec.env.values.contains(where: { !$0.isEmpty }) {
            guard let sealed = try await sealEnv(tenant: r.tenant, id: r.id, r.spec.env) else { continue }
            var spec = r.spec
            spec.env = spec.env.mapValues { _ in "" }
            try await store.sealEnv(r.id, spec: spec, sealed: sealed)
            n += 1
        }
        guard n > 0 else { return 0 }
        try await store.scrubLog()
        await record(AuditEvent("secret.seal-env", details: ["sandboxes": String(n)]))
        return n
    }

    func registryLogin(tenant: String, registry: String) async throws -> RegistryLogin? {
        guard let (s, sealed) = try await store.secret(tenant: tenant, name: try .registryLogin(registry)) else {
            return nil
        }
        let value = try await envelope.open(sealed, context(s))
        guard let login = try? JSONDecoder().decode(RegistryLogin.self, from: Data(value.bytes)) else {
            throw VivariumError(
                .invalidArgument, "secret \(s.name) is not a registry login: set it with vivarium registry login")
        }
        return login
    }

    /// Seals a new sandbox's environment values (nil when it has none).
    func sealEnv(tenant: String, id: SandboxID, _ env: [String: String]) async throws -> SealedValue? {
        guard !env.isEmpty else { return nil }
        let json = try JSONEncoder().encode(env)
        return try await envelope.seal(
            SecretValue(json), SealContext(.env, tenant: tenant, name: id.rawValue, version: 1))
    }

    /// A sandbox's environment, values included, for booting it.
    func openEnv(_ r: SandboxRecord) async throws -> [String: String] {
        guard let sealed = r.sealedEnv else { return r.spec.env }
        let value = try await envelope.open(
            sealed, SealContext(.env, tenant: r.tenant, name: r.id.rawValue, version: 1))
        guard let env = try? JSONDecoder().decode([String: String].self, from: Data(value.bytes)) else {
            throw VivariumError(.secretUnreadable, "the environment of sandbox \(r.name) is damaged")
        }
        return env
    }

    /// Fills a sandbox's `/run/secrets`: every secret of its tenant that covers it, and nothing else.
    /// `strict` (a boot) fails on a secret that does not open; otherwise (adopting a running box) that
    /// secret's file stays as it was and the failure is recorded.
    func deliverAll(to r: SandboxRecord, uidBase: Int64, strict: Bool = true) async throws {
        try await locks.withLock(Self.lockKey(r.tenant)) { [self] in
            try files.prepare(r.id, uidBase: uidBase)
            var events: [AuditEvent] = []
            var covered: Set<SecretName> = []
            for (s, _) in try await store.secrets(tenant: r.tenant)
            where s.binding.covers(name: r.name, labels: r.spec.labels) {
                covered.insert(s.name)
                do {
                    guard let (s, sealed) = try await store.secret(tenant: r.tenant, name: s.name) else { continue }
                    let value = try await envelope.open(sealed, context(s))
                    try files.write(r.id, s.name, value, uidBase: uidBase, gid: s.binding.gid)
                    events.append(delivery(s, r))
                } catch {
                    if strict { throw error }
                    var e = delivery(s, r)
                    e.outcome = .failed
                    e.details["error"] = "\(error)"
                    events.append(e)
                    logger.error(
                        "cannot deliver a secret",
                        metadata: ["secret": "\(s.name)", "sandbox": "\(r.name)", "error": "\(error)"])
                }
            }
            for name in files.names(r.id) where !covered.contains(name) { files.remove(r.id, name) }
            if !events.isEmpty { try await audit.append(events) }
        }
    }

    func sandboxRemoved(_ id: SandboxID) { files.removeAll(id) }

    /// The mount that shows a sandbox its secrets.
    func mount(_ id: SandboxID) -> RuntimeSpec.Mount {
        RuntimeSpec.Mount(
            destination: "/run/secrets", type: "bind", source: files.directory(id),
            options: ["rbind", "ro", "nosuid", "nodev", "noexec"])
    }

    func context(_ s: Secret) -> SealContext {
        SealContext(.secret, tenant: s.tenant, name: s.name.rawValue, version: s.version)
    }

    func delivery(_ s: Secret, _ r: SandboxRecord) -> AuditEvent {
        AuditEvent(
            "secret.deliver", target: s.name.rawValue, tenant: s.tenant,
            details: ["version": String(s.version), "sandbox": r.name.rawValue, "id": r.id.rawValue])
    }

    /// The new version into every sandbox of the tenant that has a secrets directory (running, booting
    /// or stopped) and is covered; out of those no longer covered. The caller holds the tenant's lock.
    func redeliver(_ s: Secret, _ value: SecretValue) async {
        do {
            for r in try await store.allSandboxes() where r.tenant == s.tenant && files.isPrepared(r.id) {
                let base = config.uidBase(slot: r.uidSlot)
                if s.binding.covers(name: r.name, labels: r.spec.labels) {
                    do {
                        try files.write(r.id, s.name, value, uidBase: base, gid: s.binding.gid)
                        await record(delivery(s, r))
                    } catch {
                        logger.error(
                            "cannot deliver a secret",
                            metadata: ["secret": "\(s.name)", "sandbox": "\(r.name)", "error": "\(error)"])
                        var e = delivery(s, r)
                        e.outcome = .failed
                        await record(e)
                    }
                } else if files.remove(r.id, s.name) {
                    await record(
                        AuditEvent(
                            "secret.withdraw", target: s.name.rawValue, tenant: s.tenant,
                            details: ["sandbox": r.name.rawValue, "id": r.id.rawValue, "version": String(s.version)]))
                }
            }
        } catch {
            logger.error("cannot list sandboxes for a secret delivery", metadata: ["error": "\(error)"])
        }
    }

    func record(_ e: AuditEvent) async {
        do { try await audit.append([e]) } catch {
            logger.critical("cannot record a secret event", metadata: ["action": "\(e.action)", "error": "\(error)"])
        }
    }
}

/// Re-wraps data keys after a rotation, and once at start (a rotation a crash interrupted).
struct KeyRewrap: Service {
    let secrets: Secrets

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await secrets.rewrap()
            await cancelWhenGracefulShutdown { await secrets.rotated.wait() }
        }
    }
}
