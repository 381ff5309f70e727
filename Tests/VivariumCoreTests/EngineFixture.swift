import Foundation
import Logging
import VivariumAudit
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumImages
import VivariumOS
import VivariumRuntime
import VivariumStore

/// A runtime that runs nothing: for tests of engine and API decisions that never reach crun.
struct NoRuntime: OCIRuntime {
    func create(id: String, bundle: String) async throws -> Int32 {
        throw VivariumError(.runtimeFailure, "no runtime in this test")
    }
    func start(id: String) async throws {}
    func list() async throws -> [ContainerState] { [] }
    func kill(id: String, signal: Int32) async throws {}
    func delete(id: String, force: Bool) async throws {}
    func exec(
        id: String, processFile: String, cgroup: String, outputLimit: Int, started: (RunningProcess) -> Void
    ) async throws -> ProcessOutput {
        throw VivariumError(.runtimeFailure, "no runtime in this test")
    }
}

/// A whole engine over a temporary state directory, with a real store, real tokens and a real audit
/// trail, and no runtime: no root needed.
final class EngineFixture: @unchecked Sendable {
    let dir: String
    let store: SQLiteStore
    let tokens: TokenService
    let engine: Engine

    init(limits: AbuseLimits = AbuseLimits()) async throws {
        dir = "/tmp/vivarium-engine-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        let logger = Logger(label: "test")
        store = try SQLiteStore(path: dir + "/v.db")
        let keys = try await SigningKeys(dir: dir + "/keys", maxTokenLifetime: 3600)
        tokens = TokenService(config: .init(), keys: keys, store: store, logger: logger)
        tokens.refreshRevocations()
        let config = EngineConfiguration(stateDir: dir, uidBase: 1 << 28, maxSandboxes: 4, cgroupMode: .legacy)
        let key = AuditKey()
        engine = try Engine(
            config: config, store: store, identityStore: store, auditStore: store, tokens: tokens,
            runtime: NoRuntime(), content: try ImageStore(root: dir + "/images", logger: logger), auditKey: key,
            auditKeyCreated: false,
            checkpointer: try AuditCheckpointer(
                store: store, key: key, sinks: [], interval: .seconds(3600), everyRecords: 1_000_000, logger: logger),
            limits: limits, logger: logger)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// A principal of `tenant` (made on first use) and an access token for it.
    func token(
        _ name: String, tenant: String = "acme", role: Role = .member, scopes: Set<Scope>? = nil,
        bound: SandboxID? = nil
    ) async throws -> String {
        if try !store.tenants().contains(where: { $0.name.rawValue == tenant }) {
            try store.insertTenant(
                TenantRecord(name: ResourceName(rawValue: tenant)!, createdAt: Date()), audit: AuditEvent("test"))
        }
        let p = PrincipalRecord(
            id: "pr_" + randomHex(bytes: 10), tenant: tenant, name: ResourceName(rawValue: name)!, kind: .user,
            role: role, disabled: false, createdAt: Date())
        try store.insertPrincipal(p, audit: AuditEvent("test"))
        let (token, _) = try await tokens.issueAccess(
            p, scopes: scopes ?? TokenService.allowedScopes(role), boundSandbox: bound, family: nil)
        return token
    }

    func records(_ action: String) throws -> [AuditRecord] {
        try store.auditRecords(AuditQuery(action: action, limit: 1000))
    }
}
