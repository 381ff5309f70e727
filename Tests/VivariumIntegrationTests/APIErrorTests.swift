import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Bad input gets a clear code and never crashes the daemon or returns a 500 (THREATS.md T14).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct APIErrorTests {
    @Test func badInputGetsClearErrorCodes() async throws {
        try await TestDaemon.with { d in
            for bad in ["UPPER", "-lead", "trail-", "has_underscore", "dot.ted", String(repeating: "a", count: 64), ""]
            {
                let body = try String(
                    decoding: WireCoding.encoder().encode(CreateSandboxRequest(name: bad)), as: UTF8.self)
                try expectAPIError(d, "POST", "/v1/sandboxes", body: body, status: 422, code: "invalid_name")
            }
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"x","image":"nope"}"#, status: 404, code: "image_not_found")
            // A registry reference is pulled: a registry that does not answer is a 502; a malformed one is refused.
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"x","image":"127.0.0.1:1/none/x:1"}"#, status: 502,
                code: "registry_failure")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"x","image":"Bad Ref"}"#, status: 422,
                code: "invalid_argument")
            try expectAPIError(d, "POST", "/v1/sandboxes", body: "{not json", status: 400, code: "bad_request")
            try expectAPIError(d, "POST", "/v1/sandboxes", body: #"{"name": 5}"#, status: 400, code: "bad_request")
            // Strict decoding: no key twice (however it is spelt), no field the request does not have.
            for body in [
                #"{"name":"a","name":"b"}"#, #"{"name":"a","n\u0061me":"b"}"#, #"{"labels":{"k":"1","k":"2"}}"#,
                #"{"name":"a","memory_byte":1}"#, #"{"nmae":"a"}"#,
            ] {
                try expectAPIError(d, "POST", "/v1/sandboxes", body: body, status: 400, code: "bad_request")
            }
            let (_, unknown) = try d.raw("POST", "/v1/sandboxes", body: Data(#"{"memory_byte":1}"#.utf8))
            #expect(
                unknown?.error.message.contains("unknown field memory_byte") == true, "\(String(describing: unknown))")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"memory_bytes": 1}"#, status: 422, code: "invalid_argument")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"restart": "sometimes"}"#, status: 422, code: "invalid_argument")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"env": {"1BAD": "x"}}"#, status: 422, code: "invalid_argument")
            let huge = "{\"labels\":{\"a\":\"" + String(repeating: "x", count: 400_000) + "\"}}"
            try expectAPIError(d, "POST", "/v1/sandboxes", body: huge, status: 413, code: "payload_too_large")
            try expectAPIError(d, "GET", "/v1/sandboxes/absent", body: nil, status: 404, code: "not_found")
            try expectAPIError(d, "GET", "/v1/sandboxes?limit=0", body: nil, status: 422, code: "invalid_argument")
            // A request head beyond the server's bound, as a connection's first request, still gets the
            // JSON error body.
            let long = try SocketHTTPClient(socketPath: d.socket).send(
                "GET", "/v1/sandboxes?cursor=" + String(repeating: "A", count: 100_000))
            let longError = try? WireCoding.decoder().decode(ErrorBody.self, from: long.body)
            #expect(long.status == 400 && longError?.error.code == "bad_request", "a 100 KB cursor: \(long.status)")
            // And as a later request on a kept-alive connection.
            let kept = SocketHTTPClient(socketPath: d.socket)
            #expect(try kept.send("GET", "/healthz").status == 200)
            let later = try kept.send("GET", "/v1/sandboxes?cursor=" + String(repeating: "A", count: 100_000))
            let laterError = try? WireCoding.decoder().decode(ErrorBody.self, from: later.body)
            #expect(later.status == 400 && laterError?.error.code == "bad_request", "kept-alive: \(later.status)")
            try expectAPIError(d, "GET", "/v1/sandboxes?cursor=%%%", body: nil, status: 422, code: "invalid_argument")
            try expectAPIError(d, "GET", "/v1/nothing-here", body: nil, status: 404, code: "not_found")

            _ = try d.create(CreateSandboxRequest(name: "dup"))
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"dup"}"#, status: 409, code: "already_exists")
            try expectAPIError(d, "DELETE", "/v1/images/base", body: nil, status: 409, code: "image_in_use")
            try expectAPIError(d, "DELETE", "/v1/sandboxes/dup", body: nil, status: 409, code: "invalid_state")
            try expectAPIError(
                d, "POST", "/v1/sandboxes/dup/exec", body: #"{"argv": []}"#, status: 422, code: "invalid_argument")
            try expectAPIError(
                d, "POST", "/v1/sandboxes/dup/exec", body: #"{"argv": ["true"], "timeout_seconds": -1}"#, status: 422,
                code: "invalid_argument")
            try expectAPIError(
                d, "POST", "/v1/sandboxes/dup/exec", body: #"{"argv": ["true"], "workdir": "rel"}"#, status: 422,
                code: "invalid_argument")
            _ = try d.cli("stop", "dup")
            try expectAPIError(
                d, "POST", "/v1/sandboxes/dup/exec", body: #"{"argv": ["true"]}"#, status: 409, code: "invalid_state")
            // Nothing was left behind by the refused creates.
            let page: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes")
            #expect(page.items.map(\.name) == ["dup"])
            #expect(d.bundles().count == 1)
        }
    }

    @Test func randomBodiesNeverCrashTheDaemonOrAnswer500() async throws {
        try await TestDaemon.with { d in
            var rng = SystemRandomNumberGenerator()
            let paths = ["/v1/sandboxes", "/v1/sandboxes/x/exec", "/v1/images", "/v1/sandboxes/x/start"]
            let fragments = [
                "{", "}", "\"name\"", ":", "[", "]", "null", "1e999", "\"argv\"", "\u{0}", "true", ",", "\"\\u0000\"",
            ]
            for i in 0..<200 {
                var body = ""
                for _ in 0..<Int.random(in: 0...12, using: &rng) { body += fragments.randomElement(using: &rng)! }
                if i % 10 == 0 {
                    body = String(
                        (0..<64).map { _ in Character(UnicodeScalar(UInt8.random(in: 1...255, using: &rng))) })
                }
                let (status, _) = try d.raw("POST", paths[i % paths.count], body: Data(body.utf8))
                #expect(status < 500, "body \(body.debugDescription) answered \(status)")
            }
            #expect(try d.client.http.send("GET", "/healthz").status == 200)
        }
    }
}
