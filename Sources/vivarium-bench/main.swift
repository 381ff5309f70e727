import Foundation
import Glibc
import Logging
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumTestSupport

// Measures, in one run, the daemon's create→ready, exec and delete through the API against the same
// work done directly: idmapped clone + overlay mount + crun create + crun start of an equivalent
// hardened bundle, raw `crun exec`, and crun delete + unmount.

let iterations = Int(ProcessInfo.processInfo.environment["VIVARIUM_BENCH_ITERATIONS"] ?? "") ?? 100

func ms(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

struct Stats {
    var samples: [Double]
    func percentile(_ p: Double) -> Double {
        let s = samples.sorted()
        return s[max(0, min(s.count - 1, Int((p * Double(s.count)).rounded(.up)) - 1))]
    }
    var p50: Double { percentile(0.50) }
    var p99: Double { percentile(0.99) }
}

func measure(_ n: Int, _ body: (Int) async throws -> Void) async throws -> Stats {
    var out: [Double] = []
    let clock = ContinuousClock()
    for i in 0..<n {
        let t = clock.now
        try await body(i)
        out.append(ms(clock.now - t))
    }
    return Stats(samples: out)
}

func report(_ rows: [(String, Stats, Stats?)]) {
    func f(_ v: Double) -> String { String(format: "%8.2f", v) }
    print("operation            vivarium p50/p99 (ms)    raw p50/p99 (ms)     ratio p50")
    for (name, ours, raw) in rows {
        var line = name.padding(toLength: 20, withPad: " ", startingAt: 0) + " " + f(ours.p50) + " /" + f(ours.p99)
        if let raw {
            line += "    " + f(raw.p50) + " /" + f(raw.p99) + "    " + String(format: "%5.2fx", ours.p50 / raw.p50)
        }
        print(line)
    }
}

let httpsPort = UInt16.random(in: 20000...40000)
/// Authenticated `GET /v1/sandboxes/NAME` over HTTPS with keep-alive: wrk, one thread, 32 connections.
func httpsThroughput() throws {
    guard access("/usr/bin/wrk", X_OK) == 0 else {
        print("https GET: skipped (install wrk)")
        return
    }
    let _: TenantInfo = try daemon.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: "bench"))
    let _: PrincipalInfo = try daemon.client.call(
        "POST", "/v1/principals?tenant=bench", body: CreatePrincipalRequest(name: "wrk", role: "member"))
    let key: APIKeyInfo = try daemon.client.call(
        "POST", "/v1/principals/wrk/keys?tenant=bench",
        body: CreateAPIKeyRequest(scopes: ["sandboxes:read", "sandboxes:write"]))
    let pair: TokenPair = try daemon.client.call(
        "POST", "/v1/tokens", body: TokenRequest(grantType: "api_key", apiKey: key.apiKey))
    let _: SandboxInfo = try daemon.client.call(
        "POST", "/v1/sandboxes?tenant=bench", body: CreateSandboxRequest(name: "target"))
    let r = try runCommand(
        "/usr/bin/wrk",
        [
            "-t1", "-c32", "-d10s", "--latency", "-H", "Authorization: Bearer \(pair.accessToken)",
            "https://127.0.0.1:\(httpsPort)/v1/sandboxes/target",
        ])
    let lines = r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    let rps = lines.first { $0.hasPrefix("Requests/sec:") }?.split(separator: " ").last.map(String.init) ?? "?"
    let p99 = lines.first { $0.hasPrefix("99%") }?.split(separator: " ").last.map(String.init) ?? "?"
    let p50 = lines.first { $0.hasPrefix("50%") }?.split(separator: " ").last.map(String.init) ?? "?"
    let non2xx = lines.first { $0.hasPrefix("Non-2xx") } ?? "all 2xx"
    print(
        "https GET /v1/sandboxes/NAME (wrk -t1 -c32, keep-alive, 10 s): \(rps) req/s, p50 \(p50), p99 \(p99); \(non2xx)"
    )
    let ok = (Double(rps) ?? 0) >= 10_000
    print("target: ≥ 10,000 req/s with p99 < 10 ms: \(ok ? "req/s met" : "req/s MISSED")")
}

