import Foundation
import Glibc
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumTestSupport

/// Streams against `crun exec` of the same box in the same run, interleaved: the first output byte of a
/// streamed exec (WebSocket over the unix socket), the throughput of 1 GiB of stdout through the stream,
/// and a 256 MiB upload and download through the file API against `crun exec … cat` piping.
func streamBenchmark(_ d: TestDaemon, rounds: Int, bulkRounds: Int) async throws {
    var request = CreateSandboxRequest(name: "bulk")
    request.memoryBytes = 1536 << 20
    let box = try d.create(request)
    defer { try? d.client.callNoContent("DELETE", "/v1/sandboxes/bulk?force=true") }
    let work = "/tmp/vivarium-bench-streams-" + randomHex(bytes: 4)
    try FileSystem.makeDirectory(work, mode: 0o700)
    defer { try? FileManager.default.removeItem(atPath: work) }

    /// `crun exec` of `argv` in the daemon's box, as the daemon's own exec would run it.
    func crunExec(_ argv: [String], stdin: Bool = false) throws -> ChildProcess {
        let file = work + "/process-" + randomHex(bytes: 4) + ".json"
        let process = HardenedSpec.process(args: argv, env: ["PATH": "/usr/bin:/bin"], cwd: "/", uid: 0, gid: 0)
        // crun reads it after the spawn returns: the work directory takes it away at the end.
        try FileSystem.writeAtomically(try JSONEncoder().encode(process), to: file, durable: false)
        return try Reaper.shared.spawn(
            Command("/usr/bin/crun", ["--root", d.crunRoot, "exec", "--process", file, box.id]), stdin: stdin)
    }

    var http = SocketHTTPClient(socketPath: d.socket)
    http.maxResponseBytes = 512 << 20
    var oursFirst = Stats()
    var rawFirst = Stats()
    for i in 0..<rounds {
        for ours in i % 2 == 0 ? [true, false] : [false, true] {
            if ours {
                var first: ContinuousClock.Instant?
                let t = clock.now
                _ = try StreamedExec.run(http, name: "bulk", StreamExecRequest(argv: ["echo", "x"]), input: nil) {
                    _, _ in
                    if first == nil { first = clock.now }
                }
                oursFirst.samples.append(ms((first ?? clock.now) - t))
            } else {
                let t = clock.now
                let child = try crunExec(["echo", "x"])
                _ = await child.stdout?.next()
                rawFirst.samples.append(ms(clock.now - t))
                _ = await child.wait()
            }
        }
    }

    let gib = 1 << 30
    var oursRate: [Double] = []
    var rawRate: [Double] = []
    let writer = ["head", "-c", String(gib), "/dev/zero"]
    for i in 0..<bulkRounds {
        for ours in i % 2 == 0 ? [true, false] : [false, true] {
            let t = clock.now
            var bytes = 0
            if ours {
                _ = try StreamedExec.run(http, name: "bulk", StreamExecRequest(argv: writer), input: nil) { _, b in
                    bytes += b.count
                }
            } else {
                let child = try crunExec(writer)
                while let chunk = await child.stdout?.next() { bytes += chunk.count }
                _ = await child.wait()
            }
            guard bytes == gib else {
                throw VivariumError(.internalError, "\(ours ? "stream" : "crun exec"): got \(bytes) of \(gib) bytes")
            }
            let rate = Double(bytes) / 1e6 / (ms(clock.now - t) / 1000)
            if ours { oursRate.append(rate) } else { rawRate.append(rate) }
        }
    }

    let size = 256 << 20
    let payload = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
    let client = APIClient(http: http)
    var up = [Stats(), Stats()]
    var down = [Stats(), Stats()]
    for i in 0..<bulkRounds {
        for ours in i % 2 == 0 ? [true, false] : [false, true] {
            if ours {
                try await time(&up[0]) {
                    _ = try client.upload(Endpoints.fileWrite, payload, name: "bulk", query: [("path", "/tmp/blob")])
                }
                try await time(&down[0]) {
                    let r = try client.download(
                        Endpoints.fileRead, name: "bulk", query: [("path", "/tmp/blob")], limit: size)
                    guard r.body.count == size else { throw VivariumError(.internalError, "short download") }
                }
            } else {
                try await time(&up[1]) {
                    let child = try crunExec(["sh", "-c", "cat > /tmp/blob"], stdin: true)
                    try await child.stdin?.write(Array(payload))
                    child.stdin?.close()
                    _ = await child.wait()
                }
                try await time(&down[1]) {
                    let child = try crunExec(["cat", "/tmp/blob"])
                    var n = 0
                    while let chunk = await child.stdout?.next() { n += chunk.count }
                    _ = await child.wait()
                    guard n == size else { throw VivariumError(.internalError, "short raw download") }
                }
            }
        }
    }
    report(
        "Streams and files against crun exec of the same box (interleaved)",
        [
            ("streamed exec: first byte", oursFirst, rawFirst),
            ("upload 256 MiB (file API)", up[0], up[1]), ("download 256 MiB (file API)", down[0], down[1]),
        ])
    func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
    let (o, r) = (median(oursRate), median(rawRate))
    print(
        String(
            format:
                "  1 GiB of stdout: stream %.0f MB/s, crun exec pipe %.0f MB/s: %.2fx (floor 0.3x: %@, goal 0.7x: %@)",
            o, r, o / r, o / r >= 0.3 ? "met" : "MISSED", o / r >= 0.7 ? "met" : "not yet"))
    print("  references: crun exec … echo x (first byte), head -c 1G /dev/zero, cat > /tmp/blob, cat /tmp/blob")
    let ratio = oursFirst.p50 / rawFirst.p50
    print(String(format: "  first byte ≤ 1.50x raw: %@ (%.2fx)", ratio <= 1.5 ? "met" : "MISSED", ratio))
}
