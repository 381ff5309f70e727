import Foundation
import Logging
import Synchronization
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumImages
import VivariumOCI
import VivariumOS
import VivariumRuntime
import VivariumSecrets
import VivariumStore

/// A runtime that keeps sandboxes as entries in a table: for tests of the engine's decisions (rollback,
/// restart, reconcile) without root. Failures are injected per call; `crash` reports an init exit the way
/// the real runtime does.
public final class FakeRuntime: SandboxRuntime {
    public init() {}
    public struct Box: Sendable {
        public var pid: Int32
        public var onExit: InitExitHandler
    }
    public struct State: Sendable {
        public var boxes: [SandboxID: Box] = [:]
        /// Containers as the OCI runtime would list them (what survived a "daemon restart").
        public var containers: [ContainerState] = []
        public var alive: Set<Int32> = []
        public var prepared: Set<SandboxID> = []
        public var mounted: Set<SandboxID> = []
        public var calls: [String] = []
        public var failBoots = 0
        public var failDestroys = 0
        public var nextPid: Int32 = 1000
        public var orphanSweeps: [Set<String>] = []
    }
    public let state = Mutex(State())

    public func calls(_ id: SandboxID) -> [String] {
        state.withLock {
            $0.calls.filter { $0.hasSuffix(" " + id.rawValue) }.map { String($0.split(separator: " ")[0]) }
        }
    }

    /// The init of `id` dies, as if killed from outside.
    public func crash(_ id: SandboxID) {
        guard
            let box = state.withLock({ s -> Box? in
                guard let b = s.boxes[id] else { return nil }
                s.alive.remove(b.pid)
                return b
            })
        else { return }
        box.onExit(id, box.pid, .signaled(9))
    }

    func record(_ call: String, _ id: SandboxID) { state.withLock { $0.calls.append("\(call) \(id.rawValue)") } }

    public func prepare(_ plan: BoxPlan) throws {
        record("prepare", plan.id)
        state.withLock { _ = $0.prepared.insert(plan.id) }
    }

    public func boot(_ plan: BoxPlan, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler) async throws
        -> Int32
    {
        record("boot", plan.id)
        return try state.withLock { s in
            if s.failBoots > 0 {
                s.failBoots -= 1
                s.mounted.insert(plan.id)  // a boot that fails half-way leaves mounts behind
                throw VivariumError(.runtimeFailure, "injected boot failure")
            }
            s.nextPid += 1
            s.boxes[plan.id] = Box(pid: s.nextPid, onExit: onExit)
            s.alive.insert(s.nextPid)
            s.mounted.insert(plan.id)
            return s.nextPid
        }
    }

    public func adopt(
        _ plan: BoxPlan, pid: Int32, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler
    ) async -> Bool {
        record("adopt", plan.id)
        return state.withLock { s in
            guard s.alive.contains(pid), s.mounted.contains(plan.id) else { return false }
            s.boxes[plan.id] = Box(pid: pid, onExit: onExit)
            return true
        }
    }

    public func halt(_ plan: BoxPlan, pid: Int32?, grace: Duration?) async throws {
        record("halt", plan.id)
        try await release(plan)
    }

    public func release(_ plan: BoxPlan) async throws {
        record("release", plan.id)
        state.withLock { s in
            if let b = s.boxes.removeValue(forKey: plan.id) { s.alive.remove(b.pid) }
            s.containers.removeAll { $0.id == plan.id.rawValue }
            s.mounted.remove(plan.id)
        }
    }

    public func destroy(_ plan: BoxPlan, released: Bool) async throws {
        record("destroy", plan.id)
        if !released { try await release(plan) }
        try state.withLock { s in
            if s.failDestroys > 0 {
                s.failDestroys -= 1
                throw VivariumError(.runtimeFailure, "injected destroy failure")
            }
            s.prepared.remove(plan.id)
        }
    }

    public func start(_ plan: BoxPlan, _ command: ExecCommand, terminal: RuntimeSpec.ConsoleSize?, stdin: Bool)
        async throws -> ExecSession
    {
        throw VivariumError(.runtimeFailure, "no exec in this test")
    }

    public func detach(_ plan: BoxPlan, _ command: ExecCommand, stdin: Bool, maxOutputBytes: Int) async throws
        -> DetachedProcess
    {
        throw VivariumError(.runtimeFailure, "no detached processes in this test")
    }

