import Foundation
import Logging
import Synchronization
import VivariumAudit
import VivariumCore
import VivariumNetwork
import VivariumOCI
import VivariumOS
import VivariumRuntime
import VivariumStore

/// The sandbox use cases: create, list, read, start, stop, delete, exec and run. Every entry point takes
/// the caller and decides through the policy table (`Gate.perform`); names resolve in the caller's tenant
/// only, so another tenant's sandbox is simply not found, and a token bound to one sandbox reaches only it.
public final class Sandboxes: Sendable {
    public static let defaultImage = ResourceName(rawValue: "base")!

    let config: EngineConfiguration
    let store: any Store
    let audit: any AuditStore
    let gate: Gate
    let runtime: any SandboxRuntime
    let exposures: Exposures
    let secrets: Secrets
    let images: Images
    let logger: Logger
    let locks = KeyedLock()
    /// Sandboxes being started, admitted to the host budget before their state says running.
    let starting = HostReservations()
    /// Execs in flight, within `EngineConfiguration.execLimits`.
    let execs: ExecAdmission
    /// Init exits nobody asked for, handled by `InitWatch` (a service of the daemon).
    let exits: AsyncStream<InitExit>
    let onExit: InitExitHandler

    init(
        config: EngineConfiguration, store: any Store, audit: any AuditStore, gate: Gate,
        runtime: any SandboxRuntime, exposures: Exposures, secrets: Secrets, images: Images, logger: Logger
    ) {
        self.images = images
        self.secrets = secrets
        self.exposures = exposures
        self.config = config
        self.store = store
        self.audit = audit
        self.gate = gate
        self.runtime = runtime
        self.logger = logger
        execs = ExecAdmission(config.execLimits)
        let (exits, sink) = AsyncStream.makeStream(of: InitExit.self)
        self.exits = exits
        onExit = { id, pid, status in sink.yield(InitExit(id: id, pid: pid, status: status)) }
    }

    // MARK: Entry points

    public func create(_ caller: Caller, name: ResourceName?, spec: SandboxSpec) async throws -> Sandbox {
        try await gate.perform(caller, .sandboxCreate, target: name?.rawValue) {
            try await checkSecretAccess(caller, name: name, labels: spec.labels)
            return try await create(tenant: try tenant(caller), name: name, spec: spec)
        }
    }

    /// Sandboxes of the tenant the caller acts in, ordered by name.
    public func list(_ caller: Caller, cursor: String?, limit: Int?) async throws -> Page<Sandbox> {
        try await gate.perform(caller, .sandboxList, target: nil) {
            let n = min(max(limit ?? 100, 1), 500)
            let after = try cursor.map { try Self.decodeCursor($0) }
            let rows = try await store.sandboxes(tenant: try tenant(caller), after: after, limit: n + 1)
            let items = rows.prefix(n).map { view($0) }
            let next = rows.count > n ? items.last.map { Self.encodeCursor($0.name.rawValue) } : nil
            return Page(items: Array(items), nextCursor: next)
        }
    }

    public func get(_ caller: Caller, name: ResourceName) async throws -> Sandbox {
        try await gate.perform(caller, .sandboxGet, target: name.rawValue) {
            let r = try await record(caller, name)
            var s = view(r)
            s.diskUsageBytes = await runtime.diskUsage(plan(r))
            s.deniedPackets = config.network?.deniedPackets(r.id)
            return s
        }
    }

    public func start(_ caller: Caller, name: ResourceName) async throws -> Sandbox {
        try await gate.perform(caller, .sandboxStart, target: name.rawValue) {
            try await locks.withLock(try lockKey(caller, name)) { [self] in
                var r = try await record(caller, name)
                if case .running = r.state { return view(r) }
                try r.state.requireStopped()
                if let budget = config.budget {
                    try budget.check(r.spec.limits)
                    try await store.reserveStart(r, budget: budget, pending: starting)
                }
                defer { starting.remove(r.id) }
                let pid: Int32
                do {
                    pid = try await runtime.boot(try await bootPlan(r), network: try attachment(r), onExit: onExit)
                } catch {
                    try? await runtime.release(plan(r))
                    throw error
                }
                try await store.updateState(
                    r.id, .running(pid: pid), audit: event("sandbox.start", r, details: ["pid": "\(pid)"]))
                r.state = .running(pid: pid)
                logger.info("sandbox started", metadata: ["sandbox": "\(name)", "pid": "\(pid)"])
                return view(r)
            }
        }
    }

