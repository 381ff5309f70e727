import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Disk quotas (issue 10, finding 3): a box that fills its quota gets EDQUOT, its neighbours keep
/// writing, the pool image stays preallocated, and a deleted box leaves no subvolume or qgroup behind.
/// Part of the limits suite (`--filter LimitsTests` runs these too).
extension LimitsTests {
    /// Loop devices backed by `image`, from `losetup -a` (shows what this test, and only it, attached).
    static func loopDevices(of image: String) -> [String] {
        let out = (try? runCommand("/usr/sbin/losetup", ["-a"]).stdout) ?? ""
        return out.split(separator: "\n").map(String.init).filter { $0.contains(image) }
    }

    /// /proc/mounts lines naming `path`.
    static func mountsNaming(_ path: String) -> [String] {
        (FileSystem.readAll("/proc/mounts") ?? "").split(separator: "\n").map(String.init).filter {
            $0.contains(path)
        }
    }

    /// Bytes allocated on disk for `path` (st_blocks × 512).
    static func allocatedBytes(_ path: String) -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { return -1 }
        return Int64(st.st_blocks) * 512
    }

    @Test func aBoxOverItsDiskQuotaGetsEDQUOTWhileItsNeighbourWrites() async throws {
        var root = ""
        var image = ""
        try await TestDaemon.with { d in
            root = d.root
            image = d.poolImage
            #expect(Self.loopDevices(of: image).count == 1, "the pool is one loop device")
            #expect(Btrfs.isBtrfs(d.poolMount))
            // Preallocated: every byte of the 512 MiB image is allocated before anything is written.
            let before = Self.allocatedBytes(image)
            #expect(before >= 512 << 20, "pool image allocates \(before) bytes")

            let full = try d.create(CreateSandboxRequest(name: "full", diskBytes: 32 << 20))
            let neighbour = try d.create(CreateSandboxRequest(name: "neighbour", diskBytes: 32 << 20))
            #expect(full.diskBytes == 32 << 20)
            let pool = try Btrfs.Directory(d.poolMount)
            let subvolume = try #require(pool.subvolumeID(full.id), "the box has a subvolume")

            // Fill the box for real: dd stops at the quota with EDQUOT, not ENOSPC.
            let (code, _, err) = try d.sh("full", "dd if=/dev/zero of=/fill bs=1M count=64 && sync", timeout: 60)
            #expect(code != 0)
            #expect(err.contains("Disk quota exceeded"), "dd: \(err)")
            #expect(!err.contains("No space left"), "dd: \(err)")
            // Metadata counts too: empty files in a box of their own stop at its 16 MiB limit, so the
            // file count is bounded by the same quota (about 46,000 files here).
            _ = try d.create(CreateSandboxRequest(name: "files", diskBytes: 16 << 20))
            let (_, files, ferr) = try d.sh(
                "files", "mkdir /many && cd /many && seq 1 200000 | xargs touch 2>&1 | tail -1; ls | wc -l",
                timeout: 120)
            #expect(files.contains("Disk quota exceeded"), "\(files) \(ferr)")
            let count = Int(files.split(separator: "\n").last.map(String.init) ?? "") ?? -1
            #expect(count > 1000 && count < 200_000, "empty files created under a 16 MiB quota: \(count)")

            // The neighbour is untouched by that and writes as usual.
            let (ncode, _, nerr) = try d.sh("neighbour", "dd if=/dev/zero of=/ok bs=1M count=8 && sync", timeout: 60)
            #expect(ncode == 0, "neighbour write: \(nerr)")
            #expect(try d.get("neighbour").diskUsageBytes ?? 0 >= 8 << 20)

            // inspect: usage against the limit, as the qgroup counts it.
            let inspected = try d.get("full")
            let used = inspected.diskUsageBytes ?? 0
            #expect(inspected.diskBytes == 32 << 20)
            #expect(used > 28 << 20 && used <= 32 << 20, "full box uses \(used) bytes")
            let shown = try d.cli("inspect", "full")
            #expect(shown.stdout.contains("of 32.0M") || shown.stdout.contains("of 32M"), "\(shown.stdout)")

            // The writes went into the preallocated image: nothing more was allocated on the host.
            #expect(Self.allocatedBytes(image) == before)

            // Delete removes the subvolume and its qgroup (the kernel drops a deleted subvolume's data
            // after the call; the qgroup goes with it).
            _ = try d.cli("rm", "-f", "full")
            #expect(!FileSystem.exists(d.poolMount + "/" + full.id))
            let gone = d.eventually(10) {
                pool.sync()
                return (try? pool.qgroups())?.contains { $0.id == subvolume } == false
            }
            #expect(gone, "qgroup 0/\(subvolume) is still there: \(String(describing: try? pool.qgroups()))")
            _ = neighbour
        }
        // Nothing left: no loop device on the image, no mount, no test directory.
        #expect(Self.loopDevices(of: image).isEmpty, "loop devices left: \(Self.loopDevices(of: image))")
        #expect(Self.mountsNaming(root).isEmpty, "mounts left: \(Self.mountsNaming(root))")
        #expect(!FileSystem.exists(root))
    }

    /// Disk quotas are budgeted like memory: one box at most the pool, all existing boxes at most twice
    /// it (512 MiB pool here: 1 GiB); a stopped box still counts, since its files stay.
    @Test func diskQuotasAreBoundedByThePool() async throws {
        try await TestDaemon.with { d in
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"huge","disk_bytes":\#(Int64(1) << 30)}"#, status: 422,
                code: "invalid_argument")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"tiny","disk_bytes":1024}"#, status: 422,
                code: "invalid_argument")
            _ = try d.create(CreateSandboxRequest(name: "a", diskBytes: 480 << 20))
            _ = try d.create(CreateSandboxRequest(name: "b", diskBytes: 480 << 20))
            _ = try d.cli("stop", "b")
            try expectAPIError(
                d, "POST", "/v1/sandboxes", body: #"{"name":"c","disk_bytes":\#(Int64(100) << 20)}"#, status: 503,
                code: "resource_exhausted")
            _ = try d.cli("rm", "-f", "b")
            _ = try d.create(CreateSandboxRequest(name: "c", diskBytes: 100 << 20))
        }
    }

    /// A full pool answers ENOSPC inside the box that hit it; the daemon (its database and audit trail
    /// live outside the pool) and the other boxes keep working.
    @Test func aFullPoolFailsOnlyWritesInsideBoxes() async throws {
        try await TestDaemon.with { d in
            _ = try d.create(CreateSandboxRequest(name: "hog", diskBytes: 512 << 20))
            _ = try d.create(CreateSandboxRequest(name: "other"))
            let (code, _, err) = try d.sh("hog", "dd if=/dev/zero of=/fill bs=1M count=700 && sync", timeout: 120)
            #expect(code != 0)
            #expect(err.contains("No space left on device"), "dd: \(err)")
            let (ocode, out, _) = try d.sh("other", "echo alive")
            #expect(ocode == 0 && out == "alive\n")
            _ = try d.cli("rm", "-f", "hog")
            let audit = try d.cli("audit", "ls", "--action", "sandbox.delete")
            #expect(audit.status == 0 && audit.stdout.contains("hog"), "\(audit.stdout) \(audit.stderr)")
        }
    }

    /// The reconciler removes subvolumes no record owns, and their qgroups.
    @Test func orphanSubvolumesAreRemovedAtStart() async throws {
        try await TestDaemon.with { d in
            d.stop()
            let pool = try Btrfs.Directory(d.poolMount)
            let orphan = try pool.createSubvolume("orphan0000000000", limitBytes: 16 << 20)
            #expect((try pool.qgroups()).contains { $0.id == orphan })
            try d.start()
            #expect(pool.subvolumeID("orphan0000000000") == nil)
            let gone = d.eventually(10) {
                pool.sync()
                return (try? pool.qgroups())?.contains { $0.id == orphan } == false
            }
            #expect(gone)
        }
    }
}