let daemon = try TestDaemon(extraEnv: [
    "VIVARIUM_LISTEN": "127.0.0.1:\(httpsPort)", "VIVARIUM_REQUESTS_PER_SECOND": "10000000",
    "VIVARIUM_REQUEST_BURST": "10000000", "VIVARIUM_LOG_LEVEL": "warning",
])
/// The same daemon with the audit trail forced off, for the audit overhead.
let unaudited = try TestDaemon(extraEnv: ["VIVARIUM_AUDIT_MODE": "off", "VIVARIUM_LOG_LEVEL": "warning"])
defer {
    daemon.shutdown()
    unaudited.shutdown()
}

/// create + delete through the API, alternating between the audited and the unaudited daemon so that
/// both see the same host conditions. Returns (audited, unaudited) per-call samples.
func auditOverhead() throws -> (Stats, Stats) {
    var on: [Double] = []
    var off: [Double] = []
    let clock = ContinuousClock()
    for i in 0..<iterations {
        for audited in i % 2 == 0 ? [true, false] : [false, true] {
            let d = audited ? daemon : unaudited
            let t = clock.now
            _ = try d.create(CreateSandboxRequest(name: "a\(i)"))
            try d.client.callNoContent("DELETE", "/v1/sandboxes/a\(i)?force=true")
            if audited { on.append(ms(clock.now - t)) } else { off.append(ms(clock.now - t)) }
        }
    }
    return (Stats(samples: on), Stats(samples: off))
}

