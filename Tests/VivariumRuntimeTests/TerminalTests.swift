import Foundation
import Glibc
import Logging
import Testing
import VivariumAssets
import VivariumCore
import VivariumImages
import VivariumOCI
import VivariumOS
import VivariumRuntime
import VivariumTestSupport

/// One real sandbox (crun, the idmapped busybox root, the hardened bundle) run by a `HostRuntime`
/// directly, without a daemon. Everything it makes is removed afterwards, also when the test fails.
final class RuntimeFixture: Sendable {
    let root = "/tmp/vivarium-rt-\(randomHex(bytes: 6))"
    let cgroupParent = "vivarium-rt-\(randomHex(bytes: 4))"
    let runtime: HostRuntime
    let plan: BoxPlan

    init() async throws {
        let mode = CgroupMode.detect()
        for d in [root, root + "/sandboxes", root + "/init"] { try FileSystem.makeDirectory(d, mode: 0o711) }
        try FileSystem.makeDirectory(root + "/crun", mode: 0o700)
        try FileSystem.writeAtomically(Assets.initBinary, to: root + "/init/vivarium-init", mode: 0o555)
        try await ImageStore.buildBusyboxRootfs(at: root + "/image", busybox: "/bin/busybox")
        let logger = Logger(label: "test")
        runtime = try HostRuntime(
            layout: RuntimeLayout(
                sandboxesDir: root + "/sandboxes", specsDir: root + "/specs", trashDir: root + "/trash",
                cgroupParent: cgroupParent,
                initBinary: root + "/init/vivarium-init", stopTimeout: .seconds(2)),
            oci: Crun(root: root + "/crun", cgroupMode: mode, logger: logger), cgroups: CgroupHost(mode: mode),
            logger: logger)
        let id = SandboxID.random()
        // A block of host ids no daemon of this host uses (the same rule as TestDaemon's).
        let block = Int64(1 << 20)
        let base = (1 << 30) + Int64.random(in: 0..<((Int64(UInt32.max) - (1 << 30)) / block - 1)) * block
        plan = BoxPlan(
            id: id, hostname: "box", bundle: root + "/sandboxes/" + id.rawValue,
            cgroupPath: "/\(cgroupParent)/\(id.rawValue)", imageRootfs: root + "/image", uidBase: base,
            limits: .default, env: [:], readOnly: false)
    }

    /// Runs `body` against a booted sandbox, then tears everything down.
    static func with(_ body: (RuntimeFixture) async throws -> Void) async throws {
        let f = try await RuntimeFixture()
        do {
            try f.runtime.prepare(f.plan)
            _ = try await f.runtime.boot(f.plan, network: nil) { _, _, _ in }
            try await body(f)
        } catch {
            await f.cleanUp()
            throw error
        }
        await f.cleanUp()
    }

    func cleanUp() async {
        try? await runtime.destroy(plan, released: false)
        _ = await runtime.emptyTrash()
        try? Mounts.unmountAll(under: root)
        for h in CgroupHost(mode: CgroupMode.detect()).directories("/" + cgroupParent) { rmdir(h) }
        _ = try? runCommand("/bin/rm", ["-rf", "--one-file-system", root])
    }
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct TerminalTests {
    /// Reads the terminal until `text` has appeared (at most 10 s).
    func read(_ out: ByteStream, until text: String, into seen: inout String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !seen.contains(text) {
            guard ContinuousClock.now < deadline, let chunk = await out.next() else {
                Issue.record("the terminal never showed \(text.debugDescription); it showed \(seen.debugDescription)")
                return
            }
            seen += String(decoding: chunk, as: UTF8.self)
        }
    }

    @Test func aTerminalHasTheSizeItWasGivenAndFollowsAResize() async throws {
        try await RuntimeFixture.with { f in
            let command = try ExecCommand(
                argv: ["/bin/sh", "-c", "stty size; tty; read line; stty size; exit 7"], timeout: .seconds(30))
            let session = try await f.runtime.start(
                f.plan, command, terminal: RuntimeSpec.ConsoleSize(height: 33, width: 101), stdin: true)
            let terminal = try #require(session.terminal, "a terminal was asked for")
            var seen = ""
            try await read(terminal.output, until: "33 101", into: &seen)
            try await read(terminal.output, until: "/dev/pts/", into: &seen)
            try terminal.resize(RuntimeSpec.ConsoleSize(height: 50, width: 132))
            try await terminal.input.write(Array("go\n".utf8))
            try await read(terminal.output, until: "50 132", into: &seen)
            #expect(await session.wait() == 7, "the exit status comes through the terminal session")
            #expect(seen.contains("go"), "the terminal echoes what was typed, as a terminal does")
        }
    }
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct ExecSessionTests {
    /// A consumer that goes away (a cancelled request, a closed stream) takes the whole command with it:
    /// the command's cgroup is killed, background children included, as at a timeout.
    @Test func cancellingAnExecKillsEveryProcessOfIt() async throws {
        try await RuntimeFixture.with { f in
            let command = try ExecCommand(
                argv: ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait"], timeout: .seconds(600))
            let session = try await f.runtime.start(f.plan, command, terminal: nil, stdin: false)
            // The consumer is a child task, cancelled the way a dropped request cancels its handler.
            let (members, outcome, took) = try await withThrowingTaskGroup(of: ExecOutcome.self) { group in
                group.addTask { await session.outcome(timeout: command.timeout, limit: 1 << 16) }
                var tries = 0
                while session.cgroup.processes.count < 3, tries < 500 {
                    try await Task.sleep(for: .milliseconds(10))
                    tries += 1
                }
                let members = session.cgroup.processes
                let cancelled = ContinuousClock.now
                group.cancelAll()
                let outcome = try #require(try await group.next())
                return (members, outcome, ContinuousClock.now - cancelled)
            }
            #expect(members.count >= 3, "sh and both sleeps run in the command's cgroup")
            #expect(took < .seconds(5))
            #expect(!outcome.timedOut, "a cancellation is not a timeout")
            // The sandbox's init reaps the killed children it inherits: give it a moment.
            for _ in 0..<200 where members.contains(where: { kill($0, 0) == 0 }) {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(members.allSatisfy { kill($0, 0) != 0 }, "no process of the command survives")
        }
    }
}
