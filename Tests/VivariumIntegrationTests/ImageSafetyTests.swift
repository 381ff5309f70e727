import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Image imports attacked the way the attack pass did: host paths from remote admins and into the state
/// directory, and hostile archives (device nodes, setuid, huge ids, symlink escapes, bombs, floods).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct ImageSafetyTests {
    /// Builds a tar archive with Python's tarfile from a small description: lines of
    /// `kind path [arg]` (file, dir, sym, chr, suid, bigid, zeros, many), gzip when `gz`.
    static func archive(_ path: String, gz: Bool = false, _ spec: String) throws {
        let script = #"""
            import io, sys, tarfile
            out, gz, spec = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
            t = tarfile.open(out, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT)
            def add(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, link=""):
                i = tarfile.TarInfo(name); i.type = kind; i.mode = mode; i.uid = uid; i.gid = uid
                i.linkname = link; i.size = len(data) if kind == tarfile.REGTYPE else 0
                t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
            class Zeros(io.RawIOBase):
                def __init__(self, n): self.n = n
                def readinto(self, b):
                    k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k
            for line in spec.strip().splitlines():
                kind, name, *arg = line.split()
                if kind == "file": add(name, data=open(arg[0], "rb").read() if arg else b"x\n", mode=0o755)
                elif kind == "dir": add(name, tarfile.DIRTYPE, mode=0o755)
                elif kind == "sym": add(name, tarfile.SYMTYPE, mode=0o777, link=arg[0])
                elif kind == "chr": i = tarfile.TarInfo(name); i.type = tarfile.CHRTYPE; i.mode = 0o666; i.devmajor = 1; i.devminor = 1; t.addfile(i)
                elif kind == "suid": add(name, data=b"#!/bin/sh\n", mode=0o6755)
                elif kind == "bigid": add(name, data=b"big\n", uid=4000000000)
                elif kind == "zeros": i = tarfile.TarInfo(name); i.size = int(arg[0]); t.addfile(i, Zeros(i.size))
                elif kind == "many":
                    for k in range(int(arg[0])): add(f"{name}/{k}")
            t.close()
            """#
        let r = try runCommand("/usr/bin/python3", ["-c", script, path, gz ? "1" : "0", spec])
        #expect(r.status == 0, "\(r.stderr)")
    }

    static func upload(_ c: APIClient, _ file: String, name: String, shared: Bool = false) throws -> HTTPAnswer {
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        return try c.send("POST", "/v1/images/upload?name=\(name)" + (shared ? "&shared=true" : ""), body: data)
    }

    static func code(_ a: HTTPAnswer) -> String {
        (try? WireCoding.decoder().decode(ErrorBody.self, from: a.body)).map { "\($0.error.code): \($0.error.message)" }
            ?? "\(a.status)"
    }

    static func freeBytes(_ path: String) -> Int64 {
        var s = statvfs()
        _ = statvfs(path, &s)
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    /// Nothing of a refused archive stays: no staging directory, no device node anywhere in the store.
    static func expectNothingStaged(_ d: TestDaemon) throws {
        let tmp = d.stateDir + "/images/tmp"
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []).isEmpty, "staging left in \(tmp)")
        let devices = try runCommand("/usr/bin/find", [d.stateDir + "/images", "-type", "c", "-o", "-type", "b"])
        #expect(devices.stdout.isEmpty, "device nodes on the host: \(devices.stdout)")
    }

    @Test func hostPathsAreLocalRootOnlyAndNeverTheStateDirectory() async throws {
        try await TestDaemon.with(tcp: true) { d in
            // A remote admin over the network cannot name a host path, least of all the keys.
            let admin = d.remote(try d.principalTokens(tenant: "default", name: "adm", role: "admin").accessToken)
            let remote = try admin.send(
                "POST", "/v1/images", body: Data(#"{"path":"\#(d.stateDir)/keys","name":"keys"}"#.utf8))
            #expect(remote.status == 403 && Self.code(remote).contains("unix socket"), "\(Self.code(remote))")
            // Local root cannot either: not the state directory, nothing in it, nothing holding it,
            // however the path is spelled.
            symlink(d.stateDir + "/keys", d.root + "/via-link")
            for path in [d.stateDir + "/keys", d.stateDir, "/", d.root, d.root + "/via-link", d.stateDir + "/../state"]
            {
                let r = try d.client.send(
                    "POST", "/v1/images", body: Data(#"{"path":"\#(path)","name":"x"}"#.utf8))
                #expect(r.status == 403 && Self.code(r).contains("state directory"), "\(path): \(Self.code(r))")
            }
            // A directory that reaches the state directory through a bind mount is imported without it.
            let dir = d.root + "/rootfs"
            try FileManager.default.createDirectory(atPath: dir + "/bin", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: dir + "/sneak", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: dir + "/bin/busybox")
            symlink("busybox", dir + "/bin/sh")
            #expect(try runCommand("/bin/mount", ["--bind", d.stateDir, dir + "/sneak"]).status == 0)
            defer { try? Mounts.unmount(dir + "/sneak") }
            let r = try d.cli("image", "import", dir, "--name", "sneaky")
            try Mounts.unmount(dir + "/sneak")
            #expect(r.status == 0, "\(r.stderr)")
            _ = try d.create(CreateSandboxRequest(name: "look", image: "sneaky"))
            let (_, listing, _) = try d.sh("look", "ls -A /sneak; cat /sneak/keys/* 2>&1 | head -c 200")
            #expect(!listing.contains("PRIVATE") && !listing.contains("signing"), "the state dir leaked: \(listing)")
            #expect(try d.exec("look", ["/bin/busybox", "ls", "-A", "/sneak"]).stdout.isEmpty)
        }
    }

    @Test func uploadedArchivesAreUnpackedUnderTheRules() async throws {
        try await TestDaemon.with(tcp: true) { d in
            let member = d.remote(try d.principalTokens(tenant: "acme", name: "ann").accessToken)
            let base = "file bin/busybox /bin/busybox\nsym bin/sh busybox\n"
            // Device nodes are refused, and none is ever made on the host.
            try Self.archive(d.root + "/dev.tar", base + "dir dev\nchr dev/mem\n")
            var r = try Self.upload(member, d.root + "/dev.tar", name: "devs")
            #expect(r.status == 422 && Self.code(r).contains("device node"), "\(Self.code(r))")
            try Self.expectNothingStaged(d)

            // setuid/setgid stripped, ids clamped, and a symlink cannot carry a member out of the root.
            let escape = "/opt/vivarium-escape-\(randomHex(bytes: 4))"
            try Self.archive(
                d.root + "/odd.tar.gz", gz: true,
                base
                    + "suid bin/su\nbigid big\ndir opt\ndir \(escape.dropFirst())\nsym evil \(escape)\nfile evil/owned\n"
            )
            r = try Self.upload(member, d.root + "/odd.tar.gz", name: "odd")
            #expect(r.status == 201, "\(Self.code(r))")
            #expect(!FileManager.default.fileExists(atPath: escape), "a member reached the host at \(escape)")
            let _: SandboxInfo = try member.call(
                "POST", "/v1/sandboxes", body: CreateSandboxRequest(name: "odd", image: "odd"))
            let out: ExecResult = try member.call(
                "POST", "/v1/sandboxes/odd/exec",
                body: ExecRequest(argv: ["stat -c '%a %u' /bin/su /big; cat \(escape)/owned"], shell: true))
            #expect(String(decoding: out.stdout, as: UTF8.self) == "755 0\n644 65534\nx\n")

            // A member's images are its tenant's: another tenant does not see them, and shared ones are
            // an admin's to make.
            r = try Self.upload(member, d.root + "/odd.tar.gz", name: "shared", shared: true)
            #expect(r.status == 403, "\(Self.code(r))")
            let other = d.remote(try d.principalTokens(tenant: "beta", name: "bob").accessToken)
            let seen: Page<ImageInfo> = try other.call("GET", "/v1/images")
            #expect(seen.items.map(\.name) == ["base"])
            let admin = d.remote(try d.principalTokens(tenant: "default", name: "adm", role: "admin").accessToken)
            r = try Self.upload(admin, d.root + "/odd.tar.gz", name: "shared", shared: true)
            #expect(r.status == 201, "\(Self.code(r))")
            let now: Page<ImageInfo> = try other.call("GET", "/v1/images")
            #expect(Set(now.items.map(\.name)) == ["base", "shared"])
            try Self.expectNothingStaged(d)
        }
    }

    @Test func bombsAndFloodsAreRefusedWhileStreaming() async throws {
        try await TestDaemon.with(extraEnv: ["VIVARIUM_IMAGE_MAX_ENTRIES": "1000"]) { d in
            // 1,500 empty files against a bound of 1,000 members.
            try Self.archive(d.root + "/flood.tar.gz", gz: true, "many f 1500")
            var r = try Self.upload(d.client, d.root + "/flood.tar.gz", name: "flood")
            #expect(r.status == 422 && Self.code(r).contains("more than 1000 members"), "\(Self.code(r))")
            // 1 GiB of zeros in about 1 MiB of gzip: refused once past 100× its compressed size, long
            // before the gigabyte is written (no plain staging copy is ever made).
            try Self.archive(d.root + "/bomb.tar.gz", gz: true, "zeros z \(1 << 30)")
            let before = Self.freeBytes(d.stateDir)
            r = try Self.upload(d.client, d.root + "/bomb.tar.gz", name: "bomb")
            #expect(r.status == 422 && Self.code(r).contains("decompression bomb"), "\(Self.code(r))")
            #expect(before - Self.freeBytes(d.stateDir) < 256 << 20)
            try Self.expectNothingStaged(d)
            // The same gigabyte as zstd (some 30 KiB): the same bound.
            let zstd = try runCommand(
                "/bin/sh", ["-c", "zcat \(d.root)/bomb.tar.gz | zstd -q -o \(d.root)/bomb.tar.zst"])
            #expect(zstd.status == 0, "\(zstd.stderr)")
            r = try Self.upload(d.client, d.root + "/bomb.tar.zst", name: "zbomb")
            #expect(r.status == 422 && Self.code(r).contains("decompression bomb"), "\(Self.code(r))")
            try Self.expectNothingStaged(d)
            // A host archive goes through the same rules.
            let local = try d.cli("image", "import", d.root + "/flood.tar.gz", "--name", "flood")
            #expect(local.status != 0 && local.stderr.contains("more than 1000 members"), "\(local.stderr)")
        }
    }
}