    public func processes(_ plan: BoxPlan) -> [DetachedProcess] { [] }
    public func diskUsage(_ plan: BoxPlan) async -> Int64 { 0 }
    public func isStopping(_ id: SandboxID) -> Bool { false }
    public func containers() async throws -> [ContainerState] { state.withLock { $0.containers } }
    public func isAlive(pid: Int32) -> Bool { state.withLock { $0.alive.contains(pid) } }
    public func holdsMounts(_ plan: BoxPlan) -> Bool { state.withLock { $0.mounted.contains(plan.id) } }

    public func removeOrphans(live: Set<String>) async -> Int {
        state.withLock { s in
            s.orphanSweeps.append(live)
            let orphans = s.prepared.filter { !live.contains($0.rawValue) }
            s.prepared.subtract(orphans)
            return orphans.count
        }
    }
}

/// A whole engine over a temporary state directory, with a real store, real tokens and a real audit
/// trail, and no runtime: no root needed.
public final class EngineFixture: @unchecked Sendable {
    public let dir: String
    public let store: SQLiteStore
    public let tokens: TokenService
    public let engine: Engine
    public let runtime = FakeRuntime()

    public init(maxSandboxes: Int = 4, limits: AbuseLimits = AbuseLimits()) async throws {
        dir = "/tmp/vivarium-engine-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        let logger = Logger(label: "test")
        store = try SQLiteStore(path: dir + "/v.db")
        let keys = try await SigningKeys(dir: dir + "/keys", maxTokenLifetime: 3600)
        tokens = TokenService(config: .init(), keys: keys, store: store, logger: logger)
        await tokens.refreshRevocations()
        var config = EngineConfiguration(
            stateDir: dir, uidBase: 1 << 28, maxSandboxes: maxSandboxes, cgroupMode: .legacy)
        config.runtimeDir = dir + "/run"
        let key = AuditKey()
        engine = try await Engine(
            config: config, store: store, identityStore: store, auditStore: store, tokens: tokens,
            runtime: runtime, keys: try LocalKeyring.open(path: dir + "/kms/keyring.json", mayCreate: true).0,
            content: try ImageStore(root: dir + "/images", logger: logger), auditKey: key,
            auditKeyCreated: false,
            checkpointer: try AuditCheckpointer(
                store: store, key: key, sinks: [], interval: .seconds(3600), everyRecords: 1_000_000, logger: logger),
            limits: limits, logger: logger)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// A principal of `tenant` (made on first use) and an access token for it.
    public func token(
        _ name: String, tenant: String = "acme", role: Role = .member, scopes: Set<Scope>? = nil,
        bound: SandboxID? = nil
    ) async throws -> String {
        if try await !store.tenants().contains(where: { $0.name.rawValue == tenant }) {
            try await store.insertTenant(
                TenantRecord(name: ResourceName(rawValue: tenant)!, createdAt: Date()), audit: AuditEvent("test"))
        }
        let p = PrincipalRecord(
            id: "pr_" + randomHex(bytes: 10), tenant: tenant, name: ResourceName(rawValue: name)!, kind: .user,
            role: role, disabled: false, createdAt: Date())
        try await store.insertPrincipal(p, audit: AuditEvent("test"))
        let (token, _) = try await tokens.issueAccess(
            p, scopes: scopes ?? TokenService.allowedScopes(role), boundSandbox: bound, family: nil)
        return token
    }

    public func records(_ action: String) async throws -> [AuditRecord] {
        try await store.auditRecords(AuditQuery(action: action, limit: 1000))
    }

    /// The caller behind a token, as a door would establish it.
    public func caller(_ token: String) async throws -> Caller {
        try await engine.gate.authenticate(
            bearer: token, source: "192.0.2.1", requestID: randomHex(bytes: 4), requestedTenant: nil, door: .rest
        ).get()
    }

    /// The shared `base` image, as a record only (the fake runtime never reads its rootfs).
    @discardableResult
    public func baseImage() async throws -> ImageRecord {
        try await store.insertImage(
            ImageRecord(
                tenant: Identity.defaultTenant, name: ResourceName(rawValue: "base")!, digest: Digest.of([1]),
                rootfs: dir + "/images/base", sizeBytes: 1, createdAt: Date()), audit: AuditEvent("test"))
    }
}