    /// Changes a sandbox's egress policy; a running sandbox's takes effect at once, in one nftables
    /// transaction, before the new policy is stored.
    public func setNetwork(_ caller: Caller, name: ResourceName, _ policy: NetworkPolicy) async throws -> Sandbox {
        try await gate.perform(caller, .sandboxNetwork, target: name.rawValue) {
            try await locks.withLock(try lockKey(caller, name)) { [self] in
                let policy = try policy.validated()
                var r = try await record(caller, name)
                guard config.network != nil || policy.egress == .none else {
                    throw VivariumError(
                        .invalidArgument, "this daemon runs no sandbox network (network = off): only none is possible")
                }
                let old = r.spec.network ?? .none
                r.spec.network = policy
                if case .running(let pid) = r.state { try await attachment(r)?.attach(initPid: pid) }
                let details = [
                    "from": old.egress.rawValue, "to": policy.egress.rawValue,
                    "allow": policy.allow.map(\.description).joined(separator: ","),
                ]
                do {
                    try await store.updateSpec(r.id, r.spec, audit: event("sandbox.network", r, details: details))
                } catch {
                    var back = r
                    back.spec.network = old
                    if case .running(let pid) = r.state { try? await attachment(back)?.attach(initPid: pid) }
                    throw error
                }
                logger.info("sandbox network changed", metadata: ["sandbox": "\(name)", "egress": "\(policy.egress)"])
                return view(r)
            }
        }
    }

    public func stop(_ caller: Caller, name: ResourceName) async throws -> Sandbox {
        try await gate.perform(caller, .sandboxStop, target: name.rawValue) {
            try await locks.withLock(try lockKey(caller, name)) { [self] in
                var r = try await record(caller, name)
                if case .stopped = r.state { return view(r) }
                _ = try r.state.requireRunning()
                // The intent first, as for create, delete and exec: a stop cut off by a crash still
                // says who asked.
                try await audit.append([event("sandbox.stop", r, .started)])
                try await runtime.halt(plan(r), pid: r.state.pid, grace: nil)
                try await store.updateState(r.id, .stopped, audit: event("sandbox.stop", r))
                r.state = .stopped
                logger.info("sandbox stopped", metadata: ["sandbox": "\(name)"])
                return view(r)
            }
        }
    }

    public func delete(_ caller: Caller, name: ResourceName, force: Bool) async throws {
        try await gate.perform(caller, .sandboxDelete, target: name.rawValue) {
            _ = try await record(caller, name)  // a token bound to another sandbox finds nothing
            try await delete(tenant: try tenant(caller), name: name, force: force)
        }
    }

    /// Creates a sandbox, runs one command in it with every guarantee of exec (hardening, timeout, output
    /// caps, audit records), and with `remove` deletes it afterwards, whatever the command did.
    public func run(_ caller: Caller, name: ResourceName?, spec: SandboxSpec, command: ExecCommand, remove: Bool)
        async throws -> (Sandbox, ExecOutcome)
    {
        try await gate.perform(caller, .sandboxRun, target: name?.rawValue) {
            let t = try tenant(caller)
            let ticket = try execs.admit(tenant: t, sandbox: nil, command)
            defer { execs.release(ticket) }
            try await checkSecretAccess(caller, name: name, labels: spec.labels)
            let box = try await create(tenant: t, name: name, spec: spec)
            let outcome: ExecOutcome
            do {
                outcome = try await exec(try sandboxRecord(tenant: t, name: box.name), command)
            } catch {
                if remove { try? await delete(tenant: t, name: box.name, force: true) }
                throw error
            }
            if remove { try await delete(tenant: t, name: box.name, force: true) }
            return (box, outcome)
        }
    }

    /// Runs a command in a running sandbox and returns its output (see `exec(_:_:)` in Exec.swift).
    public func exec(_ caller: Caller, name: ResourceName, _ command: ExecCommand) async throws -> ExecOutcome {
        try await gate.perform(caller, .sandboxExec, target: name.rawValue) {
            let r = try await record(caller, name)
            let ticket = try execs.admit(tenant: r.tenant, sandbox: r.id, command)
            defer { execs.release(ticket) }
            return try await exec(r, command)
        }
    }

    public func count() async throws -> Int { try await store.sandboxCount() }

    // MARK: Inside the engine

