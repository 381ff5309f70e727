import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

extension TestDaemon {
    /// A cgroup file of a sandbox, for v1 (per controller) or v2.
    func cgroupFile(_ controller: String, _ id: String, _ file: String) -> String {
        if CgroupMode.detect() == .unified { return "/sys/fs/cgroup/\(cgroupParent)/\(id)/\(file)" }
        return "/sys/fs/cgroup/\(controller)/\(cgroupParent)/\(id)/\(file)"
    }

    /// A principal of `tenant` (created with the tenant when missing) and its first token pair.
    func principalTokens(tenant: String, name: String, role: String = "member") throws -> TokenPair {
        if !(try client.call("GET", "/v1/tenants") as Page<TenantInfo>).items.contains(where: { $0.name == tenant }) {
            let _: TenantInfo = try client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: tenant))
        }
        let _: PrincipalInfo = try client.call(
            "POST", "/v1/principals?tenant=\(tenant)", body: CreatePrincipalRequest(name: name, role: role))
        let key: APIKeyInfo = try client.call(
            "POST", "/v1/principals/\(name)/keys?tenant=\(tenant)", body: CreateAPIKeyRequest())
        return try client.call("POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
    }

    /// Waits until `condition` holds or the deadline passes (tests may poll; the daemon never does).
    func eventually(_ seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }
}

/// Asserts that a call fails with the given API error code and HTTP status.
func expectAPIError(
    _ daemon: TestDaemon, _ method: String, _ path: String, body: String?, status: Int, code: String,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let (got, err) = try daemon.raw(method, path, body: body.map { Data($0.utf8) })
    #expect(got == status, "HTTP status for \(method) \(path)", sourceLocation: sourceLocation)
    #expect(err?.error.code == code, "error code for \(method) \(path)", sourceLocation: sourceLocation)
    #expect(err?.error.requestId.isEmpty == false, sourceLocation: sourceLocation)
}

func string(_ d: Data) -> String { String(decoding: d, as: UTF8.self) }
