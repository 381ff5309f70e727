import Foundation
import Glibc
import Logging
import Synchronization
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumImages
import VivariumOS
import VivariumRuntime
import VivariumStore

/// The use cases of Vivarium: the only module that composes store, images, runtime and OS.
public final class Engine: Sendable {
    public static let defaultTenant = "default"
    public static let defaultImage = ResourceName(rawValue: "base")!

    public let config: EngineConfiguration
    let store: any Store
    let identity: any IdentityStore
    public let audit: any AuditStore
    public let auditKey: AuditKey
    /// The audit key was made at this start (recorded with the start).
    let auditKeyCreated: Bool
    public let checkpointer: AuditCheckpointer
    public let tokens: TokenService
    let runtime: any OCIRuntime
    let images: ImageStore
    let logger: Logger
    let locks = KeyedLock()
    /// Sandboxes whose init is being stopped on purpose: their exit is not a crash.
    let stopping = Mutex<Set<SandboxID>>([])
    let swapAccounting: Bool
    /// Upper-dir usage per sandbox, walked at most every `diskUsageTTL` (a walk is O(files)).
    let diskUsageCache = Mutex<[SandboxID: (bytes: Int64, at: ContinuousClock.Instant)]>([:])
    /// Idle exec cgroups per sandbox.
    let execCgroupPool = Mutex<[SandboxID: [ExecCgroup]]>([:])
    /// The cgroup hierarchies sandboxes live in, listed once: the v2 root, or each v1 controller's.
    let cgroupHierarchies: [String]
    static let diskUsageTTL = Duration.seconds(5)

