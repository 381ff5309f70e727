import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Attacks a real sandbox from an exec'd process (DESIGN.md "The hardened sandbox", THREATS.md T4).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct HardeningTests {
    @Test func execdProcessIsConfinedLikeTheInit() async throws {
        try await TestDaemon.with { d in
            let box = try d.create(CreateSandboxRequest(name: "hard"))
            // uid 0 inside is the sandbox's unprivileged host id outside.
            let (_, uidMap, _) = try d.sh("hard", "cat /proc/self/uid_map")
            let fields = uidMap.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            #expect(fields.count == 3)
            #expect(fields[0] == "0")
            #expect(Int64(fields[1]) == box.hostUidBase)
            #expect(box.hostUidBase >= d.uidBase && box.hostUidBase != 0)
            #expect(fields[2].trimmingCharacters(in: .whitespacesAndNewlines) == "65536")

            let (_, status, _) = try d.sh("hard", "cat /proc/self/status")
            func field(_ name: String) -> String? {
                status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map {
                    $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
                }
            }
            #expect(field("NoNewPrivs") == "1")
            #expect(field("Seccomp") == "2")
            // Exactly CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE.
            let allowed: UInt64 = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29].reduce(0) { $0 | (1 << $1) }
            let capEff = UInt64(field("CapEff") ?? "", radix: 16)
            #expect(capEff == allowed)
            #expect(UInt64(field("CapBnd") ?? "", radix: 16) == allowed)
            // SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE, DAC_READ_SEARCH, NET_RAW
            for forbidden in [21, 12, 19, 16, 2, 13] {
                #expect((capEff ?? 0) & (1 << UInt64(forbidden)) == 0)
            }

            // Each of these must fail from inside.
            let attacks = [
                "mount -t tmpfs none /mnt",
                "mount -o remount,rw /proc/sys",
                "unshare -U true",
                "unshare -n true",
                "unshare -m true",
                "echo hacked > /proc/sys/kernel/hostname",
                "echo 1 > /proc/sysrq-trigger",
                "echo x > /sys/kernel/uevent_helper",
                "mkdir /sys/fs/cgroup/escape",
                "mknod /tmp/sda b 8 0",
                "nsenter -t 1 -m true",
            ]
            for a in attacks {
                let (code, _, _) = try d.sh("hard", a + " 2>/dev/null")
                // 127 would mean the command is missing, which proves nothing.
                #expect(code != 0 && code != 127, "inside the sandbox, `\(a)` must be refused (got \(code))")
            }
            // Masked kernel information.
            // Masked paths read as empty files (bound to /dev/null): readable, and empty.
            for path in ["/proc/keys", "/proc/timer_list", "/proc/cmdline", "/sys/kernel/vmcoreinfo"] {
                guard FileManager.default.fileExists(atPath: path) else { continue }
                let (code, out, err) = try d.sh("hard", "cat \(path)")
                #expect(code == 0 && out.isEmpty, "\(path): exit \(code), \(out.count) bytes, \(err)")
            }
            // The root overlay's options, which the box reads in mountinfo, name no host state path.
            let (_, mountinfo, _) = try d.sh("hard", "cat /proc/self/mountinfo")
            let overlay = mountinfo.split(separator: "\n").filter { $0.contains(" - overlay ") }
            #expect(overlay.count == 1, "\(mountinfo)")
            for line in overlay {
                #expect(line.contains("lowerdir=") && !line.contains(d.stateDir), "\(line)")
            }
            // The devices cgroup allows the OCI default set only.
            if CgroupMode.detect() != .unified {
                let list = try String(
                    contentsOfFile: d.cgroupFile("devices", box.id, "devices.list"), encoding: .utf8)
                #expect(!list.contains("a *:* rwm"), "\(list)")
                #expect(list.contains("c 1:3 rwm") && list.contains("c 136:* rwm"), "\(list)")
                #expect(!list.contains("b 8:"), "\(list)")
            }
            let (_, hostname, _) = try d.sh("hard", "hostname")
            #expect(hostname.trimmingCharacters(in: .whitespacesAndNewlines) == "hard")
            // An exec'd process is inside the sandbox's cgroup in every hierarchy (its limits hold).
            let (_, cgroups, _) = try d.sh("hard", "cat /proc/self/cgroup")
            let lines = cgroups.split(separator: "\n").filter { !$0.hasPrefix("0::") }
            #expect(!lines.isEmpty)
            for line in lines { #expect(!line.contains(".."), "exec escaped the sandbox's cgroup: \(line)") }
            // A non-root exec user has no effective capabilities at all.
            let r = try d.exec("hard", ["/bin/sh", "-c", "grep CapEff /proc/self/status; id -u"], user: 1000)
            #expect(string(r.stdout).contains("0000000000000000"))
            #expect(string(r.stdout).contains("1000"))
        }
    }

    @Test func writesLandInTheSandboxUpperDirOnly() async throws {
        try await TestDaemon.with { d in
            let a = try d.create(CreateSandboxRequest(name: "writer"))
            _ = try d.create(CreateSandboxRequest(name: "neighbour"))
            let (code, _, _) = try d.sh("writer", "echo secret > /etc/planted && mkdir -p /opt/x && echo y > /opt/x/f")
            #expect(code == 0)
            // Only root and the sandbox's own range may enter its bundle; the database is root's alone.
            var bundle = stat()
            #expect(stat("\(d.stateDir)/sandboxes/\(a.id)", &bundle) == 0)
            #expect(bundle.st_mode & 0o777 == 0o710)
            #expect(bundle.st_uid == 0 && Int64(bundle.st_gid) == a.hostUidBase)
            var db = stat()
            #expect(stat(d.stateDir + "/db", &db) == 0)
            #expect(db.st_mode & 0o077 == 0)
            let upperFile = d.upperDir(a.id) + "/etc/planted"
            var st = stat()
            #expect(stat(upperFile, &st) == 0)
            #expect(Int64(st.st_uid) == a.hostUidBase)
            #expect(Int64(st.st_gid) == a.hostUidBase)
            // The shared image is untouched and the neighbour sees nothing.
            let images = try FileManager.default.contentsOfDirectory(atPath: d.stateDir + "/images/rootfs")
            for img in images {
                #expect(!FileManager.default.fileExists(atPath: "\(d.stateDir)/images/rootfs/\(img)/etc/planted"))
            }
            let (n, _, _) = try d.sh("neighbour", "test -e /etc/planted || test -e /opt/x")
            #expect(n != 0)
            // The image files seen through the idmapped lower are owned by the sandbox's root.
            let (_, owner, _) = try d.sh("writer", "stat -c %u /bin/busybox")
            #expect(owner.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        }
    }

    /// A static binary inside a box opens sockets of every family it can name: only unix, inet, inet6
    /// and netlink work; vsock (which would reach the host and the hypervisor past the network
    /// namespace), packet and alg answer EAFNOSUPPORT.
    @Test func socketsOfFamiliesABoxHasNoUseForAreRefused() async throws {
        let dir = "/tmp/vivarium-probe-\(randomHex(bytes: 4))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = #"""
            #include <errno.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <sys/socket.h>
            int main(int argc, char **argv) {
                for (int i = 1; i < argc; i++) {
                    int family = atoi(argv[i]);
                    int type = family == 16 ? SOCK_RAW : (family == 17 ? SOCK_DGRAM : SOCK_STREAM);
                    if (family == 38) type = SOCK_SEQPACKET;
                    int fd = socket(family, type, 0);
                    printf("%d=%d\n", family, fd >= 0 ? 0 : errno);
                }
                int sv[2];
                printf("pair40=%d\n", socketpair(40, SOCK_STREAM, 0, sv) == 0 ? 0 : errno);
                return 0;
            }
            """#
        try source.write(toFile: dir + "/probe.c", atomically: true, encoding: .utf8)
        let cc = try runCommand("/usr/bin/gcc", ["-static", "-O2", "-o", dir + "/probe", dir + "/probe.c"])
        try #require(cc.status == 0, "gcc -static: \(cc.stderr)")
        try await TestDaemon.with { d in
            let box = try d.create(CreateSandboxRequest(name: "sockets"))
            // Placed in the box's writable layer from the host, owned by the box's root.
            let target = d.upperDir(box.id) + "/probe"
            try FileManager.default.copyItem(atPath: dir + "/probe", toPath: target)
            #expect(chown(target, uid_t(box.hostUidBase), gid_t(box.hostUidBase)) == 0 && chmod(target, 0o755) == 0)
            let r = try d.exec("sockets", ["/probe", "40", "17", "38", "1", "2", "10", "16", "3", "45"])
            let out = String(decoding: r.stdout, as: UTF8.self)
            try #require(r.exitCode == 0, "probe: \(out) \(String(decoding: r.stderr, as: UTF8.self))")
            let results = Dictionary(
                uniqueKeysWithValues: out.split(separator: "\n").compactMap { line -> (String, Int32)? in
                    let kv = line.split(separator: "=")
                    return kv.count == 2 ? (String(kv[0]), Int32(kv[1]) ?? -1) : nil
                })
            for refused in ["40", "17", "38", "3", "45", "pair40"] {
                #expect(results[refused] == EAFNOSUPPORT, "family \(refused): \(out)")
            }
            for allowed in ["1", "2", "10", "16"] {
                #expect(results[allowed] == 0, "family \(allowed): \(out)")
            }
        }
    }

    @Test func readOnlyRoot() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "ro", readOnly: true))
            let (code, _, _) = try d.sh("ro", "touch /etc/x 2>/dev/null")
            #expect(code != 0)
            let (tmp, _, _) = try d.sh("ro", "touch /tmp/x && touch /run/y")
            #expect(tmp == 0)
        }
    }

    @Test func sandboxesSeeNeitherProcessesNorFilesOfEachOther() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "alpha"))
            _ = try d.create(CreateSandboxRequest(name: "beta"))
            let (c, _, _) = try d.sh("beta", "sleep 777 >/dev/null 2>&1 & echo beta-only > /tmp/marker; echo ok")
            #expect(c == 0)
            let (_, ps, _) = try d.sh("alpha", "ps -o pid,args")
            #expect(!ps.contains("sleep 777"))
            let (_, count, _) = try d.sh("alpha", "ls /proc | grep -c '^[0-9]'")
            #expect((Int(count.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99) <= 5)
            let (m, _, _) = try d.sh("alpha", "test -e /tmp/marker")
            #expect(m != 0)
            let (_, betaPs, _) = try d.sh("beta", "ps -o args")
            #expect(betaPs.contains("sleep 777"))
        }
    }
}