do {
    print("vivarium-bench: \(iterations) iterations each, cgroups \(CgroupMode.detect().rawValue)")
    // Warm up both paths once.
    _ = try daemon.create(CreateSandboxRequest(name: "warm"))
    _ = try daemon.exec("warm", ["/bin/true"])

    _ = try unaudited.create(CreateSandboxRequest(name: "warm"))
    let (auditOn, auditOff) = try auditOverhead()

    // Through the API (unix socket, JSON, store transactions, the full hardened path).
    var createOnly: [Double] = []
    var deleteOnly: [Double] = []
    let clock = ContinuousClock()
    for i in 0..<iterations {
        var t = clock.now
        _ = try daemon.create(CreateSandboxRequest(name: "c\(i)"))
        createOnly.append(ms(clock.now - t))
        t = clock.now
        try daemon.client.callNoContent("DELETE", "/v1/sandboxes/c\(i)?force=true")
        deleteOnly.append(ms(clock.now - t))
    }
    let apiExec = try await measure(iterations) { _ in
        let r = try daemon.exec("warm", ["/bin/true"])
        guard r.exitCode == 0 else { throw VivariumError(.runtimeFailure, "exec failed") }
    }

    // The same work without the daemon.
    let images = try FileManager.default.contentsOfDirectory(atPath: daemon.stateDir + "/images/rootfs")
    let imageRootfs = daemon.stateDir + "/images/rootfs/" + images[0]
    let logger = Logger(label: "bench")
    let mode = CgroupMode.detect()
    let crun = Crun(root: daemon.root + "/raw-crun", cgroupMode: mode, logger: logger)
    try FileSystem.makeDirectory(daemon.root + "/raw-crun")
    let base = daemon.uidBase + 15 * 65536
    let cgroupParent = "vivarium-bench-\(randomHex(bytes: 4))"
    let swap = FileSystem.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
    func bundle(_ i: Int) -> String { daemon.root + "/raw/\(i)" }
    func prepare(_ i: Int) throws {
        let b = bundle(i)
        for d in [b, b + "/lower", b + "/rootfs"] { try FileSystem.makeDirectory(d, mode: 0o711) }
        try FileSystem.makeDirectory(b + "/upper", mode: 0o755, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(b + "/work", mode: 0o700, owner: (uid_t(base), gid_t(base)))
    }
    func rawCreate(_ i: Int) async throws {
        let b = bundle(i)
        let userns = try UserNamespace(base: base, size: 65536)
        try Mounts.idmappedBind(source: imageRootfs, target: b + "/lower", userns: userns, readOnly: true)
        try Mounts.overlay(lower: b + "/lower", upper: b + "/upper", work: b + "/work", target: b + "/rootfs")
        let spec = HardenedSpec(
            hostname: "raw", rootfs: b + "/rootfs", readOnly: false, hostUIDBase: base, limits: .default, env: [:],
            cgroupsPath: "/\(cgroupParent)/raw\(i)", initBinary: daemon.initBinary, swapAccounting: swap
        ).build()
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: b + "/config.json", durable: false)
        _ = try await crun.create(id: "raw\(i)", bundle: b)
        try await crun.start(id: "raw\(i)")
    }
    func rawDelete(_ i: Int) async throws {
        try await crun.delete(id: "raw\(i)", force: true)
        try Mounts.unmountAll(under: bundle(i))
    }
    var rawCreateSamples: [Double] = []
    var rawDeleteSamples: [Double] = []
    try prepare(iterations)
    try await rawCreate(iterations)  // warm-up, kept for the exec runs
    for i in 0..<iterations {
        try prepare(i)
        var t = clock.now
        try await rawCreate(i)
        rawCreateSamples.append(ms(clock.now - t))
        t = clock.now
        try await rawDelete(i)
        rawDeleteSamples.append(ms(clock.now - t))
    }
    let proc = HardenedSpec.process(args: ["/bin/true"], env: [:], cwd: "/", uid: 0, gid: 0)
    let procFile = daemon.root + "/raw/true.json"
    try FileSystem.writeAtomically(try JSONEncoder().encode(proc), to: procFile)
    let rawExec = try await measure(iterations) { _ in
        let out = try await Reaper.shared.run(
            Command("/usr/bin/crun", ["--root", crun.root, "exec", "--process", procFile, "raw\(iterations)"]))
        guard out.status == .exited(0) else { throw VivariumError(.runtimeFailure, "raw exec: \(out.stderrString)") }
    }
    try await rawDelete(iterations)
    for d in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
        rmdir("/sys/fs/cgroup/\(d)/\(cgroupParent)")
    }
    rmdir("/sys/fs/cgroup/\(cgroupParent)")

    report([
        ("create→ready", Stats(samples: createOnly), Stats(samples: rawCreateSamples)),
        ("exec /bin/true", apiExec, rawExec),
        ("delete", Stats(samples: deleteOnly), Stats(samples: rawDeleteSamples)),
    ])
    let overhead = (auditOn.p50 / auditOff.p50 - 1) * 100
    func perSecond(_ s: Stats) -> Double { 1000 * Double(s.samples.count) / s.samples.reduce(0, +) }
    print(
        String(
            format:
                "create+delete, audit on vs off (interleaved): on p50 %.2f / p99 %.2f ms, %.1f/s; off p50 %.2f / p99 %.2f ms, %.1f/s; overhead p50 %+.1f%%, throughput %+.1f%%",
            auditOn.p50, auditOn.p99, perSecond(auditOn), auditOff.p50, auditOff.p99, perSecond(auditOff), overhead,
            (perSecond(auditOn) / perSecond(auditOff) - 1) * 100))
    try httpsThroughput()
    let c = Stats(samples: createOnly).p50 / Stats(samples: rawCreateSamples).p50
    let e = apiExec.p50 / rawExec.p50
    print(
        String(
            format:
                "targets: create→ready p50 ≤ 2.00x raw: %@ (%.2fx); exec p50 ≤ 1.50x raw: %@ (%.2fx); audit overhead < 10%%: %@ (%+.1f%%)",
            c <= 2 ? "met" : "MISSED", c, e <= 1.5 ? "met" : "MISSED", e, overhead < 10 ? "met" : "MISSED", overhead))
} catch {
    FileHandle.standardError.write(Data("vivarium-bench: \(error)\n".utf8))
    daemon.shutdown()
    unaudited.shutdown()
    exit(1)
}
