import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// The file API and `vivarium cp`, attacked from inside a real sandbox: symlinks to the host's files,
/// `..`, magic links, a directory swapped for a symlink during uploads.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct FileTests {
    @Test func pathsStayInsideTheBoxAndFilesGetItsOwnership() async throws {
        try await TestDaemon.with { d in
            var request = CreateSandboxRequest(name: "f")
            request.diskBytes = 480 << 20
            _ = try d.create(request)
            let local = d.root + "/local"
            try FileSystem.makeDirectory(local, mode: 0o700)
            try "hello from the host\n".write(toFile: local + "/x", atomically: true, encoding: .utf8)
            _ = chmod(local + "/x", 0o640)

            // An upload to /tmp lands on the box's own /tmp (a tmpfs of its mount namespace), its root's.
            var r = try d.cli("cp", local + "/x", "f:/tmp/x")
            #expect(r.status == 0, "\(r.stderr)")
            var (code, out, _) = try d.sh("f", "cat /tmp/x; stat -c '%u:%g %a' /tmp/x")
            #expect(code == 0 && out == "hello from the host\n0:0 640\n", "\(out)")
            let info = try d.client.call(Endpoints.fileStat, name: "f", query: [("path", "/tmp/x")])
            #expect(info.uid == 0 && info.mode == "0640" && info.type == "file" && info.sizeBytes == 20)

            // A download keeps the box file's bits; a directory destination gets the source's name.
            _ = try d.sh("f", "echo made in the box > /root/out; chmod 600 /root/out")
            r = try d.cli("cp", "f:/root/out", local + "/")
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try String(contentsOfFile: local + "/out", encoding: .utf8) == "made in the box\n")
            var st = stat()
            #expect(stat(local + "/out", &st) == 0 && st.st_mode & 0o777 == 0o600)

            // A symlink to the host's /etc/shadow, `..` and the box's /proc magic links: none reads the host.
            #expect(FileSystem.exists("/etc/shadow"))
            _ = try d.sh("f", "ln -s /etc/shadow /tmp/shadow")
            for path in ["/tmp/shadow", "/../../../../etc/shadow", "../../etc/shadow", "/proc/1/root/etc/shadow"] {
                let got = try d.client.send(
                    "GET", Endpoints.fileRead.path(["name": "f"], query: [("path", path)]))
                #expect(got.status >= 400, "\(path) answered \(got.status)")
                #expect(!String(decoding: got.body, as: UTF8.self).contains("root:"), "\(path)")
            }
            r = try d.cli("cp", "f:/tmp/shadow", local + "/shadow")
            #expect(r.status != 0 && r.stderr.contains("no such file") && !FileSystem.exists(local + "/shadow"))

            // A directory symlink to /etc: the upload lands in the box's /etc, not the host's.
            let probe = "vivarium-probe-" + randomHex(bytes: 4)
            _ = try d.sh("f", "ln -s /etc /tmp/etcdir")
            r = try d.cli("cp", local + "/x", "f:/tmp/etcdir/\(probe)")
            #expect(r.status == 0, "\(r.stderr)")
            (_, out, _) = try d.sh("f", "cat /etc/\(probe)")
            #expect(out == "hello from the host\n")
            #expect(!FileSystem.exists("/etc/\(probe)"))

            // A symlink at the destination is replaced, never written through.
            _ = try d.sh("f", "ln -s /etc/passwd /tmp/pw")
            let passwd = try d.sh("f", "cat /etc/passwd").1
            r = try d.cli("cp", local + "/x", "f:/tmp/pw")
            #expect(r.status == 0)
            (_, out, _) = try d.sh("f", "cat /etc/passwd; test -L /tmp/pw || echo replaced")
            #expect(out == passwd + "replaced\n", "\(out)")

            // A directory swapped for a symlink to / while uploads go into it: each lands in the box.
            _ = try d.sh(
                "f",
                "mkdir -p /tmp/race; (while true; do rm -rf /tmp/race; ln -s / /tmp/race; rm /tmp/race; mkdir /tmp/race; done) >/dev/null 2>&1 &"
            )
            let racer = "vivarium-race-" + randomHex(bytes: 4)
            for _ in 0..<30 { _ = try d.cli("cp", local + "/x", "f:/tmp/race/\(racer)") }
            #expect(!FileSystem.exists("/\(racer)") && !FileSystem.exists("/tmp/\(racer)"))
            #expect(!FileSystem.exists(d.root + "/\(racer)"))
            _ = try d.sh("f", "pkill -f 'ln -s /' ; kill $(pgrep -f 'while true') 2>/dev/null; true")

            // mkdir -p, ls, mv, rm -r.
            r = try d.cli("files", "mkdir", "-p", "f", "/work/a/b")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("cp", local + "/x", "f:/work/a/b/")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("files", "mv", "f", "/work/a/b/x", "/work/a/y")
            #expect(r.status == 0, "\(r.stderr)")
            let listing = try d.client.call(Endpoints.fileList, name: "f", query: [("path", "/work/a")])
            #expect(listing.items.map(\.path) == ["/work/a/b", "/work/a/y"])
            #expect(listing.items.allSatisfy { $0.uid == 0 && $0.gid == 0 })
            r = try d.cli("files", "rm", "f", "/work")
            #expect(r.status != 0 && r.stderr.contains("not empty"), "\(r.stderr)")
            r = try d.cli("files", "rm", "-r", "f", "/work")
            #expect(r.status == 0, "\(r.stderr)")
            (code, _, _) = try d.sh("f", "test -e /work")
            #expect(code != 0)

            // 200 MB round trip, byte for byte.
            let big = local + "/big"
            let dd = try runCommand("/bin/dd", ["if=/dev/urandom", "of=\(big)", "bs=1M", "count=200", "status=none"])
            #expect(dd.status == 0)
            r = try d.cli("cp", big, "f:/root/big")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("cp", "f:/root/big", local + "/big.back")
            #expect(r.status == 0, "\(r.stderr)")
            let sums = try runCommand("/usr/bin/sha256sum", [big, local + "/big.back"]).stdout.split(separator: "\n")
                .map { $0.prefix(64) }
            #expect(sums.count == 2 && sums[0] == sums[1])
            (_, out, _) = try d.sh("f", "sha256sum /root/big")
            #expect(out.prefix(64) == sums.first)
        }
    }
}