    /// A sandbox that secrets would be delivered to reads them: whoever makes it needs `secrets:read`
    /// (write-only secrets are not read by naming a box after their binding).
    func checkSecretAccess(_ caller: Caller, name: ResourceName?, labels: [String: String]) async throws {
        guard !caller.isLocal, !caller.scopes.contains(.secretsRead) else { return }
        guard try await !secrets.covered(tenant: try tenant(caller), name: name, labels: labels) else {
            throw VivariumError(
                .forbidden,
                "secrets are bound to this sandbox's name or labels: creating it needs the secrets:read scope")
        }
    }

    /// The tenant a call acts in (the policy table already refused anything else).
    func tenant(_ caller: Caller) throws -> String { try Self.tenant(caller) }

    static func tenant(_ caller: Caller) throws -> String {
        guard let t = caller.tenant else { throw VivariumError(.unauthenticated, "authentication required") }
        return t
    }

    func lockKey(_ caller: Caller, _ name: ResourceName) throws -> String { "\(try tenant(caller))/\(name)" }

    /// A sandbox of the caller's tenant by name; a token bound to another sandbox finds nothing.
    func record(_ caller: Caller, _ name: ResourceName) async throws -> SandboxRecord {
        try await Self.record(store, caller, name)
    }

    static func record(_ store: any Store, _ caller: Caller, _ name: ResourceName) async throws -> SandboxRecord {
        let r = try await sandboxRecord(store, tenant: try tenant(caller), name: name)
        if let bound = caller.boundSandbox, bound != r.id {
            throw VivariumError(.notFound, "sandbox \(r.name) not found")
        }
        return r
    }

    func sandboxRecord(tenant: String, name: ResourceName) async throws -> SandboxRecord {
        try await Self.sandboxRecord(store, tenant: tenant, name: name)
    }

    static func sandboxRecord(_ store: any Store, tenant: String, name: ResourceName) async throws -> SandboxRecord {
        guard let r = try await store.sandbox(tenant: tenant, name: name) else {
            throw VivariumError(.notFound, "sandbox \(name) not found")
        }
        return r
    }

