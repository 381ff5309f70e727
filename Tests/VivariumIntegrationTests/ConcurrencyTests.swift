import Foundation
import Synchronization
import Testing
import VivariumClient
import VivariumCore
import VivariumTestSupport

/// Bursts of concurrent creates (THREATS.md T12): the daemon keeps answering while they run, and a
/// burst leaves exactly what it was asked for.
@Suite(.serialized, .enabled(if: Integration.enabled)) struct ConcurrencyTests {
    /// Runs `body(i)` for 0..<n on plain threads at once and returns the errors.
    func parallel(_ n: Int, _ body: @escaping @Sendable (Int) throws -> Void) async -> [String] {
        let errors = Mutex<[String]>([])
        let done = Atomic<Int>(0)
        for i in 0..<n {
            Thread {
                do { try body(i) } catch { errors.withLock { $0.append("\(i): \(error)") } }
                done.add(1, ordering: .relaxed)
            }.start()
        }
        let deadline = ContinuousClock.now + .seconds(120)
        while done.load(ordering: .relaxed) < n, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        if done.load(ordering: .relaxed) < n {
            errors.withLock { $0.append("\(n - done.load(ordering: .relaxed)) calls hung") }
        }
        return errors.withLock { $0 }
    }

    @Test func burstsOfConcurrentCreatesNeverFreezeTheDaemon() async throws {
        // 0.1 CPU each: 32 boxes at the default 1 CPU would be over a 2-CPU host's budget (8× its CPUs).
        let width = 32
        try await TestDaemon.with(extraEnv: ["VIVARIUM_MAX_SANDBOXES": "40", "VIVARIUM_LOG_LEVEL": "warning"]) { d in
            let socket = d.socket
            let slowest = Mutex<Duration>(.zero)
            let stop = Atomic<Bool>(false)
            // A prober asks /healthz throughout: each answer within 1 s.
            let prober = Thread {
                var http = SocketHTTPClient(socketPath: socket)
                http.receiveTimeout = .seconds(5)
                while !stop.load(ordering: .relaxed) {
                    let t = ContinuousClock.now
                    let ok = (try? http.send("GET", "/healthz").status) == 200
                    let took = ok ? ContinuousClock.now - t : .seconds(5)
                    slowest.withLock { $0 = max($0, took) }
                    usleep(50_000)
                }
            }
            prober.start()
            defer { stop.store(true, ordering: .relaxed) }
            for round in 0..<4 {
                let created = await parallel(width) { i in
                    let c = APIClient(socketPath: socket)
                    let _: SandboxInfo = try c.call(
                        "POST", "/v1/sandboxes",
                        body: CreateSandboxRequest(name: "r\(round)-\(i)", memoryBytes: 32 << 20, milliCpus: 100))
                }
                #expect(created == [], "round \(round)")
                let deleted = await parallel(width) { i in
                    try APIClient(socketPath: socket).callNoContent("DELETE", "/v1/sandboxes/r\(round)-\(i)?force=true")
                }
                #expect(deleted == [], "round \(round)")
            }
            stop.store(true, ordering: .relaxed)
            #expect(slowest.withLock { $0 } < .seconds(1), "the daemon answered /healthz within 1 s throughout")
            let page: Page<SandboxInfo> = try d.client.call("GET", "/v1/sandboxes")
            #expect(page.items.isEmpty)
            #expect(try d.crunContainers().isEmpty && d.mounts().isEmpty, "nothing is left on the host")
        }
    }

    /// Create, exec, stop, start and delete of one name at once: each answer is a success, 404 or 409,
    /// never a 500, and no error names a host path.
    @Test func racingLifecycleCallsOnOneNameAnswer404Or409() async throws {
        try await TestDaemon.with(extraEnv: ["VIVARIUM_LOG_LEVEL": "warning"]) { d in
            let socket = d.socket
            let stateDir = d.stateDir
            let calls: [(String, String, String?)] = [
                ("POST", "/v1/sandboxes", #"{"name":"race","memory_bytes":33554432}"#),
                ("POST", "/v1/sandboxes/race/exec", #"{"argv":["true"]}"#),
                ("POST", "/v1/sandboxes/race/stop", nil),
                ("POST", "/v1/sandboxes/race/start", nil),
                ("DELETE", "/v1/sandboxes/race?force=true", nil),
            ]
            let answers = Mutex<[String]>([])
            for _ in 0..<12 {
                let errors = await parallel(calls.count * 2) { i in
                    let (method, path, body) = calls[i % calls.count]
                    let r = try SocketHTTPClient(socketPath: socket).send(
                        method, path, body: body.map { Data($0.utf8) })
                    let text = String(decoding: r.body, as: UTF8.self)
                    answers.withLock { $0.append("\(r.status) \(method) \(path) \(text.prefix(300))") }
                }
                #expect(errors == [])
            }
            try? d.client.callNoContent("DELETE", "/v1/sandboxes/race?force=true")
            let bad = answers.withLock { $0 }.filter { answer in
                let status = Int(answer.prefix(3)) ?? 0
                return !((200..<300).contains(status) || status == 404 || status == 409)
                    || answer.contains(stateDir) || answer.contains("/sys/fs/cgroup") || answer.contains("/run/")
            }
            #expect(bad == [], "\(bad.joined(separator: "\n"))")
            let left = try d.crunContainers().count + d.mounts().count
            #expect(left == 0, "nothing is left on the host")
        }
    }
}
