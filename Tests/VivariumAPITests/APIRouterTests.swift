import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import VivariumAPI
import VivariumAudit
import VivariumCore
import VivariumEngine
import VivariumEngineTestSupport

/// The HTTP layer in process: authentication, the policy table, error mapping and the audit records of
/// refusals, without a daemon (HummingbirdTesting).
@Suite struct APIRouterTests {
    func app(_ f: EngineFixture) -> some ApplicationProtocol {
        Application(router: API.router(engine: f.engine, openAPI: Data(#"{"openapi":"3.1.0"}"#.utf8)))
    }

    func error(_ r: TestResponse) throws -> ErrorBody {
        try WireCoding.decoder().decode(ErrorBody.self, from: Data(buffer: r.body))
    }

    func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    @Test func noCredentialsIsA401WithItsRecordAndRequestID() async throws {
        let f = try await EngineFixture()
        try await app(f).test(.router) { client in
            try await client.execute(uri: "/v1/sandboxes", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect(r.headers[.wwwAuthenticate] == "Bearer")
                let body = try error(r)
                #expect(body.error.code == "unauthenticated")
                #expect(r.headers[HTTPField.Name("X-Request-Id")!] == body.error.requestId)
            }
        }
        let failures = try await f.records("auth.failure")
        #expect(failures.count == 1 && failures[0].target == "sandbox.list" && failures[0].actor == "anonymous")
    }

    @Test func aMemberListsItsTenantAndIsDeniedAdminActionsOnRecord() async throws {
        let f = try await EngineFixture()
        let member = try await f.token("ann")
        try await app(f).test(.router) { client in
            try await client.execute(uri: "/v1/sandboxes", method: .get, headers: bearer(member)) { r in
                #expect(r.status == .ok)
                let page = try WireCoding.decoder().decode(Page<SandboxInfo>.self, from: Data(buffer: r.body))
                #expect(page.items.isEmpty && page.nextCursor == nil)
            }
            try await client.execute(uri: "/v1/tenants", method: .get, headers: bearer(member)) { r in
                #expect(r.status == .forbidden)
                let code = try error(r).error.code
                #expect(code == "forbidden")
            }
            try await client.execute(uri: "/v1/sandboxes?tenant=other", method: .get, headers: bearer(member)) { r in
                #expect(r.status == .forbidden, "only an admin acts in another tenant")
            }
        }
        let denials = try await f.records("policy.denied")
        #expect(denials.map { $0.details["action"] } == ["tenant.list", "sandbox.list"])
        #expect(denials.allSatisfy { $0.actorName == "ann" && $0.details["door"] == "rest" })
    }

    @Test func tokensInQueryStringsAreRefusedAndPublicRoutesIgnoreCredentials() async throws {
        let f = try await EngineFixture()
        let member = try await f.token("ann")
        try await app(f).test(.router) { client in
            try await client.execute(uri: "/v1/sandboxes?access_token=\(member)", method: .get) { r in
                #expect(r.status == .unauthorized)
            }
            try await client.execute(uri: "/healthz?token=\(member)", method: .get) { r in
                #expect(r.status == .unauthorized, "even on a public route")
            }
            try await client.execute(uri: "/healthz", method: .get, headers: bearer("garbage")) { r in
                #expect(r.status == .ok, "a public route never looks at credentials")
                #expect(String(buffer: r.body) == #"{"status":"ok"}"#, "up or down, nothing about the host")
            }
            try await client.execute(uri: "/v1/openapi.json", method: .get) { r in
                #expect(r.status == .ok && String(buffer: r.body) == #"{"openapi":"3.1.0"}"#)
                #expect(r.headers[.contentType] == "application/json")
            }
        }
    }

    @Test func unknownRoutesWrongMethodsAndBadBodiesGetJSONErrors() async throws {
        let f = try await EngineFixture()
        let member = try await f.token("ann")
        try await app(f).test(.router) { client in
            try await client.execute(uri: "/v1/nothing", method: .get) { r in
                #expect(r.status == .notFound)
                let code = try error(r).error.code
                #expect(code == "not_found")
            }
            try await client.execute(uri: "/v1/sandboxes", method: .patch, headers: bearer(member)) { r in
                #expect(r.status == .methodNotAllowed)
                let code = try error(r).error.code
                #expect(code == "method_not_allowed")
                #expect(r.headers[.allow] == "GET, POST")
            }
            try await client.execute(uri: "/v1/sandboxes/x", method: .put) { r in
                #expect(r.status == .methodNotAllowed && r.headers[.allow] == "DELETE, GET")
            }
            // Whatever the method, and with the path the router would match: a literal segment wins.
            try await client.execute(uri: "/v1/sandboxes/run", method: .options) { r in
                #expect(r.status == .methodNotAllowed && r.headers[.allow] == "POST")
            }
            try await client.execute(uri: "/healthz", method: HTTPRequest.Method("QUERY")!) { r in
                #expect(r.status == .methodNotAllowed && r.headers[.allow] == "GET")
            }
            try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: bearer(member), body: ByteBuffer(string: #"{"env":null}"#)
            ) { r in
                #expect(r.status == .badRequest, "null is not a value of a request field")
            }
            try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: bearer(member), body: ByteBuffer(string: "{not json")
            ) { r in
                #expect(r.status == .badRequest)
                let code = try error(r).error.code
                #expect(code == "bad_request")
            }
            var headers = bearer(member)
            headers[.contentType] = "text/plain"
            try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: headers, body: ByteBuffer(string: "{}")
            ) { r in
                #expect(r.status == .unsupportedMediaType)
            }
            try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: bearer(member),
                body: ByteBuffer(string: #"{"memory_bytes": 1}"#)
            ) { r in
                #expect(r.status == .unprocessableContent)
                let code = try error(r).error.code
                #expect(code == "invalid_argument")
            }
        }
        // A mutation refused while its body was read is still recorded under its action.
        let creates = try await f.records("sandbox.create")
        #expect(creates.map(\.outcome) == ["failed", "failed", "failed", "failed"])
        #expect(
            creates.map { $0.details["code"] } == [
                "bad_request", "bad_request", "unsupported_media_type", "invalid_argument",
            ])
    }

