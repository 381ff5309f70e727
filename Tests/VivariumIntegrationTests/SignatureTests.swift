import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// An independent implementation of cosign's key-based signature format (simple-signing payload,
/// `sha256-<hex>.sig` tag, the signature in the layer annotation), on Python's `cryptography` and the
/// registry API over urllib. It shares no code with Vivarium.
let cosignTool = #"""
    import base64, hashlib, json, sys, urllib.request
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    def req(method, url, body=None, ctype=None, accept=None):
        r = urllib.request.Request(url, data=body, method=method)
        if ctype: r.add_header("Content-Type", ctype)
        if accept: r.add_header("Accept", accept)
        return urllib.request.urlopen(r)

    def put_blob(base, repo, data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        loc = req("POST", f"{base}/v2/{repo}/blobs/uploads/").headers["Location"]
        if loc.startswith("/"): loc = base + loc
        req("PUT", loc + ("&" if "?" in loc else "?") + "digest=" + d, data, "application/octet-stream")
        return d

    def payload(reference, digest):
        # Go's json.Marshal of cosign's SimpleContainerImage.
        return json.dumps({"critical": {"identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
            "optional": None}, separators=(",", ":")).encode()

    def sign(key, data):
        if isinstance(key, ec.EllipticCurvePrivateKey): return key.sign(data, ec.ECDSA(hashes.SHA256()))
        return key.sign(data)

    def verify(pub, sig, data):
        try:
            if isinstance(pub, ec.EllipticCurvePublicKey): pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
            else: pub.verify(sig, data)
            return True
        except Exception:
            return False

    cmd, keyfile, registry, repo, digest = sys.argv[1:6]
    base = "http://" + registry
    tag = digest.replace(":", "-") + ".sig"
    if cmd == "sign":
        claimed = sys.argv[6] if len(sys.argv) > 6 else digest
        key = serialization.load_pem_private_key(open(keyfile, "rb").read(), None)
        p = payload(f"{registry}/{repo}", claimed)
        pd = put_blob(base, repo, p)
        config = json.dumps({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": [pd]},
            "config": {}}).encode()
        cd = put_blob(base, repo, config)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd,
                "size": len(p), "annotations": {
                    "dev.cosignproject.cosign/signature": base64.b64encode(sign(key, p)).decode()}}]}
        req("PUT", f"{base}/v2/{repo}/manifests/{tag}", json.dumps(manifest).encode(),
            "application/vnd.oci.image.manifest.v1+json")
    elif cmd == "sign-referrer":
        # argv[6]: the registry the image is pulled from (named in the payload).
        # OCI 1.1: the signature manifest names the image as its subject and is pushed by digest only.
        key = serialization.load_pem_private_key(open(keyfile, "rb").read(), None)
        p = payload(f"{sys.argv[6]}/{repo}", digest)
        pd = put_blob(base, repo, p)
        empty = b"{}"
        ed = put_blob(base, repo, empty)
        m = req("GET", f"{base}/v2/{repo}/manifests/{digest}", accept="application/vnd.oci.image.manifest.v1+json")
        subject_size = len(m.read())
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ed, "size": 2},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd,
                "size": len(p), "annotations": {
                    "dev.cosignproject.cosign/signature": base64.b64encode(sign(key, p)).decode()}}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                "size": subject_size}}).encode()
        md = "sha256:" + hashlib.sha256(manifest).hexdigest()
        req("PUT", f"{base}/v2/{repo}/manifests/{md}", manifest, "application/vnd.oci.image.manifest.v1+json")
        print(json.dumps({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
            "size": len(manifest), "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}))
    elif cmd == "verify":
        pub = serialization.load_pem_public_key(open(keyfile, "rb").read())
        m = json.load(req("GET", f"{base}/v2/{repo}/manifests/{tag}",
            accept="application/vnd.oci.image.manifest.v1+json"))
        for layer in m["layers"]:
            if layer["mediaType"] != "application/vnd.dev.cosign.simplesigning.v1+json": continue
            p = req("GET", f"{base}/v2/{repo}/blobs/{layer['digest']}").read()
            assert "sha256:" + hashlib.sha256(p).hexdigest() == layer["digest"]
            sig = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
            c = json.loads(p)["critical"]
            if (verify(pub, sig, p) and c["image"]["docker-manifest-digest"] == digest
                    and c["identity"]["docker-reference"] == f"{registry}/{repo}"
                    and c["type"] == "cosign container image signature"):
                sys.exit(0)
        sys.exit(1)
    """#

/// A registry with the OCI 1.1 referrers API in front of docker-registry 2.8 (which has none): every
/// request goes to the real registry except `GET /v2/<repo>/referrers/<digest>`, answered from a file of
/// referrers indexes shaped as the distribution spec's example response.
let referrersServer = #"""
    import json, re, sys, urllib.error, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    upstream, table, port_file = sys.argv[1], sys.argv[2], sys.argv[3]

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_HEAD(self): self.forward(False)
        def do_GET(self):
            m = re.match(r"^/v2/(.+)/referrers/(sha256:[0-9a-f]{64})(\\?.*)?$", self.path)
            if m:
                key = m.group(1) + "@" + m.group(2)
                entries = json.load(open(table)).get(key, [])
                body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": entries}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.forward(True)
        def forward(self, body):
            r = urllib.request.Request(upstream + self.path, method=self.command)
            for h in ("Accept",):
                if self.headers.get(h): r.add_header(h, self.headers[h])
            try:
                resp = urllib.request.urlopen(r)
            except urllib.error.HTTPError as e:
                resp = e
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.headers.items():
                if k.lower() in ("content-type", "docker-content-digest", "content-length"): self.send_header(k, v)
            self.end_headers()
            if body: self.wfile.write(data)

    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    open(port_file, "w").write(str(s.server_address[1]))
    s.serve_forever()
    """#

@Suite(.serialized, .enabled(if: Integration.enabled)) struct SignatureTests {
    @Test func admitsOnlyImagesSignedByTrustedKeysInCosignsFormat() async throws {
        let work = "/tmp/vivarium-signatures-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        let tool = work + "/cosign_tool.py"
        try cosignTool.write(toFile: tool, atomically: true, encoding: .utf8)
        // Keys: trusted P-256 (SEC1 PEM, as `openssl ecparam` writes it) and Ed25519 (PKCS#8), an
        // untrusted P-256.
        try TestRegistry.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", work + "/p256.pem"])
        try TestRegistry.openssl(["genpkey", "-algorithm", "ed25519", "-out", work + "/ed.pem"])
        try TestRegistry.openssl([
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", work + "/rogue.pem",
        ])
        for k in ["p256", "ed", "rogue"] {
            try TestRegistry.openssl(["pkey", "-in", "\(work)/\(k).pem", "-pubout", "-out", "\(work)/\(k).pub"])
        }
        let layout = try buildTestLayout(work)
        let registry = try TestRegistry(ca: nil)
        let host = registry.host
        func digest(_ repo: String, _ tag: String) throws -> Digest {
            Digest.of(try registry.manifest(repo, tag, ca: nil))
        }
        func python(_ args: String...) throws -> Int32 {
            try runCommand("/usr/bin/env", ["python3", tool] + args).status
        }
        for (repo, tag) in [
            ("signed/app", "v1"), ("signed/py", "v3"), ("signed/ed", "v2"), ("signed/none", "v4"),
            ("signed/rogue", "v1"), ("signed/other", "v3"), ("open/app", "v4"), ("pinned/app", "v1"),
        ] {
            try registry.push(layout, tag, to: "\(repo):v1", certs: nil)
        }
        try """
        [default]
        signature = "warn"

        [[scope]]
        name = "\(host)/signed"
        keys = ["\(work)/p256.pub", "\(work)/ed.pub"]

        [[scope]]
        name = "\(host)/pinned"
        signature = "off"
        require_digest = true
        """.write(toFile: work + "/policy.toml", atomically: true, encoding: .utf8)

        // Signatures made with the independent tool: by the trusted key; by an untrusted one; by the
        // trusted key over a payload that names another digest.
        let (pyV1, rogueV1, otherV1, appV1) = (
            try digest("signed/py", "v1"), try digest("signed/rogue", "v1"), try digest("signed/other", "v1"),
            try digest("signed/app", "v1")
        )
        #expect(try python("sign", work + "/p256.pem", host, "signed/py", pyV1.rawValue) == 0)
        #expect(try python("sign", work + "/rogue.pem", host, "signed/rogue", rogueV1.rawValue) == 0)
        #expect(try python("sign", work + "/p256.pem", host, "signed/other", otherV1.rawValue, appV1.rawValue) == 0)

        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_REGISTRY_PLAIN_HTTP": host, "VIVARIUM_IMAGE_POLICY": work + "/policy.toml",
        ]) { d in
            // Unsigned under enforce: refused before any layer is fetched, by pull and by create alike.
            let noneLast =
                try #require(
                    (try JSONSerialization.jsonObject(with: registry.manifest("signed/none", "v1", ca: nil))
                        as? [String: Any])?["layers"] as? [[String: Any]]
                ).last?["digest"] as? String
            let noneV1 = try digest("signed/none", "v1")
            var r = try d.cli("image", "pull", "\(host)/signed/none:v1")
            #expect(
                r.status != 0 && r.stderr.contains("no signature") && r.stderr.contains("[image_refused]"),
                "\(r.stderr)")
            #expect(!FileSystem.exists(d.stateDir + "/images/blobs/sha256/" + (noneLast ?? "x").dropFirst(7)))
            r = try d.cli("create", "nosig", "--image", "\(host)/signed/none:v1")
            #expect(r.status != 0 && r.stderr.contains("[image_refused]"), "\(r.stderr)")
            #expect(try d.cli("ls").stdout.contains("nosig") == false)
            // Signed by a key nobody trusts; signed by the trusted key for another digest.
            r = try d.cli("image", "pull", "\(host)/signed/rogue:v1")
            #expect(
                r.status != 0 && r.stderr.contains("no valid signature by a trusted key")
                    && r.stderr.contains("[image_refused]"), "\(r.stderr)")
            r = try d.cli("image", "pull", "\(host)/signed/other:v1")
            #expect(
                r.status != 0 && r.stderr.contains("names another digest") && r.stderr.contains("[image_refused]"),
                "\(r.stderr)")

            // Signed by the independent tool with the trusted key: admitted, and the box runs it.
            r = try d.cli("image", "pull", "\(host)/signed/py:v1")
            #expect(r.status == 0, "\(r.stderr)")
            _ = try d.create(CreateSandboxRequest(name: "py", image: "\(host)/signed/py:v1"))
            let (code, out, _) = try d.sh("py", "cat /etc/third")
            #expect(code == 0 && out.hasPrefix("three-"), "\(out)")

            // Vivarium's own signatures (P-256 and Ed25519) verify with the independent code, and only
            // with the key that made them; the daemon then admits the images.
            r = try d.cli("image", "sign", "\(host)/signed/app:v1", "--key", work + "/p256.pem")
            #expect(r.status == 0 && r.stdout.contains(appV1.rawValue), "\(r.stderr)")
            #expect(try python("verify", work + "/p256.pub", host, "signed/app", appV1.rawValue) == 0)
            #expect(try python("verify", work + "/rogue.pub", host, "signed/app", appV1.rawValue) == 1)
            r = try d.cli("image", "sign", "\(host)/signed/ed:v1", "--key", work + "/ed.pem")
            #expect(r.status == 0, "\(r.stderr)")
            let edV1 = try digest("signed/ed", "v1")
            #expect(try python("verify", work + "/ed.pub", host, "signed/ed", edV1.rawValue) == 0)
            for repo in ["signed/app", "signed/ed"] {
                r = try d.cli("image", "pull", "\(host)/\(repo):v1")
                #expect(r.status == 0, "\(repo): \(r.stderr)")
            }
            // Signing again keeps the first signature next to the new one.
            r = try d.cli("image", "sign", "\(host)/signed/app:v1", "--key", work + "/rogue.pem")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try python("verify", work + "/p256.pub", host, "signed/app", appV1.rawValue) == 0)
            #expect(try python("verify", work + "/rogue.pub", host, "signed/app", appV1.rawValue) == 0)

            // A manifest swapped under the signed tag: its signature no longer covers what the tag names.
            try registry.push(layout, "v4", to: "signed/app:v1", certs: nil)
            r = try d.cli("image", "pull", "\(host)/signed/app:v1")
            #expect(r.status != 0 && r.stderr.contains("[image_refused]"), "\(r.stderr)")

            // Outside the enforcing scope: admitted under warn, and the outcome audited.
            r = try d.cli("image", "pull", "\(host)/open/app:v1")
            #expect(r.status == 0, "\(r.stderr)")
            let audit = try d.cli("audit", "ls", "--action", "image.pull", "--json")
            #expect(audit.stdout.contains("unverified (warn): no signature"), "\(audit.stdout)")
            #expect(audit.stdout.contains("verified: key"), "\(audit.stdout)")
            // Each refusal is on the trail with the digest refused.
            let refusals = try d.cli("audit", "ls", "--action", "image.pull", "--outcome", "refused", "--json")
            #expect(
                refusals.stdout.contains(noneV1.rawValue) && refusals.stdout.contains(rogueV1.rawValue),
                "\(refusals.stdout)")

            // require_digest: a tag is refused before any connection; the digest is admitted.
            r = try d.cli("image", "pull", "\(host)/pinned/app:v1")
            #expect(
                r.status != 0 && r.stderr.contains("require_digest") && r.stderr.contains("[image_refused]"),
                "\(r.stderr)")
            r = try d.cli("image", "pull", "\(host)/pinned/app@\(try digest("pinned/app", "v1").rawValue)")
            #expect(r.status == 0, "\(r.stderr)")
        }
    }

    /// Registries with the referrers API: a signature found there (and only there) admits the image; a
    /// referrer of another artifact type is not taken for a signature; one by an untrusted key refuses.
    @Test func findsSignaturesThroughTheReferrersAPI() async throws {
        let work = "/tmp/vivarium-referrers-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        try cosignTool.write(toFile: work + "/cosign_tool.py", atomically: true, encoding: .utf8)
        try TestRegistry.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", work + "/key.pem"])
        try TestRegistry.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", work + "/rogue.pem"])
        try TestRegistry.openssl(["pkey", "-in", work + "/key.pem", "-pubout", "-out", work + "/key.pub"])
        let layout = try buildTestLayout(work)
        let registry = try TestRegistry(ca: nil)
        try registry.push(layout, "v1", to: "ref/good:v1", certs: nil)
        try registry.push(layout, "v3", to: "ref/bad:v1", certs: nil)
        try registry.push(layout, "v1", to: "ref/typed:v1", certs: nil)
        let good = Digest.of(try registry.manifest("ref/good", "v1", ca: nil))
        let bad = Digest.of(try registry.manifest("ref/bad", "v1", ca: nil))
        let server = try FrontServer(script: referrersServer, in: work, [registry.base, work + "/table.json"])
        defer { server.stop() }
        let host = server.host
        func referrer(_ key: String, _ repo: String, _ d: Digest) throws -> [String: Any] {
            let r = try runCommand(
                "/usr/bin/env",
                ["python3", work + "/cosign_tool.py", "sign-referrer", key, registry.host, repo, d.rawValue, host])
            #expect(r.status == 0, "\(r.stderr)")
            return try #require(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        }
        let goodSig = try referrer(work + "/key.pem", "ref/good", good)
        let badSig = try referrer(work + "/rogue.pem", "ref/bad", bad)
        // A referrer of another artifact type is not a signature, whatever it holds: here a valid one.
        var sbom = try referrer(work + "/key.pem", "ref/typed", good)
        sbom["artifactType"] = "application/spdx+json"
        let table: [String: Any] = [
            "ref/good@\(good.rawValue)": [goodSig], "ref/bad@\(bad.rawValue)": [badSig],
            "ref/typed@\(good.rawValue)": [sbom],
        ]
        try JSONSerialization.data(withJSONObject: table).write(to: URL(fileURLWithPath: work + "/table.json"))
        try """
        [[scope]]
        name = "\(host)/ref"
        keys = ["\(work)/key.pub"]
        """.write(toFile: work + "/policy.toml", atomically: true, encoding: .utf8)
        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_REGISTRY_PLAIN_HTTP": host, "VIVARIUM_IMAGE_POLICY": work + "/policy.toml",
        ]) { d in
            var r = try d.cli("image", "pull", "\(host)/ref/good:v1")
            #expect(r.status == 0, "\(r.stderr)")
            let audit = try d.cli("audit", "ls", "--action", "image.pull", "--outcome", "ok", "--json")
            #expect(audit.stdout.contains("(referrers)"), "\(audit.stdout)")
            r = try d.cli("image", "pull", "\(host)/ref/bad:v1")
            #expect(
                r.status != 0 && r.stderr.contains("no valid signature by a trusted key")
                    && r.stderr.contains("[image_refused]"), "\(r.stderr)")
            r = try d.cli("image", "pull", "\(host)/ref/typed:v1")
            #expect(
                r.status != 0 && r.stderr.contains("no signature") && r.stderr.contains("[image_refused]"),
                "\(r.stderr)")
        }
    }
}
