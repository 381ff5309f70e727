import Foundation
import Testing
import VivariumCore
import VivariumEngine
import VivariumTestSupport

@Suite struct UIDRangeRegistryTests {
    @Test func refusesOverlappingBlocksOfAnotherInstance() throws {
        let dir = "/tmp/vivarium-uidreg-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(atPath: dir + "/a", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/b", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reg = UIDRangeRegistry(path: dir + "/ranges.json")
        try reg.claim(stateDir: dir + "/a", base: 1 << 28, count: 1 << 20)
        try reg.claim(stateDir: dir + "/a", base: 1 << 28, count: 1 << 20)  // the same instance again
        expectCode(.invalidArgument) {
            try reg.claim(stateDir: dir + "/b", base: (1 << 28) + (1 << 19), count: 1 << 20)
        }
        try reg.claim(stateDir: dir + "/b", base: (1 << 28) + (1 << 20), count: 1 << 20)
        // A vanished instance releases its block.
        try FileManager.default.removeItem(atPath: dir + "/a")
        try reg.claim(stateDir: dir + "/b", base: 1 << 28, count: 1 << 20)
    }
}