    @Test func failedAuthenticationsThrottleTheirSourceAndBoundTokensStayBound() async throws {
        let f = try await EngineFixture(limits: AbuseLimits(authFailuresPerMinute: 3))
        let bound = try await f.token("bot", scopes: [.exec, .sandboxesRead], bound: .random())
        try await app(f).test(.router) { client in
            try await client.execute(uri: "/v1/sandboxes", method: .get, headers: bearer(bound)) { r in
                #expect(r.status == .forbidden, "a bound token does not list the tenant")
            }
            for _ in 0..<3 {
                try await client.execute(uri: "/v1/sandboxes", method: .get, headers: bearer("forged")) { r in
                    #expect(r.status == .unauthorized)
                }
            }
            try await client.execute(uri: "/v1/sandboxes", method: .get, headers: bearer("forged")) { r in
                #expect(r.status == .tooManyRequests)
                let code = try error(r).error.code
                #expect(code == "rate_limited")
                #expect(Int(r.headers[.retryAfter] ?? "") ?? 0 >= 1)
            }
            try await client.execute(
                uri: "/v1/tokens", method: .post, body: ByteBuffer(string: #"{"grant_type":"api_key","api_key":"x"}"#)
            ) { r in
                #expect(r.status == .tooManyRequests, "guessing API keys is throttled too")
            }
        }
    }

    @Test(arguments: [
        (VivariumError.Code.badRequest, 400), (.invalidArgument, 422), (.invalidName, 422), (.notFound, 404),
        (.imageNotFound, 404), (.alreadyExists, 409), (.imageInUse, 409), (.invalidState, 409),
        (.payloadTooLarge, 413), (.unsupportedMediaType, 415), (.methodNotAllowed, 405), (.unavailable, 503),
        (.resourceExhausted, 503), (.unauthenticated, 401), (.forbidden, 403), (.quotaExceeded, 403),
        (.rateLimited, 429), (.internalError, 500), (.runtimeFailure, 500),
    ])
    func everyErrorCodeHasItsStatus(code: VivariumError.Code, status: Int) {
        #expect(VivariumError(code, "x").status.code == status)
    }
}
