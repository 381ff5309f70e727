import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Test images built with umoci from busybox-static: `v1` one layer (/etc/marker), `v2` a second layer
/// that removes /etc/marker (a whiteout) and adds /etc/second, `v3` and `v4` other layers on v1.
func buildTestLayout(_ dir: String) throws -> String {
    let layout = dir + "/layout"
    func umoci(_ args: [String]) throws {
        let r = try runCommand("/usr/bin/umoci", args)
        guard r.status == 0 else { throw VivariumError(.internalError, "umoci \(args[0]): \(r.stderr)") }
    }
    func sh(_ script: String) throws {
        let r = try runCommand("/bin/sh", ["-c", script])
        guard r.status == 0 else { throw VivariumError(.internalError, "\(script): \(r.stderr)") }
    }
    try umoci(["init", "--layout", layout])
    try umoci(["new", "--image", layout + ":v1"])
    let bundle = dir + "/bundle"
    try umoci(["unpack", "--image", layout + ":v1", bundle])
    try sh(
        "cd \(bundle)/rootfs && mkdir -p bin etc && cp /bin/busybox bin/busybox && for a in sh cat ls test; do ln -s busybox bin/$a; done && echo one > etc/marker"
    )
    try umoci(["repack", "--image", layout + ":v1", bundle])
    try sh("rm -rf \(bundle)")
    try umoci(["unpack", "--image", layout + ":v1", bundle])
    try sh("rm \(bundle)/rootfs/etc/marker && echo two > \(bundle)/rootfs/etc/second")
    try umoci(["repack", "--image", layout + ":v2", bundle])
    try sh("rm -rf \(bundle)")
    try umoci(["unpack", "--image", layout + ":v1", bundle])
    try sh("echo three-\(randomHex(bytes: 4)) > \(bundle)/rootfs/etc/third")
    try umoci(["repack", "--image", layout + ":v3", bundle])
    try sh("rm -rf \(bundle)")
    try umoci(["unpack", "--image", layout + ":v1", bundle])
    try sh("echo four-\(randomHex(bytes: 4)) > \(bundle)/rootfs/etc/fourth")
    try umoci(["repack", "--image", layout + ":v4", bundle])
    try sh("rm -rf \(bundle)")
    return layout
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct RegistryTests {
    @Test func pullsFromRealRegistriesVerifiedAndPinned() async throws {
        let work = "/tmp/vivarium-images-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        let ca = work + "/ca"
        try TestRegistry.makeCA(ca)
        let certs = work + "/certs"
        try FileSystem.makeDirectory(certs, mode: 0o700)
        _ = try runCommand("/bin/cp", [ca + "/ca.crt", certs + "/ca.crt"])
        let layout = try buildTestLayout(work)
        let secure = try TestRegistry(ca: ca)
        let plain = try TestRegistry(ca: nil)
        try secure.push(layout, "v2", to: "team/tool:v2", certs: certs)
        try plain.push(layout, "v1", to: "open/tool:v1", certs: nil)

        try await TestDaemon.with(
            extraEnv: [
                "VIVARIUM_REGISTRY_CA": ca + "/ca.crt", "VIVARIUM_REGISTRY_PLAIN_HTTP": plain.host,
                "VIVARIUM_REGISTRY_ALLOWED": "\(secure.host)/team,\(plain.host)",
            ], tcp: true
        ) { d in
            // Outside the allowed scopes: refused before any connection.
            let outside = try d.cli("image", "pull", "\(secure.host)/elsewhere/tool:v2")
            #expect(
                outside.status != 0 && outside.stderr.contains("not allowed") && outside.stderr.contains("[forbidden]"),
                "\(outside.stderr)")
            let ref = "\(secure.host)/team/tool:v2"
            // No login, then a wrong one: clear refusals, nothing stored.
            var r = try d.cli("image", "pull", ref)
            #expect(
                r.status != 0 && r.stderr.contains("registry login") && r.stderr.contains("[registry_failure]"),
                "\(r.stderr)")
            func login(_ password: String) throws {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: Paths.vivarium)
                p.arguments = ["registry", "login", secure.host, "-u", TestRegistry.user, "--password-stdin"]
                var env = ProcessInfo.processInfo.environment
                for (k, v) in d.environment { env[k] = v }
                p.environment = env
                let input = Pipe()
                p.standardInput = input
                p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
                try p.run()
                input.fileHandleForWriting.write(Data((password + "\n").utf8))
                try input.fileHandleForWriting.close()
                p.waitUntilExit()
                #expect(p.terminationStatus == 0)
            }
            try login("wrong")
            r = try d.cli("image", "pull", ref)
            #expect(
                r.status != 0 && r.stderr.contains("refused the credentials")
                    && r.stderr.contains("[registry_failure]"), "\(r.stderr)")
            try login(TestRegistry.password)
            #expect(try d.cli("secret", "ls").stdout.contains("registry-127.0.0.1_\(secure.port)"))
            #expect(!(try d.cli("secret", "ls", "--json").stdout.contains(TestRegistry.password)))

            // Pull by tag over TLS with the operator's CA and a login; the box sees both layers applied.
            r = try d.cli("image", "pull", ref, "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let pulled = try WireCoding.decoder().decode(ImageInfo.self, from: Data(r.stdout.utf8))
            let v2 = Digest.of(try secure.manifest("team/tool", "v2", ca: ca))
            #expect(pulled.reference == ref && pulled.digest == v2.rawValue)
            // Another tenant, with no login of its own, gets nothing from the login this one used.
            let globex = d.remote(try d.principalTokens(tenant: "globex", name: "bob").accessToken)
            do {
                let _: ImageInfo = try globex.call("POST", "/v1/images/pull", body: PullImageRequest(reference: ref))
                Issue.record("a tenant without a login pulled from the authenticated registry")
            } catch {
                #expect("\(error)".contains("needs a login"), "\(error)")
            }
            let box = try d.create(CreateSandboxRequest(name: "tool", image: ref))
            #expect(box.imageDigest == v2.rawValue)
            var (code, out, _) = try d.sh("tool", "cat /etc/second; test -e /etc/marker || echo whited-out")
            #expect(code == 0 && out == "two\nwhited-out\n", "\(out)")
            // By digest, and anonymously over plain HTTP from the loopback registry.
            r = try d.cli("image", "pull", "\(secure.host)/team/tool@\(v2.rawValue)", "--json")
            #expect(r.status == 0 && r.stdout.contains(v2.rawValue), "\(r.stderr)")
            _ = try d.create(CreateSandboxRequest(name: "plain", image: "\(plain.host)/open/tool:v1"))
            (_, out, _) = try d.sh("plain", "cat /etc/marker")
            #expect(out == "one\n")

            // The tag moves on the registry: what runs, and what a new box of the same reference gets
            // until the next pull, stays the pinned digest.
            try secure.push(layout, "v3", to: "team/tool:v2", certs: certs)
            let moved = Digest.of(try secure.manifest("team/tool", "v2", ca: ca))
            #expect(moved != v2)
            _ = try d.create(CreateSandboxRequest(name: "again", image: ref))
            #expect(try d.get("again").imageDigest == v2.rawValue)
            r = try d.cli("image", "pull", ref, "--json")
            #expect(r.status == 0 && r.stdout.contains(moved.rawValue), "\(r.stderr)")
            #expect(try d.get("tool").imageDigest == v2.rawValue, "a running box keeps its digest")
            (_, out, _) = try d.sh("tool", "cat /etc/second")
            #expect(out == "two\n")

            // Through an index: the entry for this host's platform.
            // The other platform's entry is another image, so picking the wrong one shows.
            try secure.push(layout, "v2", to: "team/multi:plain", certs: certs)
            try secure.push(layout, "v1", to: "team/multi:other", certs: certs)
            let manifest = try secure.manifest("team/multi", "plain", ca: ca)
            let other = try secure.manifest("team/multi", "other", ca: ca)
            #expect(Digest.of(other) != Digest.of(manifest))
            let index = """
                {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(Digest.of(other).rawValue)","size":\(other.count),"platform":{"architecture":"s390x","os":"linux"}},\
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(Digest.of(manifest).rawValue)","size":\(manifest.count),"platform":{"architecture":"amd64","os":"linux"}}]}
                """
            let put = try runCommand(
                "/usr/bin/curl",
                [
                    "-sf", "-X", "PUT", "--cacert", ca + "/ca.crt", "-u",
                    "\(TestRegistry.user):\(TestRegistry.password)",
                    "-H", "Content-Type: application/vnd.oci.image.index.v1+json", "--data-binary", index,
                    "\(secure.base)/v2/team/multi/manifests/latest",
                ])
            #expect(put.status == 0, "\(put.stderr)")
            r = try d.cli("image", "pull", "\(secure.host)/team/multi", "--json")
            #expect(r.status == 0 && r.stdout.contains(Digest.of(manifest).rawValue), "\(r.stdout) \(r.stderr)")

            // A blob changed on the registry's disk: detected, and nothing enters the store.
            try secure.push(layout, "v4", to: "team/bad:1", certs: certs)
            let bad = try JSONSerialization.jsonObject(with: secure.manifest("team/bad", "1", ca: ca)) as? [String: Any]
            let layers = try #require(bad?["layers"] as? [[String: Any]])
            let last = try #require(Digest(rawValue: layers.last?["digest"] as? String ?? ""))
            let blob = "\(secure.storage)/docker/registry/v2/blobs/sha256/\(last.hex.prefix(2))/\(last.hex)/data"
            let fd = open(blob, O_WRONLY)
            #expect(fd >= 0)
            _ = pwrite(fd, "garbage", 7, 40)
            close(fd)
            let images = d.stateDir + "/images"
            #expect(!FileSystem.exists("\(images)/blobs/sha256/\(last.hex)"), "the layer was already stored")
            r = try d.cli("image", "pull", "\(secure.host)/team/bad:1")
            #expect(r.status != 0 && r.stderr.contains("[digest_mismatch]"), "\(r.stderr)")
            #expect(!FileSystem.exists("\(images)/blobs/sha256/\(last.hex)"))
            #expect(try FileManager.default.contentsOfDirectory(atPath: images + "/tmp").isEmpty)
        }
    }

    /// `image import` of an OCI layout, an OCI archive and a docker-archive (as skopeo writes them),
    /// `image inspect`, `image push` to a real registry, and the store's garbage collection.
    @Test func importsPushesAndCollects() async throws {
        let work = "/tmp/vivarium-images-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        let layout = try buildTestLayout(work)
        func skopeo(_ args: String...) throws {
            let r = try runCommand("/usr/bin/skopeo", ["copy", "-q"] + args)
            guard r.status == 0 else { throw VivariumError(.internalError, "skopeo copy: \(r.stderr)") }
        }
        try skopeo("oci:\(layout):v2", "oci:\(work)/one:v2")
        try skopeo("oci:\(layout):v3", "oci-archive:\(work)/v3.tar")
        try skopeo("oci:\(layout):v1", "docker-archive:\(work)/v1.tar")
        let index = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: work + "/one/index.json")))
        let v2 = try #require(
            ((index as? [String: Any])?["manifests"] as? [[String: Any]])?.first?["digest"] as? String)
        let plain = try TestRegistry(ca: nil)

        try await TestDaemon.with(extraEnv: ["VIVARIUM_REGISTRY_PLAIN_HTTP": plain.host]) { d in
            let blobs = d.stateDir + "/images/blobs/sha256"
            // A layout of several images without platforms: which one is meant is not guessed.
            var r = try d.cli("image", "import", layout, "--name", "many")
            #expect(r.status != 0 && r.stderr.contains("holds 4 images"), "\(r.stderr)")
            // An OCI layout keeps its manifest: the digest is the layout's, the layers applied in order.
            r = try d.cli("image", "import", work + "/one", "--name", "two", "--json")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try WireCoding.decoder().decode(ImageInfo.self, from: Data(r.stdout.utf8)).digest == v2)
            _ = try d.create(CreateSandboxRequest(name: "two", image: "two"))
            var (code, out, _) = try d.sh("two", "cat /etc/second; test -e /etc/marker || echo whited-out")
            #expect(code == 0 && out == "two\nwhited-out\n", "\(out)")
            r = try d.cli("image", "inspect", "two", "--json")
            let details = try WireCoding.decoder().decode(ImageDetails.self, from: Data(r.stdout.utf8))
            #expect(details.image.digest == v2 && details.layers.count == 2 && details.os == "linux", "\(r.stdout)")

            // An OCI archive and a docker-archive, told apart by their marker files.
            r = try d.cli("image", "import", work + "/v3.tar", "--name", "three")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("image", "import", work + "/v1.tar", "--name", "one")
            #expect(r.status == 0, "\(r.stderr)")
            _ = try d.create(CreateSandboxRequest(name: "three", image: "three"))
            _ = try d.create(CreateSandboxRequest(name: "one", image: "one"))
            (_, out, _) = try d.sh("three", "cat /etc/marker /etc/third")
            #expect(out.hasPrefix("one\nthree-"), "\(out)")
            (_, out, _) = try d.sh("one", "cat /etc/marker; ls /etc")
            #expect(out == "one\nmarker\n", "\(out)")

            // A blob that is not what its name says, or a symlink out of the layout: refused, nothing kept.
            let bad = work + "/bad"
            try skopeo("oci:\(layout):v4", "oci:\(bad):v4")
            let badIndex = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: bad + "/index.json")))
            let badManifest = try #require(
                Digest(
                    rawValue: ((badIndex as? [String: Any])?["manifests"] as? [[String: Any]])?.first?["digest"]
                        as? String ?? ""))
            let m = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(bad)/blobs/sha256/\(badManifest.hex)")))
            let badConfig = try #require(((m as? [String: Any])?["config"] as? [String: Any])?["digest"] as? String)
            let layer = try #require(
                Digest(
                    rawValue: ((m as? [String: Any])?["layers"] as? [[String: Any]])?.last?["digest"] as? String ?? ""))
            let fd = open("\(bad)/blobs/sha256/\(layer.hex)", O_WRONLY)
            _ = pwrite(fd, "garbage", 7, 20)
            close(fd)
            let before = try FileManager.default.contentsOfDirectory(atPath: blobs).count
            r = try d.cli("image", "import", bad, "--name", "bad")
            #expect(r.status != 0 && r.stderr.contains("[digest_mismatch]"), "\(r.stderr)")
            unlink("\(bad)/blobs/sha256/\(badConfig.dropFirst(7))")
            _ = symlink("/etc/shadow", "\(bad)/blobs/sha256/\(badConfig.dropFirst(7))")
            r = try d.cli("image", "import", bad, "--name", "bad")
            #expect(r.status != 0 && r.stderr.contains("has no readable blobs/sha256/"), "\(r.stderr)")
            // The blobs copied before the failure are collected.
            #expect(try d.eventually { try FileManager.default.contentsOfDirectory(atPath: blobs).count == before })

            // Push: the registry holds the same manifest, and skopeo (verifying every digest) copies it.
            r = try d.cli("image", "push", "two", "\(plain.host)/pushed/two:1")
            #expect(r.status == 0 && r.stdout.contains(v2), "\(r.stdout) \(r.stderr)")
            #expect(Digest.of(try plain.manifest("pushed/two", "1", ca: nil)).rawValue == v2)
            try skopeo("--src-tls-verify=false", "docker://\(plain.host)/pushed/two:1", "oci:\(work)/back:1")
            r = try d.cli("image", "pull", "\(plain.host)/pushed/two:1", "--json")
            #expect(r.status == 0 && r.stdout.contains(v2), "\(r.stderr)")

            // Garbage collection: removing `three` drops its own layer and root, not the layer it shares
            // with `two`, which still pushes.
            let three = try WireCoding.decoder().decode(
                ImageDetails.self, from: Data(try d.cli("image", "inspect", "three", "--json").stdout.utf8))
            let shared = try #require(three.layers.first).digest
            let own = try #require(three.layers.last).digest
            #expect(details.layers.first?.digest == shared && own != shared)
            _ = try d.cli("rm", "-f", "three")
            r = try d.cli("image", "rm", "three")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(!FileSystem.exists("\(blobs)/\(own.hex)") && FileSystem.exists("\(blobs)/\(shared.hex)"))
            #expect(!FileSystem.exists(d.stateDir + "/images/rootfs/" + three.image.digest.dropFirst(7)))
            #expect(FileSystem.exists(d.stateDir + "/images/rootfs/" + v2.dropFirst(7)))
            r = try d.cli("image", "push", "two", "\(plain.host)/pushed/again:1")
            #expect(r.status == 0, "\(r.stderr)")

            // zstd layers (skopeo recompresses them): pulled, applied and shown as what they are.
            try skopeo("--dest-compress-format=zstd", "oci:\(layout):v2", "oci:\(work)/zstd:v2")
            try skopeo(
                "--dest-tls-verify=false", "--preserve-digests", "oci:\(work)/zstd:v2",
                "docker://\(plain.host)/zstd/tool:v2")
            r = try d.cli("image", "pull", "\(plain.host)/zstd/tool:v2")
            #expect(r.status == 0, "\(r.stderr)")
            let zstd = try WireCoding.decoder().decode(
                ImageDetails.self,
                from: Data(try d.cli("image", "inspect", "\(plain.host)/zstd/tool:v2", "--json").stdout.utf8))
            #expect(
                zstd.layers.map(\.mediaType)
                    == Array(repeating: "application/vnd.oci.image.layer.v1.tar+zstd", count: 2))
            _ = try d.create(CreateSandboxRequest(name: "z", image: "\(plain.host)/zstd/tool:v2"))
            (_, out, _) = try d.sh("z", "cat /etc/second; test -e /etc/marker || echo whited-out")
            #expect(out == "two\nwhited-out\n", "\(out)")
        }
    }

    /// `registry_mirrors`: a mirror that does not answer and one that lacks the image are passed over for
    /// the registry; with the registry gone, the mirror that holds the image serves it.
    @Test func pullsThroughMirrors() async throws {
        let work = "/tmp/vivarium-images-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        let layout = try buildTestLayout(work)
        let upstream = try TestRegistry(ca: nil)
        let mirror = try TestRegistry(ca: nil)
        let dead = "127.0.0.1:\(try freeLoopbackPort())"
        try upstream.push(layout, "v1", to: "open/tool:v1", certs: nil)
        try upstream.push(layout, "v2", to: "open/tool:v2", certs: nil)
        try mirror.push(layout, "v1", to: "open/tool:v1", certs: nil)
        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_REGISTRY_PLAIN_HTTP": "\(upstream.host),\(mirror.host),\(dead)",
            "VIVARIUM_REGISTRY_MIRRORS": "\(upstream.host)=\(dead),\(mirror.host)",
        ]) { d in
            let v2 = Digest.of(try upstream.manifest("open/tool", "v2", ca: nil)).rawValue
            let v1 = Digest.of(try mirror.manifest("open/tool", "v1", ca: nil)).rawValue
            var r = try d.cli("image", "pull", "\(upstream.host)/open/tool:v2", "--json")
            #expect(r.status == 0 && r.stdout.contains(v2), "\(r.stderr)")
            upstream.kill()
            r = try d.cli("image", "pull", "\(upstream.host)/open/tool:v1", "--json")
            #expect(r.status == 0 && r.stdout.contains(v1), "\(r.stderr)")
            _ = try d.create(CreateSandboxRequest(name: "m", image: "\(upstream.host)/open/tool:v1"))
            let (_, out, _) = try d.sh("m", "cat /etc/marker")
            #expect(out == "one\n")
            // A reference the mirror lacks, with the registry gone: a clear failure.
            r = try d.cli("image", "pull", "\(upstream.host)/open/other:v1")
            #expect(r.status != 0 && r.stderr.contains("does not answer"), "\(r.stderr)")
        }
    }

    /// The progress of a pull in flight: the daemon's `GET /v1/images/pulls` and the CLI's status line
    /// (on a terminal, through `script`), while a front server holds the last layer half sent.
    @Test func showsAPullInFlight() async throws {
        let work = "/tmp/vivarium-images-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        let layout = try buildTestLayout(work)
        let registry = try TestRegistry(ca: nil)
        try registry.push(layout, "v4", to: "slow/tool:v4", certs: nil)
        let manifest = try JSONSerialization.jsonObject(with: try registry.manifest("slow/tool", "v4", ca: nil))
        let layers = try #require((manifest as? [String: Any])?["layers"] as? [[String: Any]])
        let held = try #require(layers.last?["digest"] as? String)
        let heldSize = try #require(layers.last?["size"] as? Int)
        let server = try FrontServer(script: Self.holdingServer, in: work, [registry.base, held, work + "/release"])
        defer { server.stop() }
        let ref = "\(server.host)/slow/tool:v4"
        try await TestDaemon.with(extraEnv: ["VIVARIUM_REGISTRY_PLAIN_HTTP": server.host], tcp: true) { d in
            // The CLI on a terminal: `script` gives it one and keeps what it wrote.
            let cli = Process()
            cli.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            cli.arguments = ["-qfec", "\(Paths.vivarium) image pull \(ref)", work + "/typescript"]
            var environment = ProcessInfo.processInfo.environment
            for (k, v) in d.environment { environment[k] = v }
            cli.environment = environment
            cli.standardInput = FileHandle(forReadingAtPath: "/dev/null")
            cli.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            try cli.run()
            defer {
                if cli.isRunning { kill(cli.processIdentifier, SIGKILL) }
                cli.waitUntilExit()
            }
            var status: PullStatus?
            #expect(
                try d.eventually(20) {
                    let pulls: Page<PullStatus> = try d.client.call("GET", "/v1/images/pulls")
                    status = pulls.items.first
                    return status.map { $0.phase == "fetching" && $0.bytes > 0 && $0.blobsDone == $0.blobs - 1 }
                        ?? false
                })
            let s = try #require(status)
            #expect(s.reference == ref && s.totalBytes >= Int64(heldSize) && s.bytes < s.totalBytes, "\(s)")
            // Another tenant sees none of it.
            let other = d.remote(try d.principalTokens(tenant: "globex", name: "bob").accessToken)
            let theirs: Page<PullStatus> = try other.call("GET", "/v1/images/pulls")
            #expect(theirs.items.isEmpty)
            #expect(
                d.eventually(5) {
                    let shown = (try? String(contentsOfFile: work + "/typescript", encoding: .utf8)) ?? ""
                    return shown.contains("pulling \(ref): fetching, \(s.blobs - 1)/\(s.blobs) blobs")
                })
            #expect(FileManager.default.createFile(atPath: work + "/release", contents: Data()))
            #expect(d.eventually(20) { !cli.isRunning })
            #expect(cli.terminationStatus == 0)
            let shown = try String(contentsOfFile: work + "/typescript", encoding: .utf8)
            #expect(shown.contains(ref) && shown.contains("sha256:"), "\(shown)")
            let after: Page<PullStatus> = try d.client.call("GET", "/v1/images/pulls")
            #expect(after.items.isEmpty)
        }
    }

    /// A front for docker-registry that sends half of one blob, then waits for a file before the rest.
    static let holdingServer = #"""
        import os, sys, time, urllib.error, urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        upstream, held, release, port_file = sys.argv[1:5]

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_HEAD(self): self.forward(False)
            def do_GET(self): self.forward(True)
            def forward(self, body):
                r = urllib.request.Request(upstream + self.path, method=self.command)
                if self.headers.get("Accept"): r.add_header("Accept", self.headers["Accept"])
                try:
                    resp = urllib.request.urlopen(r)
                except urllib.error.HTTPError as e:
                    resp = e
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    if k.lower() in ("content-type", "docker-content-digest"): self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body: return
                if self.path.endswith("/blobs/" + held):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    while not os.path.exists(release): time.sleep(0.05)
                    self.wfile.write(data[len(data) // 2 :])
                else:
                    self.wfile.write(data)

        s = ThreadingHTTPServer(("127.0.0.1", 0), H)
        open(port_file, "w").write(str(s.server_address[1]))
        s.serve_forever()
        """#
}
