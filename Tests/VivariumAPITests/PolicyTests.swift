import Foundation
import Testing
import VivariumAPI
import VivariumAuth
import VivariumCore
import VivariumEngine
import VivariumEngineTestSupport

@Suite struct PolicyTests {
    @Test func everyActionIsServedByExactlyTheRoutesOfTheTableAndBack() async throws {
        let f = try await EngineFixture()
        let registered = API.registeredRoutes(engine: f.engine)
        #expect(registered.count == Set(registered).count, "a route is registered twice")
        #expect(Set(registered) == Set(Endpoints.all), "registered routes and Endpoints.all differ")
        // Every action of the policy table is reached by a door, and every route asks for one action.
        // sandbox.connect is the ingress's (a request to a sandbox port), not a REST route's.
        #expect(
            Set(registered.map(\.action)).union([.sandboxConnect]) == Set(Action.allCases),
            "an action no door reaches, or the reverse")
        let pathsAndMethods = registered.map { "\($0.method.rawValue) \($0.path)" }
        #expect(pathsAndMethods.count == Set(pathsAndMethods).count, "two routes share a method and path")
        // Public actions are exactly the ones a caller needs before it has a token.
        let publicActions = Action.allCases.filter { PolicyTable.policy($0).ownership == .publicAction }
        #expect(Set(publicActions) == [.health, .apiDescribe, .jwks, .tokenExchange])
    }

    func caller(_ role: Role, _ scopes: Set<Scope>, bound: SandboxID? = nil, tenant: String? = nil) -> Caller {
        Caller(
            principal: Principal(
                id: "p", name: "p", tenant: "t", kind: .user, role: role, scopes: scopes, boundSandbox: bound),
            requestedTenant: tenant.flatMap(ResourceName.init(rawValue:)), source: "192.0.2.1", requestID: "r")
    }

    func forbidden(_ d: PolicyTable.Decision) -> Bool {
        if case .forbidden = d { return true }
        return false
    }

    @Test func decisionsFollowRoleScopeBindingAndTenant() {
        let anonymous = Caller.anonymous(source: "192.0.2.1", requestID: "r")
        #expect(PolicyTable.decide(.sandboxExec, for: anonymous) == .unauthenticated)
        #expect(PolicyTable.decide(.sandboxExec, for: caller(.member, [.exec])) == .allow)
        #expect(forbidden(PolicyTable.decide(.sandboxExec, for: caller(.member, [.sandboxesRead]))), "missing scope")
        #expect(forbidden(PolicyTable.decide(.sandboxExec, for: caller(.auditor, [.exec]))), "auditor exec")
        #expect(forbidden(PolicyTable.decide(.tenantList, for: caller(.tenantAdmin, Set(Scope.all)))), "admin only")
        #expect(PolicyTable.decide(.tenantList, for: .localRoot(requestID: "r")) == .allow)
        let bound = caller(.member, [.exec, .sandboxesRead], bound: .random())
        #expect(PolicyTable.decide(.sandboxExec, for: bound) == .allow)
        #expect(forbidden(PolicyTable.decide(.sandboxList, for: bound)), "a bound token lists the tenant")
        #expect(forbidden(PolicyTable.decide(.sandboxRun, for: caller(.member, [.sandboxesWrite]))), "run needs exec")
        #expect(PolicyTable.decide(.health, for: anonymous) == .allow)
        #expect(PolicyTable.decide(.tokenExchange, for: anonymous) == .allow)
        // Only an admin names another tenant.
        #expect(forbidden(PolicyTable.decide(.sandboxList, for: caller(.member, [.sandboxesRead], tenant: "other"))))
        #expect(PolicyTable.decide(.sandboxList, for: caller(.member, [.sandboxesRead], tenant: "t")) == .allow)
        #expect(PolicyTable.decide(.sandboxList, for: caller(.admin, Set(Scope.all), tenant: "other")) == .allow)
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

    @Test func theOpenAPIDocumentDescribesEveryRouteAndNothingElse() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "../../docs/openapi.json")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        #expect(doc["openapi"] as? String == "3.1.0")
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        var documented: Set<String> = []
        for (path, item) in paths {
            for (method, op) in item where ["get", "post", "put", "patch", "delete"].contains(method) {
                documented.insert("\(method.uppercased()) \(path)")
                let operation = try #require(op as? [String: Any], "\(method) \(path)")
                let responses = try #require(operation["responses"] as? [String: Any], "\(method) \(path)")
                #expect(responses.keys.contains { $0.hasPrefix("2") || $0 == "101" }, "\(method) \(path): no success")
                #expect(responses.keys.contains { $0.hasPrefix("4") }, "\(method) \(path): no error response")
                #expect(operation["operationId"] is String, "\(method) \(path): no operationId")
            }
        }
        #expect(documented == Set(Endpoints.all.map(\.description)), "document and routes differ")
        // Every JSON route that takes a body documents it.
        for route in Endpoints.all where route.kind == .json && route.method == .post {
            let op = paths[route.path]?["post"] as? [String: Any]
            let hasBody = op?["requestBody"] != nil
            let empty = [
                Endpoints.keysRotate.route, Endpoints.sandboxStart.route, Endpoints.sandboxStop.route,
                Endpoints.principalDisable.route, Endpoints.kmsRotate.route, Endpoints.kmsRetire.route,
            ]
            #expect(hasBody != empty.contains(route), "\(route): request body documented wrongly")
        }
    }
}
