import Foundation
import Glibc
import Logging
import ServiceLifecycle
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumImages
import VivariumOS
import VivariumRuntime
import VivariumSecrets
import VivariumStore

/// The use cases of Vivarium, composed: the only module that puts store, images, runtime and OS
/// together. Every entry point takes a `Caller` and decides through the one policy table (`Gate`).
public final class Engine: Sendable {
    public let config: EngineConfiguration
    public let gate: Gate
    public let sandboxes: Sandboxes
    public let exposures: Exposures
    public let secrets: Secrets
    let deniedEgress: DeniedEgress?
    public let images: Images
    public let identity: Identity
    public let audit: AuditTrail
    let tokens: TokenService

    /// The collaborators are made by the composition root (`vivarium serve`, or a test).
    public init(
        config: EngineConfiguration, store: any Store, identityStore: any IdentityStore, auditStore: any AuditStore,
        tokens: TokenService, runtime: any SandboxRuntime, keys: any KeyProvider, content: ImageStore,
        registry: RegistryClient? = nil, auditKey: AuditKey,
        auditKeyCreated: Bool, checkpointer: AuditCheckpointer, limits: AbuseLimits, logger: Logger
    ) throws {
        self.config = config
        self.tokens = tokens
        gate = Gate(tokens: tokens, audit: auditStore, limits: limits, logger: logger)
        exposures = Exposures(config: config, store: store, gate: gate, logger: logger)
        deniedEgress = config.network.map {
            DeniedEgress(network: $0, store: store, audit: auditStore, logger: logger)
        }
        secrets = Secrets(config: config, keys: keys, store: store, audit: auditStore, gate: gate, logger: logger)
        images = try Images(
            config: config, store: store, content: content,
            puller: registry.map { ImagePuller(store: content, client: $0, rules: config.unpackRules, logger: logger) },
            secrets: secrets, gate: gate, logger: logger)
        sandboxes = Sandboxes(
            config: config, store: store, audit: auditStore, gate: gate, runtime: runtime, exposures: exposures,
            secrets: secrets, images: images, logger: logger)
        identity = Identity(
            store: identityStore, tokens: tokens, gate: gate, sandboxes: sandboxes, images: images, logger: logger)
        audit = AuditTrail(
            store: auditStore, key: auditKey, keyCreated: auditKeyCreated, checkpointer: checkpointer, gate: gate,
            logger: logger)
    }

    /// Makes the state directory's layout and installs the init there (read-only, reachable by every
    /// sandbox's id range) and the shim of detached commands (root's only), so that sandboxes never
    /// depend on where the binary was installed.
    public static func prepareStateDirectory(_ config: EngineConfiguration, initBinary: Data, shimBinary: Data)
        throws
    {
        for d in [config.stateDir, config.sandboxesDir] { try FileSystem.makeDirectory(d, mode: 0o700) }
        try prepareRuntimeDirectory(config)
        // The sandboxes dir must be traversable by the sandboxes' id ranges (the overlay upper dirs).
        try FileSystem.makeDirectory(config.sandboxesDir, mode: 0o711)
        _ = chmod(config.stateDir, 0o711)
        try checkTraversable(config.sandboxesDir)
        try FileSystem.makeDirectory(config.stateDir + "/init", mode: 0o711)
        if FileManager.default.contents(atPath: config.initBinary) != initBinary {
            try FileSystem.writeAtomically(initBinary, to: config.initBinary, mode: 0o555)
        }
        if FileManager.default.contents(atPath: config.shimBinary) != shimBinary {
            try FileSystem.writeAtomically(shimBinary, to: config.shimBinary, mode: 0o500)
        }
        try FileSystem.makeDirectory(config.auditDir, mode: 0o700)
    }

    /// The runtime directory: a tmpfs the daemon mounts (kept across its restarts, gone at a reboot), for
    /// everything that holds secret or environment values: runtime specs, exec process files, crun's
    /// state and each sandbox's `/run/secrets`. Sandbox ids must traverse it to reach their secrets.
    static func prepareRuntimeDirectory(_ config: EngineConfiguration) throws {
        try FileSystem.makeDirectory(config.runtimeDir, mode: 0o711)
        if !Mounts.isTmpfs(config.runtimeDir) {
            try Mounts.tmpfs(config.runtimeDir, sizeBytes: config.runtimeBytes, mode: 0o711)
        }
        _ = chmod(config.runtimeDir, 0o711)
        try checkTraversable(config.runtimeDir)
        try FileSystem.makeDirectory(config.crunRoot, mode: 0o700)
        try FileSystem.makeDirectory(config.specsDir, mode: 0o711)
        // The secrets get a tmpfs of their own: a tenant's many secrets never fill the one crun needs.
        try FileSystem.makeDirectory(config.secretsDir, mode: 0o711)
        if !Mounts.isTmpfs(config.secretsDir) {
            try Mounts.tmpfs(config.secretsDir, sizeBytes: config.runtimeBytes, mode: 0o711)
        }
    }

    /// Sandboxes run as unprivileged host ids; crun, inside their user namespace, must reach the bundle.
    static func checkTraversable(_ path: String) throws {
        var p = ""
        for part in path.split(separator: "/") {
            p += "/" + part
            var st = stat()
            guard stat(p, &st) == 0 else { continue }
            guard st.st_mode & 0o001 != 0 else {
                throw VivariumError(
                    .invalidArgument,
                    "\(p) must be searchable by others (chmod o+x): sandboxes run as unprivileged host ids and crun must reach their root through it"
                )
            }
        }
    }

    /// The engine's background work, for the daemon's ServiceGroup: what follows an init's unexpected
    /// exit, the image store's collection, the TTL sweeper, the reconciler's drift check, and the refresh of the revocation set (tokens
    /// are refused while it is stale).
    public var backgroundServices: [any Service] {
        [
            InitWatch(sandboxes: sandboxes), KeyRewrap(secrets: secrets), ImageCollector(images: images),
            PeriodicService(every: config.ttlSweepInterval) { _ = await self.sandboxes.sweepExpired() },
            PeriodicService(every: .seconds(30)) { await self.sandboxes.checkDrift() },
            PeriodicService(every: .seconds(5)) { await self.tokens.refreshRevocations() },
        ] + (deniedEgress.map { d in [PeriodicService(every: .seconds(5)) { await d.look() }] } ?? [])
    }
}