    func create(tenant: String, name: ResourceName?, spec: SandboxSpec) async throws -> Sandbox {
        var asked = spec
        if asked.limits.diskBytes == ResourceLimits.unsetDiskBytes { asked.limits.diskBytes = config.defaultDiskBytes }
        if asked.network == nil { asked.network = config.network == nil ? NetworkPolicy.none : .public }
        if asked.network?.egress != EgressPolicy.none, config.network == nil {
            throw VivariumError(
                .invalidArgument, "this daemon runs no sandbox network (network = off): only network none is possible")
        }
        var validated = try asked.validated()
        try config.budget?.check(validated.limits)
        // The values are sealed; the stored spec keeps the names.
        let env = validated.env
        validated.env = env.mapValues { _ in "" }
        let spec = validated
        let name = name ?? Self.generatedName()
        var found: ImageRecord?
        if let local = spec.image.localName {
            found = try await store.image(tenant: tenant, name: local)
            if found == nil { found = try await store.image(tenant: Identity.defaultTenant, name: local) }
        } else {
            // A registry reference: the digest an earlier pull pinned, or a pull now.
            found = try await images.resolve(tenant: tenant, spec.image)
        }
        guard let image = found else { throw VivariumError(.imageNotFound, "image \(spec.image) not found") }

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
                    "disk_bytes": String(spec.limits.diskBytes), "network": (spec.network ?? .none).egress.rawValue,
                    "restart": spec.restart.rawValue, "read_only": String(spec.readOnly),
                    "ttl_seconds": spec.ttlSeconds.map(String.init) ?? "none",
                    "env_keys": spec.env.keys.sorted().joined(separator: ","),
                ])
            let record = try await secrets.whileSealing {
                let sealedEnv = try await secrets.sealEnv(tenant: tenant, id: id, env)
                return try await store.insertSandbox(
                    maxSlots: config.maxSandboxes, quota: config.quota, budget: config.budget, pending: starting,
                    audit: intent
                ) {
                    slot in
                    SandboxRecord(
                        id: id, tenant: tenant, name: name, imageID: image.id, imageName: image.name,
                        imageDigest: image.digest, imageRootfs: image.rootfs, spec: spec, state: .creating,
                        uidSlot: slot, bundle: cfg.sandboxesDir + "/" + id.rawValue,
                        cgroupPath: "/\(cfg.cgroupParent)/\(id.rawValue)", createdAt: now,
                        expiresAt: spec.ttlSeconds.map { now.addingTimeInterval(Double($0)) }, sealedEnv: sealedEnv)
                }
            }
            let box = plan(record)
            do {
                try runtime.prepare(box)
                var boot = box
                boot.env = env
                try await secrets.deliverAll(to: record, uidBase: uidBase(record))
                let pid = try await runtime.boot(boot, network: try attachment(record), onExit: onExit)
                try await store.updateState(
                    id, .running(pid: pid), audit: event("sandbox.create", record, details: ["pid": String(pid)]))
                var r = record
                r.state = .running(pid: pid)
                logger.info("sandbox created", metadata: ["sandbox": "\(name)", "id": "\(id)", "pid": "\(pid)"])
                return view(r)
            } catch {
                logger.warning("create failed, rolling back", metadata: ["sandbox": "\(name)", "error": "\(error)"])
                let failure = event("sandbox.create", record, .failed, details: ["error": "\(error)"])
                do {
                    try await runtime.destroy(box, released: false)
                    secrets.sandboxRemoved(id)
                    try await store.deleteSandbox(id, audit: failure)
                } catch {
                    // Keep the record (and its uid slot) until the host is clean: the reconciler retries.
                    try? await store.updateState(id, .deleting, audit: failure)
                    logger.error("rollback incomplete", metadata: ["sandbox": "\(name)", "error": "\(error)"])
                }
                throw VivariumError.wrap(error, .runtimeFailure, "create failed")
            }
        }
    }

    func delete(tenant: String, name: ResourceName, force: Bool) async throws {
        try await locks.withLock("\(tenant)/\(name)") { [self] in
            let r = try await sandboxRecord(tenant: tenant, name: name)
            if case .running = r.state, !force {
                throw VivariumError(.invalidState, "sandbox \(name) is running: stop it first, or force the removal")
            }
            try await remove(r, action: "sandbox.delete", details: ["force": "\(force)"])
            logger.info("sandbox deleted", metadata: ["sandbox": "\(name)"])
        }
    }

    /// Marks a sandbox deleting (so that a crash mid-way is finished at the next start), tears its host
    /// resources down and drops the record. Recorded as `action`: its intent, then its outcome.
    func remove(_ r: SandboxRecord, action: String, details: [String: String] = [:]) async throws {
        try await store.updateState(r.id, .deleting, audit: event(action, r, .started, details: details))
        let box = plan(r)
        var released = false
        if case .running(let pid) = r.state {
            do {
                try await runtime.halt(box, pid: pid, grace: .seconds(2))
                released = true
            } catch {
                logger.warning("stopping for delete failed", metadata: ["sandbox": "\(r.name)", "error": "\(error)"])
            }
        }
        try await runtime.destroy(box, released: released)
        secrets.sandboxRemoved(r.id)
        try await store.deleteSandbox(r.id, audit: event(action, r))
        await exposures.sandboxRemoved(r.id)
    }

    /// An audit record about a sandbox: its name is the target, its tenant owns the record.
    func event(
        _ action: String, _ r: SandboxRecord, _ outcome: AuditOutcome = .ok, details: [String: String] = [:]
    ) -> AuditEvent {
        AuditEvent(
            action, target: r.name.rawValue, tenant: r.tenant, outcome: outcome,
            details: details.merging(["id": r.id.rawValue]) { a, _ in a })
    }

    /// The outcome of something that already happened: a failure to record it cannot undo it, so it is
    /// logged (the intent record is in the trail).
    func recordOutcome(_ e: AuditEvent) async {
        do { try await audit.append([e]) } catch {
            logger.critical("cannot record an outcome", metadata: ["action": "\(e.action)", "error": "\(error)"])
        }
    }

    func view(_ r: SandboxRecord) -> Sandbox {
        Sandbox(
            id: r.id, tenant: r.tenant, name: r.name, imageDigest: r.imageDigest, spec: r.spec, state: r.state,
            createdAt: r.createdAt, expiresAt: r.expiresAt, hostUIDBase: uidBase(r),
            address: (r.spec.network ?? .none).egress == .none ? nil : try? config.network?.address(slot: r.uidSlot))
    }

    /// The sandbox's place on the network, plugged in at every boot; nil when the daemon runs no network.
    func attachment(_ r: SandboxRecord) throws -> (any NetworkAttachment)? {
        guard let network = config.network else { return nil }
        return try network.attachment(id: r.id, tenant: r.tenant, slot: r.uidSlot, policy: r.spec.network ?? .none)
    }

    func uidBase(_ r: SandboxRecord) -> Int64 { config.uidBase(slot: r.uidSlot) }

    /// What the runtime needs to run a sandbox, environment values aside (see `bootPlan`).
    func plan(_ r: SandboxRecord) -> BoxPlan {
        BoxPlan(
            id: r.id, hostname: r.name.rawValue, bundle: r.bundle, cgroupPath: r.cgroupPath, imageRootfs: r.imageRootfs,
            uidBase: uidBase(r), limits: r.spec.limits, env: [:], readOnly: r.spec.readOnly,
            extraMounts: (config.network.map { [Self.resolvConf($0.config.resolvConf)] } ?? []) + [secrets.mount(r.id)])
    }

    /// The plan to boot a sandbox with: its environment unsealed, its secrets delivered (a secret that
    /// does not decrypt stops the boot: it was tampered with).
    func bootPlan(_ r: SandboxRecord) async throws -> BoxPlan {
        var p = plan(r)
        p.env = try await secrets.openEnv(r)
        try await secrets.deliverAll(to: r, uidBase: p.uidBase)
        return p
    }

    /// The plan to adopt a running sandbox with: its secrets delivered again (what a crash between a new
    /// version and its delivery missed; a secret that does not open keeps the file the box has) and its
    /// environment for the execs to come (one that no longer opens leaves its execs without it rather
    /// than the box unmanaged).
    func adoptPlan(_ r: SandboxRecord) async -> BoxPlan {
        var p = plan(r)
        do { try await secrets.deliverAll(to: r, uidBase: p.uidBase, strict: false) } catch {
            logger.error(
                "cannot deliver an adopted sandbox's secrets", metadata: ["sandbox": "\(r.name)", "error": "\(error)"])
        }
        do { p.env = try await secrets.openEnv(r) } catch {
            logger.error(
                "cannot open an adopted sandbox's environment", metadata: ["sandbox": "\(r.name)", "error": "\(error)"])
        }
        return p
    }

    /// The resolv.conf naming the gateway's DNS forwarder, read-only in every box of a daemon with a network.
    static func resolvConf(_ path: String) -> RuntimeSpec.Mount {
        RuntimeSpec.Mount(
            destination: "/etc/resolv.conf", type: "bind", source: path,
            options: ["bind", "ro", "nosuid", "nodev", "noexec"])
    }

    /// An init exit nobody asked for: the sandbox stops, or restarts under `restart: always`. The pid is
    /// compared under the sandbox's lock: a create or start in progress records the pid before this runs.
    func initExited(_ id: SandboxID, pid: Int32, status: ExitStatus?) async {
        guard let r = try? await store.sandbox(id: id) else { return }
        _ = try? await locks.withLock("\(r.tenant)/\(r.name)") { [self] in
            guard let cur = try await store.sandbox(id: id), cur.state.pid == pid else { return }
            logger.warning(
                "sandbox init exited",
                metadata: ["sandbox": "\(cur.name)", "status": "\(status.map { "\($0)" } ?? "unknown")"])
            var box = plan(cur)
            try await runtime.release(box)
            let why = ["reason": "init exited", "status": status.map { "\($0)" } ?? "unknown"]
            guard cur.spec.restart == .always else {
                return try await store.updateState(id, .stopped, audit: event("sandbox.stopped", cur, details: why))
            }
            do {
                box = try await bootPlan(cur)
                let newPid = try await runtime.boot(box, network: try attachment(cur), onExit: onExit)
                try await store.updateState(
                    id, .running(pid: newPid),
                    audit: event("sandbox.restart", cur, details: why.merging(["pid": "\(newPid)"]) { a, _ in a }))
                logger.info("sandbox restarted", metadata: ["sandbox": "\(cur.name)", "pid": "\(newPid)"])
            } catch {
                try? await runtime.release(box)
                try await store.updateState(
                    id, .stopped,
                    audit: event(
                        "sandbox.restart", cur, .failed, details: why.merging(["error": "\(error)"]) { a, _ in a }))
                logger.error("restart failed", metadata: ["sandbox": "\(cur.name)", "error": "\(error)"])
            }
        }
    }

    static func generatedName() -> ResourceName { ResourceName(rawValue: "sb-" + randomHex(bytes: 4))! }

    static func encodeCursor(_ name: String) -> String { Data(name.utf8).base64EncodedString() }
    static func decodeCursor(_ c: String) throws -> String {
        guard c.utf8.count <= 128, let d = Data(base64Encoded: c), let s = String(data: d, encoding: .utf8),
            ResourceName.isValid(s)
        else { throw VivariumError(.invalidArgument, "invalid cursor") }
        return s
    }
}
