import ArgumentParser
import Foundation
import Glibc
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOSSL
import ServiceLifecycle
import VivariumAPI
import VivariumAssets
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumImages
import VivariumNetwork
import VivariumOS
import VivariumRuntime
import VivariumSecrets
import VivariumStore

struct Serve: Verb {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract:
            "Run the daemon: the API on a unix socket (and TLS with --listen), the reconciler, the TTL sweeper, the audit checkpointer.",
        discussion: """
            Needs root. Settings come from flags, then VIVARIUM_* environment variables, then the config file, \
            then defaults (see `vivarium config show`). SIGTERM or SIGINT stop the daemon gracefully and leave \
            sandboxes running; the next `vivarium serve` adopts them.
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "First host uid of this instance's sandbox id ranges (env VIVARIUM_UID_BASE).")
    var uidBase: Int64?
    @Option(help: "A static init binary to install instead of the one built into vivarium (env VIVARIUM_INIT).")
    var initBinary: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String?
    @Option(help: "Also listen on TCP HOST:PORT, with TLS (env VIVARIUM_LISTEN).")
    var listen: String?
    @Flag(help: "Serve plain HTTP on --listen instead of TLS; refused unless the address is loopback.")
    var insecureHTTP = false

    func perform() async throws {
        var overrides: [String: String] = [:]
        if let uidBase { overrides["uid_base"] = String(uidBase) }
        if let initBinary { overrides["init"] = initBinary }
        if let logLevel { overrides["log_level"] = logLevel }
        if let listen { overrides["listen"] = listen }
        if insecureHTTP { overrides["insecure_http"] = "true" }
        try await Self.serve(try Settings.resolve(global, overrides: overrides))
    }

    /// The composition root: every collaborator of the engine is made here.
    static func serve(_ s: Settings) async throws {
        let level = Logger.Level(rawValue: s.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "vivarium")
        guard geteuid() == 0 else { throw VivariumError(.unavailable, "vivarium serve must run as root") }
        let tcp = try s.listen.map { try Listener.parse($0, insecure: s.insecureHTTP) }

        try FileSystem.makeDirectory(s.stateDir, mode: 0o711)
        // Mount bookkeeping compares paths with /proc/self/mountinfo: use the canonical form only.
        var s = s
        s.stateDir = try FileSystem.canonical(s.stateDir)
        let stateLock = try StateDirLock(directory: s.stateDir)
        raiseOpenFileLimit()
        // The OOM killer takes a sandbox before the daemon: the daemon runs at -1000 and its boxes at 0.
        // Without CAP_SYS_RESOURCE the daemon cannot go below 0, so its boxes start at +500 instead.
        // cgroup v1 has no memory.min: the budget's memory reserve is the rest of the protection.
        var boxOOMScore = 0
        do {
            try HostFacts.setOOMScoreAdjust(-1000)
        } catch {
            boxOOMScore = 500
            logger.warning("\(error); sandbox processes start at oom_score_adj \(boxOOMScore) instead")
        }
        let socketLock = try prepareSocketDirectory(s.socket)

        var configuration = EngineConfiguration(
            stateDir: s.stateDir, crunBinary: s.crun, busybox: s.busybox, uidBase: s.uidBase,
            maxSandboxes: s.maxSandboxes, ttlSweepInterval: .seconds(s.ttlSweepSeconds),
            stopTimeout: .seconds(s.stopTimeoutSeconds), quota: s.quota)
        configuration.budget = s.budget
        configuration.execLimits = s.execLimits
        configuration.unpackRules = s.unpackRules
        configuration.defaultDiskBytes = s.diskDefault
        if let dir = s.runtimeDir { configuration.runtimeDir = dir }
        configuration.defaultRegistry = s.registryDefault
        configuration.allowedRegistries = s.registryAllowed
        if let path = s.imagePolicy { configuration.imagePolicy = try ImagePolicyFile.load(path) }
        // The disk pool: every sandbox's writable layer in a btrfs subvolume under a qgroup limit. Where it
        // cannot be made the daemon refuses to start (saying why) unless the operator set disk_pool = off.
        let pool: BtrfsPool?
        if let source = s.diskPoolSource {
            pool = try await BtrfsPool.open(source, mountPoint: s.stateDir + "/pool", logger: logger)
            configuration.budget?.poolBytes = pool?.sizeBytes
        } else {
            pool = nil
            configuration.budget?.poolBytes = nil
            logger.warning(
                "disk_pool = off: sandbox disk use is NOT limited; a sandbox can fill the host's disk, the database and the audit trail with it"
            )
        }
        if s.network == "bridge" {
            let network = try await BridgeNetwork.open(
                .init(
                    range: s.networkRange, instance: configuration.instance, namespace: s.networkNetns,
                    resolvConf: s.stateDir + "/resolv.conf", dnsUpstream: s.networkDNS),
                logger: logger)
            guard configuration.maxSandboxes <= network.capacity else {
                throw VivariumError(
                    .invalidArgument,
                    "network_range \(s.networkRange) holds \(network.capacity) sandboxes, fewer than max_sandboxes")
            }
            configuration.network = network
        }
        configuration.ingressDomain = s.ingressDomain
        let ingressListener = try s.ingress.map { try Listener.parse($0, insecure: false) }
        if ingressListener != nil, configuration.network == nil {
            throw VivariumError(.invalidArgument, "the ingress needs the sandbox network (network = bridge)")
        }
        configuration.auditCheckpointInterval = .seconds(s.auditCheckpointSeconds)
        configuration.auditCheckpointRecords = Int64(s.auditCheckpointRecords)
        configuration.auditExport = s.auditExport
        configuration.auditSyslog = s.auditSyslog
        let config = configuration
        try config.validate()
        try UIDRangeRegistry(path: s.uidRegistry).claim(
            stateDir: config.stateDir, base: config.uidBase, count: Int64(config.maxSandboxes) * 65536)
        try becomeSubreaper()
        let initBinary: Data
        if let path = s.initBinary {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw VivariumError(.unavailable, "cannot read the init binary at \(path)")
            }
            initBinary = data
        } else {
            initBinary = Assets.initBinary
        }
        try Engine.prepareStateDirectory(config, initBinary: initBinary, shimBinary: Assets.shimBinary)
        try FileSystem.makeDirectory(config.databaseDir, mode: 0o700)
        let store = try SQLiteStore(path: config.databasePath, audit: s.auditMode, logger: logger)
        let kms = try await keyProvider(s, store: store, stateDir: config.stateDir, logger: logger)
        let runtime = try HostRuntime(
            layout: RuntimeLayout(
                sandboxesDir: config.sandboxesDir, specsDir: config.specsDir, trashDir: config.stateDir + "/trash",
                cgroupParent: config.cgroupParent, initBinary: config.initBinary, shimBinary: config.shimBinary,
                stopTimeout: config.stopTimeout,
                oomScoreAdjust: boxOOMScore),
            oci: Crun(binary: config.crunBinary, root: config.crunRoot, cgroupMode: config.cgroupMode, logger: logger),
            cgroups: CgroupHost(mode: config.cgroupMode), pool: pool, logger: logger)
        let tokenConfig = TokenService.Configuration(
            accessLifetime: TimeInterval(min(s.accessTokenSeconds, s.maxAccessTokenSeconds)),
            maxAccessLifetime: TimeInterval(s.maxAccessTokenSeconds))
        let keys = try await SigningKeys(
            dir: config.stateDir + "/keys", maxTokenLifetime: tokenConfig.maxAccessLifetime)
        let tokens = TokenService(config: tokenConfig, keys: keys, store: store, logger: logger)
        await tokens.refreshRevocations()
        let (auditKey, auditKeyCreated) = try AuditKey.loadOrCreate(at: config.auditDir + "/signing.key")
        let checkpointer = try await AuditCheckpointer(
            store: store, key: auditKey,
            sinks: [JSONLinesCheckpointFile(path: config.auditExportPath)]
                + (config.auditSyslog ? [SyslogCheckpointSink()] : []),
            interval: config.auditCheckpointInterval, everyRecords: config.auditCheckpointRecords, logger: logger)
        let engine = try Engine(
            config: config, store: store, identityStore: store, auditStore: store, tokens: tokens, runtime: runtime,
            keys: kms, content: try ImageStore(root: config.imagesDir, logger: logger),
            registry: try RegistryClient(
                options: RegistryOptions(
                    caFile: s.registryCA, plainHTTP: s.registryPlainHTTP, mirrors: s.registryMirrors)),
            auditKey: auditKey,
            auditKeyCreated: auditKeyCreated, checkpointer: checkpointer,
            limits: AbuseLimits(
                authFailuresPerMinute: Double(s.authFailuresPerMinute), requestsPerSecond: Double(s.requestsPerSecond),
                requestBurst: Double(s.requestBurst), adminAllowlist: s.adminAllowlist),
            logger: logger)

        try await engine.images.ensureBase()
        // Tenants whose sandboxes reach each other, before the sandboxes are attached again.
        for t in try await store.tenants() where t.intraTenant {
            try config.network?.setIntraTenant(t.name.rawValue, true)
        }
        let legacy = await runtime.removeLegacySpecs(crunRoot: config.stateDir + "/run/crun")
        if legacy > 0 {
            logger.notice("removed \(legacy) runtime specs and containers an earlier version kept on disk")
        }
        let sealed = try await engine.secrets.sealLegacyEnvironments()
        if sealed > 0 { logger.notice("sealed the environments of \(sealed) sandboxes stored in plain text") }
        let report = try await engine.sandboxes.reconcile()
        logger.info("reconciled", metadata: ["result": "\(report)"])
        try await engine.images.collectGarbage()
        for w in s.weakened {
            let recorded = s.auditMode == .off ? "the audit trail is off" : "recorded in the audit trail"
            logger.warning("\(w.key) = \(w.value) weakens a default (\(w.secureDefault)); \(recorded)")
        }
        try await engine.audit.recordStart(
            s.weakened,
            details: [
                "state_dir": config.stateDir, "listen": s.listen ?? "none", "reconciled": "\(report)",
                "checkpoints": config.auditExportPath + (config.auditSyslog ? ", syslog" : ""),
            ])

        let socketPath = s.socket
        let local = API.router(engine: engine, openAPI: Assets.openAPI)
        let app = Application(
            router: local, server: API.server(router: local, trust: SourceTrust()),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: nil),
            onServerRunning: { _ in
                _ = chmod(socketPath, 0o600)
                let banner = """
                    vivarium \(VivariumVersion.string) serving on unix:\(socketPath)
                      state \(config.stateDir) · instance \(config.instance) · cgroups \(config.cgroupMode.rawValue) · uid base \(config.uidBase)
                      try:  vivarium run --rm -- uname -a
                            vivarium create demo && vivarium exec demo -- id

