import Foundation
import Glibc
import VivariumCore
import VivariumOS

/// A real OCI registry (Debian's docker-registry) on 127.0.0.1: with TLS from a CA the test makes and
/// htpasswd auth, or plain HTTP without auth.
public final class TestRegistry {
    public let dir: String
    public let port: UInt16
    let process = Process()
    public let tls: Bool
    public var host: String { "127.0.0.1:\(port)" }
    public var storage: String { dir + "/data" }
    public static let user = "alice"
    public static let password = "s3cret-" + randomHex(bytes: 4)

    /// `ca` is a directory holding ca.crt and ca.key (see `makeCA`); nil: plain HTTP, no auth.
    public init(ca: String?) throws {
        dir = "/tmp/vivarium-registry-" + randomHex(bytes: 6)
        port = try freeLoopbackPort()
        tls = ca != nil
        try FileSystem.makeDirectory(dir, mode: 0o700)
        var config = """
            version: 0.1
            storage:
              filesystem:
                rootdirectory: \(storage)
            log:
              level: error
            http:
              addr: \(host)

            """
        if let ca {
            try Self.openssl([
                "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/srv.key",
                "-out", dir + "/srv.csr", "-subj", "/CN=127.0.0.1",
            ])
            try "subjectAltName=IP:127.0.0.1\n".write(toFile: dir + "/ext.cnf", atomically: true, encoding: .utf8)
            try Self.openssl([
                "x509", "-req", "-in", dir + "/srv.csr", "-CA", ca + "/ca.crt", "-CAkey", ca + "/ca.key",
                "-CAcreateserial", "-days", "2", "-out", dir + "/srv.crt", "-extfile", dir + "/ext.cnf",
            ])
            let hash = try runCommand("/usr/bin/htpasswd", ["-Bbn", Self.user, Self.password])
            try hash.stdout.write(toFile: dir + "/htpasswd", atomically: true, encoding: .utf8)
            config += """
                  tls:
                    certificate: \(dir)/srv.crt
                    key: \(dir)/srv.key
                auth:
                  htpasswd:
                    realm: test
                    path: \(dir)/htpasswd

                """
        }
        try config.write(toFile: dir + "/config.yml", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/docker-registry")
        process.arguments = ["serve", dir + "/config.yml"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            let r = try runCommand(
                "/usr/bin/curl", ["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", base + "/v2/"])
            if r.stdout == "200" || r.stdout == "401" { return }
            usleep(100_000)
        }
        throw VivariumError(.unavailable, "docker-registry did not start")
    }

    public var base: String { (tls ? "https://" : "http://") + host }

    public static func openssl(_ args: [String]) throws {
        let r = try runCommand("/usr/bin/openssl", args)
        guard r.status == 0 else { throw VivariumError(.internalError, "openssl \(args[0]): \(r.stderr)") }
    }

    /// A CA (ca.crt, ca.key) in `dir`.
    public static func makeCA(_ dir: String) throws {
        try FileSystem.makeDirectory(dir, mode: 0o700)
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-keyout", dir + "/ca.key", "-out", dir + "/ca.crt", "-subj", "/CN=vivarium-test-ca",
        ])
    }

    /// Pushes `layout:tag` (an OCI layout) to `repository:target` with skopeo.
    public func push(_ layout: String, _ tag: String, to ref: String, certs: String?) throws {
        var args = ["copy", "-q"]
        if tls {
            args += ["--dest-creds", "\(Self.user):\(Self.password)", "--dest-cert-dir", certs ?? ""]
        } else {
            args += ["--dest-tls-verify=false"]
        }
        args += ["oci:\(layout):\(tag)", "docker://\(host)/\(ref)"]
        let r = try runCommand("/usr/bin/skopeo", args)
        guard r.status == 0 else { throw VivariumError(.internalError, "skopeo copy: \(r.stderr)") }
    }

    /// A manifest as the registry holds it.
    public func manifest(_ repository: String, _ reference: String, ca: String?) throws -> Data {
        var args = ["-sf", "-H", "Accept: application/vnd.oci.image.manifest.v1+json"]
        if let ca { args += ["--cacert", ca + "/ca.crt", "-u", "\(Self.user):\(Self.password)"] }
        let r = try runCommand("/usr/bin/curl", args + ["\(base)/v2/\(repository)/manifests/\(reference)"])
        guard r.status == 0 else { throw VivariumError(.internalError, "no manifest \(repository):\(reference)") }
        return Data(r.stdout.utf8)
    }

    /// Ends the registry at once (SIGKILL), as a registry that goes away does.
    public func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A Python HTTP server of a test (a front for a registry): `script` runs with `arguments` and, last, a
/// file it writes its loopback port to; the server is killed (SIGKILL: children of the test runner start
/// with SIGTERM blocked) when this goes.
public final class FrontServer {
    let process = Process()
    public private(set) var port: UInt16 = 0
    public var host: String { "127.0.0.1:\(port)" }

    public init(script: String, in dir: String, _ arguments: [String]) throws {
        let file = dir + "/front-\(randomHex(bytes: 4)).py"
        let portFile = file + ".port"
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [file] + arguments + [portFile]
        try process.run()
        for _ in 0..<200 where port == 0 {
            usleep(50_000)
            port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { UInt16($0) } ?? 0
        }
        guard port != 0 else {
            stop()
            throw VivariumError(.unavailable, "the test's front server did not start")
        }
    }

    public func stop() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}