    public init(
        config: EngineConfiguration, store: any Store, identity: any IdentityStore, audit: any AuditStore,
        tokens: TokenService, runtime: any OCIRuntime, logger: Logger
    ) throws {
        self.identity = identity
        self.audit = audit
        self.tokens = tokens
        var config = config
        config.initBinary = try Self.installInit(config)
        self.config = config
        self.store = store
        self.runtime = runtime
        self.logger = logger
        for d in [config.stateDir, config.sandboxesDir, config.stateDir + "/run", config.crunRoot] {
            try FileSystem.makeDirectory(d, mode: 0o700)
        }
        // The sandboxes dir must be traversable by the sandboxes' id ranges (the overlay upper dirs).
        try FileSystem.makeDirectory(config.sandboxesDir, mode: 0o711)
        _ = chmod(config.stateDir, 0o711)
        try Self.checkTraversable(config.sandboxesDir)
        self.images = try ImageStore(root: config.imagesDir, logger: logger)
        try FileSystem.makeDirectory(config.auditDir, mode: 0o700)
        (auditKey, auditKeyCreated) = try AuditKey.loadOrCreate(at: config.auditDir + "/signing.key")
        checkpointer = try AuditCheckpointer(
            store: audit, key: auditKey,
            sinks: [JSONLinesCheckpointFile(path: config.auditExportPath)]
                + (config.auditSyslog ? [SyslogCheckpointSink()] : []),
            interval: config.auditCheckpointInterval, everyRecords: config.auditCheckpointRecords, logger: logger)
        switch config.cgroupMode {
        case .unified:
            // memory.swap.max exists in non-root cgroups when the kernel accounts swap.
            let children = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
            swapAccounting = children.contains { FileSystem.exists("/sys/fs/cgroup/\($0)/memory.swap.max") }
        case .legacy, .hybrid:
            swapAccounting = FileSystem.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        }
        cgroupHierarchies =
            config.cgroupMode == .unified
            ? ["/sys/fs/cgroup"]
            : ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).filter {
                $0 != "unified"
            }.sorted().map { "/sys/fs/cgroup/" + $0 }
        if !swapAccounting {
            logger.warning("swap is not accounted on this host: sandboxes get swappiness 0 instead of a swap limit")
        }
    }

    /// Copies the init into the state directory (read-only, reachable by every sandbox's id range), so
    /// that sandboxes never depend on where the binary was built or installed, nor on it staying put.
    static func installInit(_ config: EngineConfiguration) throws -> String {
        let dir = config.stateDir + "/init"
        try FileSystem.makeDirectory(dir, mode: 0o711)
        let dest = dir + "/vivarium-init"
        guard let data = FileManager.default.contents(atPath: config.initBinary) else {
            throw VivariumError(.unavailable, "cannot read the init binary at \(config.initBinary)")
        }
        if FileManager.default.contents(atPath: dest) != data {
            try FileSystem.writeAtomically(data, to: dest, mode: 0o555)
        }
        return dest
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

    // MARK: Sandboxes

    public func create(tenant: String, _ req: CreateSandboxRequest) async throws -> SandboxInfo {
        let name = try req.name.map { try ResourceName.parse($0, what: "sandbox name") } ?? Self.generatedName()
        let imageName = try ResourceName.parse(req.image ?? Self.defaultImage.rawValue, what: "image name")
        var limits = ResourceLimits.default
        if let m = req.memoryBytes { limits.memoryBytes = m }
        if let c = req.milliCpus { limits.milliCPUs = c }
        if let p = req.pids { limits.pids = p }
        limits = try limits.validated()
        let env = req.env ?? [:]
        try FieldRules.validateEnv(env)
        let labels = req.labels ?? [:]
        try FieldRules.validateLabels(labels)
        if let ttl = req.ttlSeconds, !(1...(366 * 86400)).contains(ttl) {
            throw VivariumError(.invalidArgument, "ttl must be between 1 second and 366 days")
        }
        let restart =
            try req.restart.map {
                guard let r = RestartPolicy(rawValue: $0) else {
                    throw VivariumError(.invalidArgument, "restart must be 'always' or 'never'")
                }
                return r
            } ?? .never
        let spec = SandboxSpec(
            image: imageName, limits: limits, env: env, labels: labels, readOnly: req.readOnly ?? false,
            restart: restart, ttlSeconds: req.ttlSeconds)
        guard
            let image = try store.image(tenant: tenant, name: imageName)
                ?? store.image(tenant: Self.defaultTenant, name: imageName)
        else { throw VivariumError(.imageNotFound, "image \(imageName) not found") }

        return try await locks.withLock("\(tenant)/\(name)") { [self] in
            let id = SandboxID.random()
            let now = Date()
            let cfg = config
            let intent = AuditEvent(
                "sandbox.create", target: name.rawValue, tenant: tenant, outcome: .started,
                details: [
                    "id": id.rawValue, "image": image.name.rawValue, "image_digest": image.digest.rawValue,
                    "memory_bytes": String(spec.limits.memoryBytes),
                    "milli_cpus": String(spec.limits.milliCPUs), "pids": String(spec.limits.pids),
                    "restart": restart.rawValue, "read_only": String(spec.readOnly),
                    "ttl_seconds": spec.ttlSeconds.map(String.init) ?? "none",
                    "env_keys": env.keys.sorted().joined(separator: ","),
                ])
            let record = try store.insertSandbox(maxSlots: config.maxSandboxes, quota: config.quota, audit: intent) {
                slot in
                SandboxRecord(
                    id: id, tenant: tenant, name: name, imageID: image.id, imageName: image.name,
                    imageDigest: image.digest, imageRootfs: image.rootfs, spec: spec, state: .creating,
                    uidSlot: slot, bundle: cfg.sandboxesDir + "/" + id.rawValue,
                    cgroupPath: "/\(cfg.cgroupParent)/\(id.rawValue)", createdAt: now,
                    expiresAt: spec.ttlSeconds.map { now.addingTimeInterval(Double($0)) })
            }
            do {
                try prepareDirectories(record)
                let pid = try await boot(record)
                try store.updateState(
                    id, .running(pid: pid), audit: event("sandbox.create", record, details: ["pid": String(pid)]))
                var r = record
                r.state = .running(pid: pid)
                logger.info("sandbox created", metadata: ["sandbox": "\(name)", "id": "\(id)", "pid": "\(pid)"])
                return info(r)
            } catch {
                logger.warning("create failed, rolling back", metadata: ["sandbox": "\(name)", "error": "\(error)"])
                let failure = event("sandbox.create", record, .failed, details: ["error": "\(error)"])
                do {
                    try await destroyHost(record)
                    try store.deleteSandbox(id, audit: failure)
                } catch {
                    // Keep the record (and its uid slot) until the host is clean: the reconciler retries.
                    try? store.updateState(id, .deleting, audit: failure)
                    logger.error("rollback incomplete", metadata: ["sandbox": "\(name)", "error": "\(error)"])
                }
                throw VivariumError.wrap(error, .runtimeFailure, "create failed")
            }
        }
    }

    public func list(tenant: String?, cursor: String?, limit: Int?) throws -> Page<SandboxInfo> {
        let n = min(max(limit ?? 100, 1), 500)
        let after = try cursor.map { try Self.decodeCursor($0) }
        let rows = try store.sandboxes(tenant: tenant, after: after, limit: n + 1)
        let items = rows.prefix(n).map { info($0) }
        let next = rows.count > n ? items.last.map { Self.encodeCursor($0.name) } : nil
        return Page(items: Array(items), nextCursor: next)
    }

    public func get(tenant: String, name: String) async throws -> SandboxInfo {
        let r = try record(tenant: tenant, name: name)
        var i = info(r)
        i.diskUsageBytes = await diskUsage(r)
        return i
    }

    public func start(tenant: String, name: String) async throws -> SandboxInfo {
        let n = try ResourceName.parse(name, what: "sandbox name")
        return try await locks.withLock("\(tenant)/\(n)") { [self] in
            var r = try record(tenant: tenant, name: name)
            if case .running = r.state { return info(r) }
            try r.state.requireStopped()
            let pid: Int32
            do {
                pid = try await boot(r)
            } catch {
                try? await releaseHost(r)
                throw error
            }
            try store.updateState(
                r.id, .running(pid: pid), audit: event("sandbox.start", r, details: ["pid": "\(pid)"]))
            r.state = .running(pid: pid)
            logger.info("sandbox started", metadata: ["sandbox": "\(n)", "pid": "\(pid)"])
            return info(r)
        }
    }

    public func stop(tenant: String, name: String) async throws -> SandboxInfo {
        let n = try ResourceName.parse(name, what: "sandbox name")
        return try await locks.withLock("\(tenant)/\(n)") { [self] in
            var r = try record(tenant: tenant, name: name)
            if case .stopped = r.state { return info(r) }
            _ = try r.state.requireRunning()
            try await halt(r)
            try store.updateState(r.id, .stopped, audit: event("sandbox.stop", r))
            r.state = .stopped
            logger.info("sandbox stopped", metadata: ["sandbox": "\(n)"])
            return info(r)
        }
    }

    public func delete(tenant: String, name: String, force: Bool) async throws {
        let n = try ResourceName.parse(name, what: "sandbox name")
        try await locks.withLock("\(tenant)/\(n)") { [self] in
            let r = try record(tenant: tenant, name: name)
            if case .running = r.state, !force {
                throw VivariumError(.invalidState, "sandbox \(n) is running: stop it first, or force the removal")
            }
            try await remove(r, action: "sandbox.delete", details: ["force": "\(force)"])
            logger.info("sandbox deleted", metadata: ["sandbox": "\(n)"])
        }
    }

    /// Marks a sandbox deleting (so that a crash mid-way is finished at the next start), tears its host
    /// resources down and drops the record. Recorded as `action`: its intent, then its outcome.
    func remove(_ r: SandboxRecord, action: String, details: [String: String] = [:]) async throws {
        try store.updateState(r.id, .deleting, audit: event(action, r, .started, details: details))
        stopping.withLock { _ = $0.insert(r.id) }
        defer { stopping.withLock { _ = $0.remove(r.id) } }
        if case .running = r.state { try? await halt(r, grace: .seconds(2)) }
        try await destroyHost(r)
        try store.deleteSandbox(r.id, audit: event(action, r))
    }

    /// An audit record about a sandbox: its name is the target, its tenant owns the record.
    func event(
        _ action: String, _ r: SandboxRecord, _ outcome: AuditOutcome = .ok, details: [String: String] = [:]
    ) -> AuditEvent {
        AuditEvent(
            action, target: r.name.rawValue, tenant: r.tenant, outcome: outcome,
            details: details.merging(["id": r.id.rawValue]) { a, _ in a })
    }

    func record(tenant: String, name: String) throws -> SandboxRecord {
        let n = try ResourceName.parse(name, what: "sandbox name")
        guard let r = try store.sandbox(tenant: tenant, name: n) else {
            throw VivariumError(.notFound, "sandbox \(n) not found")
        }
        return r
    }

    func info(_ r: SandboxRecord) -> SandboxInfo {
        SandboxInfo(
            id: r.id.rawValue, name: r.name.rawValue, tenant: r.tenant, image: r.imageName.rawValue,
            imageDigest: r.imageDigest.rawValue, state: r.state.name, pid: r.state.pid,
            memoryBytes: r.spec.limits.memoryBytes, milliCpus: r.spec.limits.milliCPUs, pids: r.spec.limits.pids,
            env: r.spec.env, labels: r.spec.labels, readOnly: r.spec.readOnly, restart: r.spec.restart.rawValue,
            createdAt: r.createdAt, expiresAt: r.expiresAt, hostUidBase: hostUIDBase(r), diskUsageBytes: nil)
    }

    func diskUsage(_ r: SandboxRecord) async -> Int64 {
        let now = ContinuousClock.now
        if let c = diskUsageCache.withLock({ $0[r.id] }), now - c.at < Self.diskUsageTTL { return c.bytes }
        let bytes = await FileSystem.diskUsage(r.upperDir)
        diskUsageCache.withLock { cache in
            if cache.count > 4 * config.maxSandboxes { cache.removeAll() }
            cache[r.id] = (bytes, now)
        }
        return bytes
    }

    func hostUIDBase(_ r: SandboxRecord) -> Int64 { config.uidBase + Int64(r.uidSlot) * HardenedSpec.idRangeSize }

    static func generatedName() -> ResourceName { ResourceName(rawValue: "sb-" + randomHex(bytes: 4))! }

    static func encodeCursor(_ name: String) -> String { Data(name.utf8).base64EncodedString() }
    static func decodeCursor(_ c: String) throws -> String {
        guard c.utf8.count <= 128, let d = Data(base64Encoded: c), let s = String(data: d, encoding: .utf8),
            ResourceName.isValid(s)
        else { throw VivariumError(.invalidArgument, "invalid cursor") }
        return s
    }

    // MARK: Host work

    func prepareDirectories(_ r: SandboxRecord) throws {
        let base = hostUIDBase(r)
        // Only root and the sandbox's own id range may enter its bundle: the upper dir and the mounted
        // root inside hold the tenant's files.
        try FileSystem.makeDirectory(r.bundle, mode: 0o710, owner: (0, gid_t(base)))
        try FileSystem.makeDirectory(r.lowerMount, mode: 0o755)
        try FileSystem.makeDirectory(r.rootfsMount, mode: 0o755)
        try FileSystem.makeDirectory(r.upperDir, mode: 0o755, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(r.workDir, mode: 0o700, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(r.bundle + "/exec", mode: 0o700)
    }

    /// Mounts the root (idmapped image as overlay lower, the sandbox's upper), writes the hardened
    /// bundle and runs crun create + start. Returns the init's host pid.
    func boot(_ r: SandboxRecord) async throws -> Int32 {
        let base = hostUIDBase(r)
        let mounted = Set(Mounts.mounts(under: r.bundle))  // one read of the mount table
        if !mounted.contains(r.rootfsMount) {
            if !mounted.contains(r.lowerMount) {
                let userns = try UserNamespace(base: base, size: HardenedSpec.idRangeSize)
                try Mounts.idmappedBind(source: r.imageRootfs, target: r.lowerMount, userns: userns, readOnly: true)
            }
            try Mounts.overlay(lower: r.lowerMount, upper: r.upperDir, work: r.workDir, target: r.rootfsMount)
        }
        let spec = HardenedSpec(
            hostname: r.name.rawValue, rootfs: r.rootfsMount, readOnly: r.spec.readOnly, hostUIDBase: base,
            limits: r.spec.limits, env: r.spec.env, cgroupsPath: r.cgroupPath, initBinary: config.initBinary,
            swapAccounting: swapAccounting
        ).build()
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: r.bundle + "/config.json", durable: false)
        let pid = try await runtime.create(id: r.id.rawValue, bundle: r.bundle)
        guard watchInit(r.id, pid: pid) else {
            throw VivariumError(.runtimeFailure, "cannot watch the sandbox's init (out of file descriptors?)")
        }
        try await runtime.start(id: r.id.rawValue)
        return pid
    }

    /// Stops the init (TERM, then KILL after the grace period) and releases crun's container and the mounts.
    func halt(_ r: SandboxRecord, grace: Duration? = nil) async throws {
        stopping.withLock { _ = $0.insert(r.id) }
        defer { stopping.withLock { _ = $0.remove(r.id) } }
        if let pid = r.state.pid, Self.processAlive(pid) {
            let exited = ExitSignal()
            if Reaper.shared.watch(pid: pid, onExit: { _ in exited.fire() }) {
                try? await runtime.kill(id: r.id.rawValue, signal: SIGTERM)
                if !(await exited.wait(timeout: grace ?? config.stopTimeout)) {
                    try? await runtime.kill(id: r.id.rawValue, signal: SIGKILL)
                    _ = await exited.wait(timeout: .seconds(5))
                }
            }
        }
        try await releaseHost(r)
    }

    /// crun delete --force and unmount; keeps the sandbox's directories (its upper dir is its disk).
    func releaseHost(_ r: SandboxRecord) async throws {
        try await runtime.delete(id: r.id.rawValue, force: true)
        removeCgroups(r)
        try Mounts.unmountAll(under: r.bundle)
    }

    /// A sandbox's cgroup directory in each hierarchy (whether crun made it there or not).
    func sandboxCgroups(_ r: SandboxRecord) -> [String] { cgroupHierarchies.map { $0 + r.cgroupPath } }

    /// Removes what crun leaves of a sandbox's cgroups: the exec cgroups below it, then its own (both
    /// are empty once the init is gone, since the PID namespace died with it).
    func removeCgroups(_ r: SandboxRecord) {
        execCgroupPool.withLock { $0[r.id] = nil }
        for root in sandboxCgroups(r) where FileSystem.exists(root) {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where e.hasPrefix("exec-") {
                rmdir(root + "/" + e)
            }
            rmdir(root)
        }
    }

    /// Removes everything a sandbox holds on the host: crun container, cgroup, mounts, bundle.
    func destroyHost(_ r: SandboxRecord) async throws {
        try await releaseHost(r)
        try await FileSystem.removeTree(r.bundle)
    }

    /// Watches a sandbox's init: an exit nobody asked for stops the sandbox, or restarts it under
    /// `restart: always`.
    @discardableResult
    func watchInit(_ id: SandboxID, pid: Int32) -> Bool {
        let ok = Reaper.shared.watch(pid: pid) { [self] status in
            guard !stopping.withLock({ $0.contains(id) }) else { return }
            Task { await self.initExited(id, pid: pid, status: status) }
        }
        if !ok { logger.error("cannot watch sandbox init", metadata: ["id": "\(id)", "pid": "\(pid)"]) }
        return ok
    }

    /// An init exit nobody asked for. The pid is compared under the sandbox's lock: a create or start
    /// in progress records the pid before this runs.
    func initExited(_ id: SandboxID, pid: Int32, status: ExitStatus?) async {
        guard let r = try? store.sandbox(id: id) else { return }
        _ = try? await locks.withLock("\(r.tenant)/\(r.name)") { [self] in
            guard let cur = try store.sandbox(id: id), cur.state.pid == pid else { return }
            logger.warning(
                "sandbox init exited",
                metadata: ["sandbox": "\(cur.name)", "status": "\(status.map { "\($0)" } ?? "unknown")"])
            try await releaseHost(cur)
            let why = ["reason": "init exited", "status": status.map { "\($0)" } ?? "unknown"]
            guard cur.spec.restart == .always else {
                return try store.updateState(id, .stopped, audit: event("sandbox.stopped", cur, details: why))
            }
            do {
                let newPid = try await boot(cur)
                try store.updateState(
                    id, .running(pid: newPid),
                    audit: event("sandbox.restart", cur, details: why.merging(["pid": "\(newPid)"]) { a, _ in a }))
                logger.info("sandbox restarted", metadata: ["sandbox": "\(cur.name)", "pid": "\(newPid)"])
            } catch {
                try? await releaseHost(cur)
                try store.updateState(
                    id, .stopped,
                    audit: event(
                        "sandbox.restart", cur, .failed, details: why.merging(["error": "\(error)"]) { a, _ in a }))
                logger.error("restart failed", metadata: ["sandbox": "\(cur.name)", "error": "\(error)"])
            }
        }
    }

    /// True when `pid` exists and is not a zombie.
    static func processAlive(_ pid: Int32) -> Bool {
        guard let st = processState(pid) else { return false }
        return st != "Z" && st != "X"
    }
}

/// A one-shot event with a timed wait.
final class ExitSignal: Sendable {
    private struct State {
        var fired = false
        var next = 0
        var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    }
    private let state = Mutex(State())

    func fire() {
        let ws = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.fired = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in ws { w.resume(returning: true) }
    }

    /// True if it fired before the timeout ran out.
    func wait(timeout: Duration) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let id = state.withLock { s -> Int? in
                if s.fired { return nil }
                s.next += 1
                s.waiters[s.next] = c
                return s.next
            }
            guard let id else { return c.resume(returning: true) }
            Task {
                try? await Task.sleep(for: timeout)
                if let w = self.state.withLock({ $0.waiters.removeValue(forKey: id) }) { w.resume(returning: false) }
            }
        }
    }
}

extension Engine {
    public func sandboxCount() throws -> Int { try store.sandboxCount() }
}