                    """
                FileHandle.standardOutput.write(Data(banner.utf8))
            },
            logger: logger)
        // The checkpointer comes first: services stop in reverse order, so it outlives the listeners.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] =
            [.init(service: engine.audit.checkpointer), .init(service: app)]
            + (engine.backgroundServices + [TrashCollector(runtime: runtime, logger: logger)]).map {
                .init(service: $0)
            }
        // One certificate for the API's listener and the ingress: the operator's, or one made once.
        func identity(host: String) throws -> TLSIdentity {
            try s.tlsCert.map { try TLSIdentity.load(certFile: $0, keyFile: s.tlsKey ?? "") }
                ?? TLSIdentity.selfSigned(dir: config.stateDir + "/tls", host: host)
        }
        if let tcp {
            let trust = SourceTrust(trustedProxies: s.trustedProxies)
            let tls: TLSIdentity? = tcp.insecure ? nil : try identity(host: tcp.host)
            services.append(
                .init(
                    service: try tcp.application(
                        router: API.router(engine: engine, trust: trust, openAPI: Assets.openAPI), tls: tls,
                        trust: trust, logger: logger)))
        }
        if let l = ingressListener {
            let tls = try identity(host: l.host)
            let hosts = try s.ingressCerts.map { try HostCertificates.load(dir: $0) }
            let ingress = Ingress(
                host: l.host, port: l.port,
                tls: try NIOSSLContext(
                    configuration: try hosts?.serverConfiguration(fallback: tls) ?? tls.serverConfiguration()),
                resolver: engine.exposures, logger: logger)
            try await ingress.start()
            try await engine.exposures.serve(ingress)
            FileHandle.standardOutput.write(
                Data(
                    """
                    vivarium: ingress on https://\(l.host):\(ingress.port ?? l.port) (vivarium expose NAME PORT publishes a port)
                      certificate SHA-256 fingerprint \(tls.fingerprint)

