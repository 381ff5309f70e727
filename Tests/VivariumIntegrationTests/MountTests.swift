import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// The mount table is read whole, however long it is (/proc files report size 0, and a reader that
/// trusts the size stops early: cleanup would then miss mounts and walk into them).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct MountTests {
    @Test func everyMountIsSeenInALongMountTable() throws {
        let dir = "/tmp/vivarium-mounts-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var made: [String] = []
        defer {
            for m in made.reversed() { try? Mounts.unmount(m) }
            try? FileManager.default.removeItem(atPath: dir)
        }
        for i in 0..<300 {
            let m = "\(dir)/m\(String(format: "%03d", i))"
            try FileManager.default.createDirectory(atPath: m, withIntermediateDirectories: true)
            let rc = m.withCString { mount("tmpfs", $0, "tmpfs", 0, "size=64k") }
            try #require(rc == 0)
            made.append(m)
        }
        #expect((FileSystem.readAll("/proc/self/mountinfo") ?? "").utf8.count > 24 << 10)
        #expect(Mounts.mounts(under: dir).count == 300)
        #expect(Mounts.isMountPoint(made.last!))
        try Mounts.unmountAll(under: dir)
        #expect(Mounts.mounts(under: dir).isEmpty)
        made.removeAll()
    }
}
