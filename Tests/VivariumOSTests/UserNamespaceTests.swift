import Foundation
import Glibc
import Synchronization
import Testing
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// The idmapping helper under concurrency: every create makes one, and a helper that depended on
/// another thread's descriptors froze the daemon when two creates met (THREATS.md T12).
@Suite(.serialized, .enabled(if: Integration.enabled)) struct UserNamespaceTests {
    @Test func concurrentHelpersNeverWaitForEachOther() async throws {
        let threads = 32
        let rounds = 40
        let done = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        for t in 0..<threads {
            // Plain threads, as blocked cooperative threads would hide a hang behind each other.
            let thread = Thread {
                for _ in 0..<rounds {
                    do {
                        let ns = try UserNamespace(base: (1 << 30) + Int64(t) * 65536, size: 65536)
                        var st = stat()
                        if fstat(ns.fd, &st) != 0 { failures.withLock { $0.append("fstat: \(errno)") } }
                    } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
                done.add(1, ordering: .relaxed)
            }
            thread.start()
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while done.load(ordering: .relaxed) < threads, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(
            done.load(ordering: .relaxed) == threads,
            "helpers hung: \(threads - done.load(ordering: .relaxed)) threads stuck")
        #expect(failures.withLock { $0 } == [])
    }
}