                    """.utf8))
            services.append(.init(service: IngressService(ingress: ingress)))
        }
        var groupConfig = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // Open connections (a followed audit feed, a long exec) get 10 s to finish, then are cancelled:
        // a stop never hangs on a client.
        groupConfig.maximumGracefulShutdownDuration = .seconds(10)
        groupConfig.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: groupConfig)
        try await group.run()
        await engine.audit.recordStop()
        logger.info("stopped; sandboxes keep running and are adopted at the next start")
        withExtendedLifetime((stateLock, socketLock)) {}
    }

    static func budgetRows(_ b: HostBudget) -> [(String, String)] {
        [
            ("budget_sandbox_pids", String(b.sandboxPids)),
            ("budget_sandbox_memory", Quantity.formatBytes(b.sandboxMemoryBytes)),
            ("budget_sandbox_cpus", String(Double(b.sandboxMilliCPUs) / 1000)),
            ("budget_tenant_pids", String(b.tenantPids)), ("budget_total_pids", String(b.totalPids)),
            ("budget_total_memory", Quantity.formatBytes(b.totalMemoryBytes)),
            ("budget_total_cpus", String(Double(b.totalMilliCPUs) / 1000)),
            ("budget_sandbox_disk", b.poolBytes.map { Quantity.formatBytes($0) } ?? "unlimited"),
            ("budget_total_disk", b.totalDiskBytes.map { Quantity.formatBytes($0) } ?? "unlimited"),
        ]
    }

    /// One pidfd per sandbox init and three fds per running child: lift the soft limit to the hard one.
    static func raiseOpenFileLimit() {
        var rl = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &rl) == 0, rl.rlim_cur < rl.rlim_max else { return }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(resource, &rl)
    }

    /// The socket lives in a 0700 directory (local root is the administrator) and is guarded by a lock
    /// file, so that a second daemon cannot unlink a live socket.
    static func prepareSocketDirectory(_ socket: String) throws -> StateDirLock {
        let dir = (socket as NSString).deletingLastPathComponent
        var st = stat()
        if stat(dir, &st) != 0 {
            try FileSystem.makeDirectory(dir, mode: 0o700)
        } else {
            guard st.st_uid == 0, st.st_mode & 0o077 == 0 else {
                throw VivariumError(
                    .invalidArgument, "the socket directory \(dir) must be owned by root with mode 0700")
            }
        }
        do {
            return try StateDirLock(directory: dir)
        } catch {
            throw VivariumError(.unavailable, "another vivarium daemon serves on \(socket)")
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Show the effective settings.", subcommands: [Show.self])

    struct Show: Verb {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Print the effective daemon settings (flags > environment > config file > defaults).")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func perform() async throws {
            let s = try Settings.resolve(global)
            var engine = EngineConfiguration(stateDir: s.stateDir, uidBase: s.uidBase, maxSandboxes: s.maxSandboxes)
            if let dir = s.runtimeDir { engine.runtimeDir = dir }
            var rows: [(String, String)] = [
                ("config_file", s.configFile ?? "(none)"), ("state_dir", s.stateDir), ("socket", s.socket),
                ("crun", s.crun), ("init", s.initBinary ?? "(built in)"), ("busybox", s.busybox),
                ("uid_base", String(engine.uidBase)), ("max_sandboxes", String(s.maxSandboxes)),
                ("log_level", s.logLevel), ("stop_timeout_seconds", String(s.stopTimeoutSeconds)),
                ("ttl_sweep_seconds", String(s.ttlSweepSeconds)), ("uid_registry", s.uidRegistry),
                ("instance", engine.instance),
                ("cgroup_mode", engine.cgroupMode.rawValue), ("cgroup_parent", engine.cgroupParent),
                ("crun_root", engine.crunRoot), ("audit_mode", s.auditMode.rawValue),
                ("audit_checkpoint_seconds", String(s.auditCheckpointSeconds)),
                ("audit_checkpoint_records", String(s.auditCheckpointRecords)),
                ("audit_export", s.auditExport ?? engine.auditExportPath), ("audit_syslog", String(s.auditSyslog)),
                ("disk_pool", s.diskPool.isEmpty ? s.stateDir + "/pool.img" : s.diskPool),
                ("disk_default", Quantity.formatBytes(s.diskDefault)),
                ("disk_pool_size", s.diskPool.isEmpty ? Quantity.formatBytes(s.diskPoolSize) : "(the pool's)"),
                ("network", s.network), ("network_range", s.networkRange.description),
                ("network_netns", s.networkNetns ?? "(the daemon's)"),
                ("network_dns", s.networkDNS ?? "(the host's first nameserver)"),
                ("ingress", s.ingress ?? "none"), ("ingress_domain", s.ingressDomain),
                ("ingress_certs", s.ingressCerts ?? "none"),
                ("registry_default", s.registryDefault), ("registry_ca", s.registryCA ?? "(the system's)"),
                ("registry_plain_http", s.registryPlainHTTP.sorted().joined(separator: ",")),
                (
                    "registry_mirrors",
                    s.registryMirrors.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.joined(separator: ","))" }
                        .joined(separator: ";")
                ),
                ("registry_allowed", s.registryAllowed?.joined(separator: ",") ?? "(any)"),
                ("runtime_dir", engine.runtimeDir), ("kms", s.kms),
                ("kms_keyring", s.kmsKeyring ?? s.stateDir + "/kms/keyring.json"),
                ("kms_address", s.kmsAddress ?? "none"), ("kms_mount", s.kmsMount), ("kms_key", s.kmsKey),
                ("kms_token_file", s.kmsTokenFile ?? "none"), ("kms_ca", s.kmsCA ?? "(the system's)"),
            ]
            rows +=
                Serve.budgetRows(s.budget) + [
                    ("max_execs_per_sandbox", String(s.execLimits.perSandbox)),
                    ("max_execs_per_tenant", String(s.execLimits.perTenant)), ("max_execs", String(s.execLimits.total)),
                    ("exec_output_budget", Quantity.formatBytes(s.execLimits.outputBytes)),
                    ("image_max_bytes", Quantity.formatBytes(s.unpackRules.maxBytes)),
                    ("image_max_entries", String(s.unpackRules.maxEntries)),
                    ("image_max_ratio", String(s.unpackRules.maxRatio)),
                    ("image_keep_setid", String(s.unpackRules.keepSetID)),
                ]
            if json {
                try printJSON(Dictionary(uniqueKeysWithValues: rows))
            } else {
                for (k, v) in rows { print("\(k) = \(v)") }
            }
        }
    }
}

/// The key-encryption keys: the local keyring (made on a first start only) or a Transit server, which
/// must answer now. Data keys wrapped by a key the provider does not hold stop the start: the secrets
/// they seal would be unreadable.
func keyProvider(_ s: Settings, store: SQLiteStore, stateDir: String, logger: Logger) async throws
    -> any KeyProvider
{
    let wrapped = try await store.wrappedKeyCounts()
    let keys: any KeyProvider
    if s.kms == "transit" {
        guard let address = s.kmsAddress, let tokenFile = s.kmsTokenFile else {
            throw VivariumError(.invalidArgument, "kms = transit needs kms_address and kms_token_file")
        }
        keys = try await TransitKeyProvider.connect(
            .init(address: address, mount: s.kmsMount, key: s.kmsKey, tokenFile: tokenFile, caFile: s.kmsCA))
    } else {
        let path = s.kmsKeyring ?? stateDir + "/kms/keyring.json"
        let (ring, created) = try LocalKeyring.open(path: path, mayCreate: wrapped.isEmpty)
        if created { logger.notice("created the keyring \(path): back it up, secrets cannot be read without it") }
        keys = ring
    }
    let held = Set(try await keys.keyIDs())
    if let lost = wrapped.keys.sorted().first(where: { !held.contains($0) }) {
        throw VivariumError(
            .unavailable,
            "\(wrapped[lost] ?? 0) data keys are wrapped by \(lost), which the \(keys.kind) key provider does not hold: "
                + "configure the provider that has it")
    }
    return keys
}

/// Keeps the ingress open for the daemon's life.
struct IngressService: Service {
    let ingress: Ingress

    func run() async throws {
        try? await gracefulShutdown()
        await ingress.stop()
    }
}
