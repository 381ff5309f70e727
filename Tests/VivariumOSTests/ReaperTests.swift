import Foundation
import Glibc
import Testing
import VivariumCore
import VivariumOS

/// The one reaper as a subreaper: orphans it inherits are reaped by its sweep (waitid with WNOWAIT),
/// and a registered child's status is never taken by it.
@Suite(.serialized) struct ReaperTests {
    @Test func orphansAreReapedAndRegisteredChildrenKeepTheirStatus() async throws {
        try becomeSubreaper()
        defer { try? becomeSubreaper(false) }
        // sh leaves a sleep behind and exits: the sleep is this process's child now, registered nowhere.
        let out = try await Reaper.shared.run(Command("/bin/sh", ["-c", "sleep 0.2 & echo $!"]))
        let orphan = try #require(Int32(out.stdoutString.trimmingCharacters(in: .whitespacesAndNewlines)))
        let status = FileSystem.readAll("/proc/\(orphan)/status") ?? ""
        #expect(status.contains("PPid:\t\(getpid())\n"), "the orphan was reparented to this subreaper")
        // Registered children exiting meanwhile get their own status, never the sweep's.
        for i in 0..<20 {
            let r = try await Reaper.shared.run(Command("/bin/sh", ["-c", "exit \(i % 7 + 1)"]))
            #expect(r.status == .exited(Int32(i % 7 + 1)))
        }
        var state = processState(orphan)
        var waited = 0
        while state != nil, waited < 300 {
            try await Task.sleep(for: .milliseconds(10))
            state = processState(orphan)
            waited += 1
        }
        #expect(state == nil, "the orphan is still there (state \(state.map { String($0) } ?? "-"))")
    }
}
