import Foundation
import Glibc
import Testing
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Mount points found without the mount table (statx) and with it, and the trash's refusal to remove
/// through a mount: real tmpfs mounts in a temporary directory, root only.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct MountTableTests {
    func withDir(_ body: (String) async throws -> Void) async throws {
        let dir = "/tmp/vivarium-mnt-\(randomHex(bytes: 6))"
        try FileSystem.makeDirectory(dir, mode: 0o700)
        defer {
            try? Mounts.unmountAll(under: dir)
            _ = try? runCommand("/bin/rm", ["-rf", "--one-file-system", dir])
        }
        try await body(dir)
    }

    func tmpfs(_ target: String) throws {
        try FileSystem.makeDirectory(target, mode: 0o700)
        let r = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", target])
        try #require(r.status == 0, "mount: \(r.stderr)")
    }

    @Test func mountRootsAreSeenByStatxAndByTheTable() async throws {
        try await withDir { dir in
            let spaced = dir + "/with space"
            try tmpfs(spaced)
            try tmpfs(spaced)  // stacked twice
            #expect(Mounts.isMountRoot(spaced))
            #expect(!Mounts.isMountRoot(dir))
            #expect(!Mounts.isMountRoot(dir + "/absent"))
            #expect(Mounts.mounts(under: dir) == [spaced, spaced], "the table's escapes are decoded (\\040)")
            try Mounts.unmountStack(spaced)
            #expect(!Mounts.isMountRoot(spaced) && Mounts.mounts(under: dir).isEmpty, "both layers are gone")
        }
    }

    @Test func theTrashNeverRemovesThroughAMount() async throws {
        try await withDir { dir in
            let trash = try Trash(dir: dir + "/trash")
            // A known mount point: refused at once.
            try tmpfs(dir + "/a/rootfs")
            expectCode(.internalError) { try trash.discard(dir + "/a", checking: [dir + "/a/rootfs"]) }
            // An unexpected mount deeper down: moved, but the trash will not remove that tree.
            try tmpfs(dir + "/b/deep/mnt")
            try Data("keep".utf8).write(to: URL(fileURLWithPath: dir + "/b/deep/mnt/file"))
            try trash.discard(dir + "/b", checking: [])
            #expect(await trash.empty() == 0)
            let moved = try #require(Mounts.mounts(under: dir + "/trash").first)
            #expect(FileManager.default.contents(atPath: moved + "/file") == Data("keep".utf8))
            // Once unmounted, it goes.
            try Mounts.unmountAll(under: dir + "/trash")
            #expect(await trash.empty() == 1)
            #expect(trash.isEmpty)
        }
    }
}
