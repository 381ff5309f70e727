import Foundation
import Logging
import Testing
import VivariumAPI
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumRuntime
import VivariumStore

@Suite struct PolicyTests {
    /// An engine over a temporary state dir: enough to build the router (nothing is run).
    func withEngine(_ body: (Engine) throws -> Void) async throws {
        let dir = "/tmp/vivarium-policy-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(
            atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o711])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try SQLiteStore(path: dir + "/v.db")
        let keys = try await SigningKeys(dir: dir + "/keys", maxTokenLifetime: 3600)
        let tokens = TokenService(config: .init(), keys: keys, store: store, logger: Logger(label: "t"))
        let config = EngineConfiguration(
            stateDir: dir, initBinary: "/bin/true", uidBase: 1 << 28, maxSandboxes: 4, cgroupMode: .legacy)
        let engine = try Engine(
            config: config, store: store, identity: store, audit: store, tokens: tokens,
            runtime: Crun(root: dir + "/crun", cgroupMode: .legacy, logger: Logger(label: "t")),
            logger: Logger(label: "t"))
        try body(engine)
    }

    @Test func everyRouteHasExactlyOnePolicyAndEveryPolicyARoute() async throws {
        try await withEngine { engine in
            let routes = API.routeKeys(engine: engine)
            #expect(routes.count == Set(routes).count, "a route is registered twice")
            for r in routes {
                let parts = r.split(separator: " ", maxSplits: 1).map(String.init)
                #expect(PolicyTable.policy(parts[0], parts[1]) != nil, "\(r) has no policy")
            }
            #expect(Set(routes) == Set(PolicyTable.routes.keys), "policy rows without a route, or routes without a row")
        }
    }

    func principal(_ role: Role, _ scopes: Set<Scope>, bound: SandboxID? = nil) -> Principal {
        Principal(id: "p", name: "p", tenant: "t", kind: .user, role: role, scopes: scopes, boundSandbox: bound)
    }

    @Test func decisionsFollowRoleScopeAndBinding() {
        let exec = PolicyTable.policy("POST", "/v1/sandboxes/:name/exec")!
        let tenants = PolicyTable.policy("GET", "/v1/tenants")!
        let list = PolicyTable.policy("GET", "/v1/sandboxes")!
        #expect(PolicyTable.decide(exec, principal: nil) == .unauthenticated)
        #expect(PolicyTable.decide(exec, principal: principal(.member, [.exec])) == .allow)
        if case .forbidden = PolicyTable.decide(exec, principal: principal(.member, [.sandboxesRead])) {
        } else {
            Issue.record("missing scope allowed")
        }
        if case .forbidden = PolicyTable.decide(exec, principal: principal(.auditor, [.exec])) {
        } else {
            Issue.record("auditor allowed to exec")
        }
        if case .forbidden = PolicyTable.decide(tenants, principal: principal(.tenantAdmin, Set(Scope.all))) {
        } else {
            Issue.record("tenant-admin allowed on an admin route")
        }
        #expect(PolicyTable.decide(tenants, principal: .localRoot) == .allow)
        let bound = principal(.member, [.exec, .sandboxesRead], bound: .random())
        #expect(PolicyTable.decide(exec, principal: bound) == .allow)
        if case .forbidden = PolicyTable.decide(list, principal: bound) {} else { Issue.record("bound token listed") }
        #expect(PolicyTable.decide(PolicyTable.policy("GET", "/healthz")!, principal: nil) == .allow)
    }

    @Test func bearerTokensComeOnlyFromTheirHeaders() {
        #expect(Bearer.fromAuthorization("Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(Bearer.fromAuthorization("bearer abc") == "abc")
        #expect(Bearer.fromAuthorization("Basic dXNlcg==") == nil)
        #expect(Bearer.fromAuthorization("Bearer ") == nil)
        #expect(Bearer.fromAuthorization("Bearer a b") == nil)
        #expect(Bearer.fromWebSocketProtocol("vivarium.bearer, tok123") == "tok123")
        #expect(Bearer.fromWebSocketProtocol("chat, vivarium.bearer,tok") == "tok")
        #expect(Bearer.fromWebSocketProtocol("vivarium.bearer") == nil)
        #expect(Bearer.fromWebSocketProtocol("chat, tok") == nil)
    }
}
