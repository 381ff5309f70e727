import Foundation
import Glibc
import Logging
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumTestSupport

// Measures, in one run, the daemon's create→ready, exec and delete through the API against the same
// work done directly (idmapped clone + overlay mount + crun create + start of an equivalent hardened
// bundle, raw `crun exec`, crun delete + unmount), whole CLI processes against curl and against the raw
// crun sequence, and with VIVARIUM_BASELINE_BIN an older vivarium's API rows, interleaved with ours.

let env = ProcessInfo.processInfo.environment
let iterations = Int(env["VIVARIUM_BENCH_ITERATIONS"] ?? "") ?? 100

func ms(_ d: Duration) -> Double { d.milliseconds }

struct Stats {
    var samples: [Double] = []
    func percentile(_ p: Double) -> Double {
        let s = samples.sorted()
        return s[max(0, min(s.count - 1, Int((p * Double(s.count)).rounded(.up)) - 1))]
    }
    var p50: Double { percentile(0.50) }
    var p99: Double { percentile(0.99) }
    var perSecond: Double { 1000 * Double(samples.count) / samples.reduce(0, +) }
}

let clock = ContinuousClock()

/// Times `body` once and appends the milliseconds to `stats`.
func time(_ stats: inout Stats, _ body: () async throws -> Void) async rethrows {
    let t = clock.now
    try await body()
    stats.samples.append(ms(clock.now - t))
}

func report(_ title: String, _ rows: [(String, Stats, Stats?)]) {
    func f(_ v: Double) -> String { String(format: "%8.2f", v) }
    print("\n\(title)")
    print("operation                         ours p50/p99 (ms)      reference p50/p99 (ms)   ratio p50")
    for (name, ours, raw) in rows {
        var line = name.padding(toLength: 32, withPad: " ", startingAt: 0) + " " + f(ours.p50) + " /" + f(ours.p99)
        if let raw {
            line += "     " + f(raw.p50) + " /" + f(raw.p99) + "       " + String(format: "%5.2fx", ours.p50 / raw.p50)
        }
        print(line)
    }
}

/// Runs a program to completion through the reaper (vfork spawn: no Foundation overhead in the figure).
func spawn(_ path: String, _ args: [String], environment: [String]) async throws -> ExitStatus {
    try await Reaper.shared.run(Command(path, args, environment: environment, outputLimit: 1 << 16)).status
}

/// Pull and unpack of one image (busybox, Python's standard library and Perl's, three gzip layers) from
/// a local registry: the daemon's `image pull` against `skopeo copy` into an OCI layout plus
/// `umoci unpack`, interleaved; each side starts from an empty store.
func pullBenchmark(_ rounds: Int) async throws -> (ours: Stats, reference: Stats) {
    let work = "/tmp/vivarium-bench-pull-" + randomHex(bytes: 4)
    try FileSystem.makeDirectory(work, mode: 0o700)
    defer { try? FileManager.default.removeItem(atPath: work) }
    func sh(_ script: String) throws {
        let r = try runCommand("/bin/sh", ["-c", script])
        guard r.status == 0 else { throw VivariumError(.internalError, "\(script): \(r.stderr)") }
    }
    let layout = work + "/layout"
    let bundle = work + "/bundle"
    try sh(
        """
        set -e; umoci init --layout \(layout); umoci new --image \(layout):1
        for part in busybox /usr/lib/python3.11 /usr/lib/x86_64-linux-gnu/perl; do
          umoci unpack --image \(layout):1 \(bundle)
          if [ $part = busybox ]; then mkdir -p \(bundle)/rootfs/bin; cp /bin/busybox \(bundle)/rootfs/bin/
          else mkdir -p \(bundle)/rootfs$(dirname $part); cp -a $part \(bundle)/rootfs$part; fi
          umoci repack --image \(layout):1 \(bundle); rm -rf \(bundle)
        done
        """)
    let registry = try TestRegistry(ca: nil)
    try registry.push(layout, "1", to: "bench/image:1", certs: nil)
    let d = try TestDaemon(extraEnv: ["VIVARIUM_REGISTRY_PLAIN_HTTP": registry.host, "VIVARIUM_LOG_LEVEL": "warning"])
    defer { d.shutdown() }
    let ref = "\(registry.host)/bench/image:1"
    var ours = Stats()
    var reference = Stats()
    for i in 0..<rounds {
        for mine in i % 2 == 0 ? [true, false] : [false, true] {
            if mine {
                var name = ""
                try await time(&ours) {
                    let info: ImageInfo = try d.client.call(
                        "POST", "/v1/images/pull", body: PullImageRequest(reference: ref))
                    name = info.name
                }
                // Removing the only image collects its blobs and root: the next pull starts empty.
                try d.client.callNoContent("DELETE", "/v1/images/\(name)")
            } else {
                try await time(&reference) {
                    for (tool, args) in [
                        (
                            "/usr/bin/skopeo",
                            ["copy", "-q", "--src-tls-verify=false", "docker://\(ref)", "oci:\(work)/copy:1"]
                        ),
                        ("/usr/bin/umoci", ["unpack", "--image", "\(work)/copy:1", bundle]),
                    ] {
                        guard
                            try await spawn(tool, args, environment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
                                == .exited(0)
                        else { throw VivariumError(.internalError, "\(tool) failed") }
                    }
                }
                try sh("rm -rf \(work)/copy \(bundle)")
            }
        }
    }
    return (ours, reference)
}

let httpsPort = UInt16.random(in: 20000...40000)
let daemon = try TestDaemon(extraEnv: [
    "VIVARIUM_LISTEN": "127.0.0.1:\(httpsPort)", "VIVARIUM_REQUESTS_PER_SECOND": "10000000",
    "VIVARIUM_REQUEST_BURST": "10000000", "VIVARIUM_LOG_LEVEL": "warning",
])
/// The same daemon with the audit trail forced off, for the audit overhead.
let unaudited = try TestDaemon(extraEnv: ["VIVARIUM_AUDIT_MODE": "off", "VIVARIUM_LOG_LEVEL": "warning"])
/// The same daemon without the disk quota pool (writable layers in the bundle), for what quotas cost.
let unquoted = try TestDaemon(extraEnv: ["VIVARIUM_DISK_POOL": "off", "VIVARIUM_LOG_LEVEL": "warning"])
/// The same daemon with a sandbox network, in namespaces of the bench's own (no packet leaves the machine).
let lab = try NetworkLab()
let networked = try TestDaemon(extraEnv: [
    "VIVARIUM_NETWORK": "bridge", "VIVARIUM_NETWORK_NETNS": lab.hostPath, "VIVARIUM_LOG_LEVEL": "warning",
])
/// An older build, for before/after rows measured in this same run.
let baseline = try env["VIVARIUM_BASELINE_BIN"].flatMap { $0.isEmpty ? nil : $0 }.map {
    try TestDaemon(extraEnv: ["VIVARIUM_LOG_LEVEL": "warning"], binary: $0)
}
defer {
    daemon.shutdown()
    unaudited.shutdown()
    unquoted.shutdown()
    networked.shutdown()
    lab.close()
    baseline?.shutdown()
}

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
        "\nhttps GET /v1/sandboxes/NAME (wrk -t1 -c32, keep-alive, 10 s): \(rps) req/s, p50 \(p50), p99 \(p99); \(non2xx)"
    )
}

/// The raw work of a sandbox without the daemon, on the daemon's own image: idmapped clone, overlay,
/// the hardened bundle, crun.
struct Raw {
    let crun: Crun
    let root: String
    let imageRootfs: String
    let base: Int64
    let cgroupParent = "vivarium-bench-\(randomHex(bytes: 4))"
    let swap = FileSystem.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
    let processFile: String

    init(daemon: TestDaemon) throws {
        root = daemon.root + "/raw"
        let images = try FileManager.default.contentsOfDirectory(atPath: daemon.stateDir + "/images/rootfs")
        imageRootfs = daemon.stateDir + "/images/rootfs/" + images[0]
        crun = Crun(root: daemon.root + "/raw-crun", cgroupMode: CgroupMode.detect(), logger: Logger(label: "bench"))
        try FileSystem.makeDirectory(daemon.root + "/raw-crun")
        try FileSystem.makeDirectory(root, mode: 0o711)
        base = daemon.uidBase + 15 * 65536
        processFile = root + "/true.json"
        let proc = HardenedSpec.process(args: ["/bin/true"], env: [:], cwd: "/", uid: 0, gid: 0)
        try FileSystem.writeAtomically(try JSONEncoder().encode(proc), to: processFile)
    }

    func bundle(_ id: String) -> String { root + "/" + id }

    func prepare(_ id: String) throws {
        let b = bundle(id)
        for d in [b, b + "/lower", b + "/rootfs"] { try FileSystem.makeDirectory(d, mode: 0o711) }
        try FileSystem.makeDirectory(b + "/upper", mode: 0o755, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(b + "/work", mode: 0o700, owner: (uid_t(base), gid_t(base)))
    }

    func create(_ id: String, initBinary: String) async throws {
        let b = bundle(id)
        let userns = try UserNamespace(base: base, size: 65536)
        try Mounts.idmappedBind(source: imageRootfs, target: b + "/lower", userns: userns, readOnly: true)
        try Mounts.overlay(lower: b + "/lower", upper: b + "/upper", work: b + "/work", target: b + "/rootfs")
        let spec = HardenedSpec(
            hostname: "raw", rootfs: b + "/rootfs", readOnly: false, hostUIDBase: base, limits: .default,
            cgroupsPath: "/\(cgroupParent)/\(id)", initBinary: initBinary, swapAccounting: swap
        ).build()
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: b + "/config.json", durable: false)
        _ = try await crun.create(id: id, bundle: b)
        try await crun.start(id: id)
    }

    func exec(_ id: String) async throws {
        let out = try await Reaper.shared.run(
            Command("/usr/bin/crun", ["--root", crun.root, "exec", "--process", processFile, id]))
        guard out.status == .exited(0) else { throw VivariumError(.runtimeFailure, "raw exec: \(out.stderrString)") }
    }

    func delete(_ id: String) async throws {
        try await crun.delete(id: id, force: true)
        try Mounts.unmountAll(under: bundle(id))
    }

    func removeCgroups() {
        for d in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/\(d)/\(cgroupParent)")) ?? []
            {
                rmdir("/sys/fs/cgroup/\(d)/\(cgroupParent)/\(e)")
            }
            rmdir("/sys/fs/cgroup/\(d)/\(cgroupParent)")
        }
        rmdir("/sys/fs/cgroup/\(cgroupParent)")
    }
}

/// create→ready with 10 and with 300 sandboxes already running (small limits, spread over tenants,
/// each with its veth, address and ruleset elements, and its disk quota), each size against a raw
/// create+start measured at that size, interleaved. The ratio should not grow with the number of
/// sandboxes.
func scaling(raw: Raw, initBinary: String) async throws {
    let sizes = [10, 300]
    let tenants = 6
    let rounds = Int(env["VIVARIUM_BENCH_SCALE_ITERATIONS"] ?? "") ?? 30
    let scaleLab = try NetworkLab()
    defer { scaleLab.close() }
    // 0.05 CPU each keeps 316 boxes inside a 2-CPU host's CPU budget (8× its CPUs); 316 quotas of 16 MiB
    // fit a 3 GiB pool's disk budget (2× the pool).
    let d = try TestDaemon(extraEnv: [
        "VIVARIUM_MAX_SANDBOXES": "\(sizes.last! + 16)", "VIVARIUM_QUOTA_SANDBOXES": "\(sizes.last! / tenants + 8)",
        "VIVARIUM_REQUESTS_PER_SECOND": "10000000", "VIVARIUM_REQUEST_BURST": "10000000",
        "VIVARIUM_LOG_LEVEL": "warning", "VIVARIUM_DISK_POOL_SIZE": "3G", "VIVARIUM_NETWORK": "bridge",
        "VIVARIUM_NETWORK_NETNS": scaleLab.hostPath,
    ])
    defer { d.shutdown() }
    for t in 0..<tenants {
        let _: TenantInfo = try d.client.call("POST", "/v1/tenants", body: CreateTenantRequest(name: "t\(t)"))
    }
    func create(_ name: String, tenant: Int) throws {
        let _: SandboxInfo = try d.client.call(
            "POST", "/v1/sandboxes?tenant=t\(tenant)",
            body: CreateSandboxRequest(name: name, memoryBytes: 32 << 20, milliCpus: 50, pids: 32))
    }
    var existing = 0
    var results: [(size: Int, ours: Stats, raw: Stats)] = []
    for size in sizes {
        let fill = clock.now
        while existing < size {
            try create("fill\(existing)", tenant: existing % tenants)
            existing += 1
        }
        print("  scale: \(size) sandboxes running (filled in \(String(format: "%.1f", ms(clock.now - fill) / 1000)) s)")
        var ours = Stats()
        var rawStats = Stats()
        for i in 0..<rounds {
            for mine in i % 2 == 0 ? [true, false] : [false, true] {
                if mine {
                    try await time(&ours) { try create("m\(i)", tenant: i % tenants) }
                    try d.client.callNoContent("DELETE", "/v1/sandboxes/m\(i)?tenant=t\(i % tenants)&force=true")
                } else {
                    try raw.prepare("z\(size)-\(i)")
                    try await time(&rawStats) { try await raw.create("z\(size)-\(i)", initBinary: initBinary) }
                    try await raw.delete("z\(size)-\(i)")
                }
            }
        }
        results.append((size, ours, rawStats))
    }
    report(
        "create→ready as sandboxes accumulate (\(tenants) tenants, 32 MiB, 0.05 CPU, 32 pids, 16 MiB disk, public network each)",
        results.map { ("create→ready at \($0.size)", $0.ours, $0.raw) })
    let ratio = results.map { $0.ours.p50 / $0.raw.p50 }
    let growth = ratio[1] / ratio[0]
    print(
        String(
            format: "  ratio at %d %.2fx, at %d %.2fx: growth %.2fx (target ≤ 1.20x: %@)", sizes[0], ratio[0], sizes[1],
            ratio[1], growth, growth <= 1.2 ? "met" : "MISSED"))
}

do {
    print("vivarium-bench: \(iterations) iterations each, cgroups \(CgroupMode.detect().rawValue)")
    // VIVARIUM_BENCH_ONLY=streams: the stream and file rows alone (while working on them).
    if env["VIVARIUM_BENCH_ONLY"] == "streams" {
        try await streamBenchmark(daemon, rounds: iterations, bulkRounds: Int(env["VIVARIUM_BENCH_BULK"] ?? "") ?? 3)
        for d in [daemon, unaudited, unquoted, networked] { d.shutdown() }
        lab.close()
        baseline?.shutdown()
        exit(0)
    }
    let raw = try Raw(daemon: daemon)
    defer { raw.removeCgroups() }
    let daemons = [daemon] + (baseline.map { [$0] } ?? [])
    for d in daemons + [unaudited, unquoted, networked] {
        _ = try d.create(CreateSandboxRequest(name: "warm"))
        _ = try d.exec("warm", ["/bin/true"])
    }
    try raw.prepare("warm")
    try await raw.create("warm", initBinary: daemon.initBinary)

    // API rows: ours, the baseline's (when given) and raw, interleaved iteration by iteration.
    var create = [Stats](repeating: Stats(), count: daemons.count)
    var exec = create
    var delete = create
    var rawCreate = Stats()
    var rawExec = Stats()
    var rawDelete = Stats()
    for i in 0..<iterations {
        for (k, d) in i % 2 == 0 ? Array(daemons.enumerated()) : daemons.enumerated().reversed() {
            try await time(&create[k]) { _ = try d.create(CreateSandboxRequest(name: "c\(i)")) }
            try await time(&exec[k]) {
                guard try d.exec("warm", ["/bin/true"]).exitCode == 0 else {
                    throw VivariumError(.runtimeFailure, "exec failed")
                }
            }
            try await time(&delete[k]) { try d.client.callNoContent("DELETE", "/v1/sandboxes/c\(i)?force=true") }
        }
        try raw.prepare("r\(i)")
        try await time(&rawCreate) { try await raw.create("r\(i)", initBinary: daemon.initBinary) }
        try await time(&rawExec) { try await raw.exec("warm") }
        try await time(&rawDelete) { try await raw.delete("r\(i)") }
    }
    var rows: [(String, Stats, Stats?)] = [
        ("create→ready", create[0], rawCreate), ("exec /bin/true", exec[0], rawExec),
        ("delete", delete[0], rawDelete),
    ]
    if baseline != nil {
        rows += [
            ("create→ready (baseline)", create[1], rawCreate), ("exec /bin/true (baseline)", exec[1], rawExec),
            ("delete (baseline)", delete[1], rawDelete),
        ]
    }
    report("API over the unix socket against the same work done directly", rows)
    if baseline != nil {
        print("\nthis build against the baseline, each as its ratio to raw in this run (target: within 10%)")
        for (name, ours, old, ref) in [
            ("create→ready", create[0], create[1], rawCreate), ("exec", exec[0], exec[1], rawExec),
            ("delete", delete[0], delete[1], rawDelete),
        ] {
            let change = (ours.p50 / ref.p50) / (old.p50 / ref.p50) - 1
            print(
                "  " + name.padding(toLength: 14, withPad: " ", startingAt: 0)
                    + String(
                        format: " ours %.2fx raw, baseline %.2fx raw: %+.1f%% %@", ours.p50 / ref.p50,
                        old.p50 / ref.p50, change * 100, change <= 0.10 ? "(met)" : "(MISSED)"))
        }
    }

    // Whole CLI processes against curl making the same request, and `vivarium run --rm` against the raw
    // crun sequence of the same hardened bundle (create, start, exec, delete).
    let cliEnv = [
        "VIVARIUM_SOCKET=\(daemon.socket)", "HOME=\(daemon.root)", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ]
    let vivarium = Paths.vivarium
    let execBody = #"{"argv":["/bin/true"]}"#
    var cliExec = Stats()
    var curlExec = Stats()
    var cliList = Stats()
    var curlList = Stats()
    var cliRun = Stats()
    var rawSequence = Stats()
    // Each pair runs in alternating order, so that neither side always follows the heavier work.
    for i in 0..<iterations {
        let order = i % 2 == 0 ? [true, false] : [false, true]
        for ours in order {
            if ours {
                try await time(&cliExec) {
                    guard
                        try await spawn(vivarium, ["exec", "warm", "--", "/bin/true"], environment: cliEnv)
                            == .exited(0)
                    else { throw VivariumError(.runtimeFailure, "vivarium exec failed") }
                }
            } else {
                try await time(&curlExec) {
                    _ = try await spawn(
                        "/usr/bin/curl",
                        [
                            "-sf", "-o", "/dev/null", "--unix-socket", daemon.socket, "-H",
                            "Content-Type: application/json", "-d", execBody, "http://v/v1/sandboxes/warm/exec",
                        ], environment: cliEnv)
                }
            }
        }
        for ours in order {
            if ours {
                try await time(&cliList) { _ = try await spawn(vivarium, ["ls"], environment: cliEnv) }
            } else {
                try await time(&curlList) {
                    _ = try await spawn(
                        "/usr/bin/curl",
                        ["-sf", "-o", "/dev/null", "--unix-socket", daemon.socket, "http://v/v1/sandboxes"],
                        environment: cliEnv)
                }
            }
        }
        try raw.prepare("s\(i)")
        for ours in order {
            if ours {
                try await time(&cliRun) {
                    guard
                        try await spawn(vivarium, ["run", "--rm", "--", "/bin/true"], environment: cliEnv) == .exited(0)
                    else { throw VivariumError(.runtimeFailure, "vivarium run failed") }
                }
            } else {
                try await time(&rawSequence) {
                    try await raw.create("s\(i)", initBinary: daemon.initBinary)
                    try await raw.exec("s\(i)")
                    try await raw.delete("s\(i)")
                }
            }
        }
    }
    report(
        "Whole CLI processes (\(vivarium))",
        [
            ("vivarium exec -- /bin/true", cliExec, curlExec), ("vivarium ls", cliList, curlList),
            ("vivarium run --rm -- /bin/true", cliRun, rawSequence),
        ])
    print("  references: curl --unix-socket with the same request; the raw crun create+start+exec+delete sequence")

    // create + delete with the audit trail on and off, alternating, so that both see the same host.
    var auditOn = Stats()
    var auditOff = Stats()
    for i in 0..<iterations {
        for audited in i % 2 == 0 ? [true, false] : [false, true] {
            let d = audited ? daemon : unaudited
            let t = clock.now
            _ = try d.create(CreateSandboxRequest(name: "a\(i)"))
            try d.client.callNoContent("DELETE", "/v1/sandboxes/a\(i)?force=true")
            if audited { auditOn.samples.append(ms(clock.now - t)) } else { auditOff.samples.append(ms(clock.now - t)) }
        }
    }
    let overhead = (auditOn.p50 / auditOff.p50 - 1) * 100
    print(
        String(
            format:
                "\ncreate+delete, audit on vs off (interleaved): on p50 %.2f / p99 %.2f ms, %.1f/s; off p50 %.2f / p99 %.2f ms, %.1f/s; overhead p50 %+.1f%%",
            auditOn.p50, auditOn.p99, auditOn.perSecond, auditOff.p50, auditOff.p99, auditOff.perSecond, overhead))
    // create→ready and delete with the disk quota (a btrfs subvolume and qgroup per box) and without.
    // Index 0: with the quota, 1: without.
    var quotaCreate = [Stats(), Stats()]
    var quotaDelete = quotaCreate
    for i in 0..<iterations {
        for (k, d) in i % 2 == 0 ? [(0, daemon), (1, unquoted)] : [(1, unquoted), (0, daemon)] {
            try await time(&quotaCreate[k]) { _ = try d.create(CreateSandboxRequest(name: "q\(i)")) }
            try await time(&quotaDelete[k]) { try d.client.callNoContent("DELETE", "/v1/sandboxes/q\(i)?force=true") }
        }
    }
    let quotaCost = quotaCreate[0].p50 - quotaCreate[1].p50
    print(
        String(
            format:
                "\ndisk quota on vs off (interleaved): create→ready on p50 %.2f / p99 %.2f ms, off p50 %.2f / p99 %.2f ms (%+.2f ms); delete on p50 %.2f, off p50 %.2f ms",
            quotaCreate[0].p50, quotaCreate[0].p99, quotaCreate[1].p50, quotaCreate[1].p99, quotaCost,
            quotaDelete[0].p50, quotaDelete[1].p50))
    // create→ready with a veth, an address, a route and the ruleset's elements, against loopback only.
    var netCreate = [Stats(), Stats()]
    for i in 0..<iterations {
        for (k, policy) in i % 2 == 0 ? [(0, "public"), (1, "none")] : [(1, "none"), (0, "public")] {
            try await time(&netCreate[k]) {
                _ = try networked.create(CreateSandboxRequest(name: "n\(i)-\(policy)", network: policy))
            }
            try networked.client.callNoContent("DELETE", "/v1/sandboxes/n\(i)-\(policy)?force=true")
        }
    }
    let networkCost = netCreate[0].p50 - netCreate[1].p50
    print(
        String(
            format:
                "\nnetwork public vs none (interleaved): create→ready public p50 %.2f / p99 %.2f ms, none p50 %.2f / p99 %.2f ms (network setup %+.2f ms)",
            netCreate[0].p50, netCreate[0].p99, netCreate[1].p50, netCreate[1].p99, networkCost))
    try await raw.delete("warm")
    try await streamBenchmark(
        daemon, rounds: iterations, bulkRounds: Int(env["VIVARIUM_BENCH_BULK"] ?? "") ?? 3)
    try httpsThroughput()
    let pulls = try await pullBenchmark(Int(env["VIVARIUM_BENCH_PULLS"] ?? "") ?? 8)
    report(
        "Image pull and unpack from a local registry (3 gzip layers)",
        [("vivarium image pull", pulls.ours, pulls.reference)])
    print("  reference: skopeo copy docker://… oci:… + umoci unpack, the same image")
    if env["VIVARIUM_BENCH_SCALE"] != "0" { try await scaling(raw: raw, initBinary: daemon.initBinary) }

    func target(_ name: String, _ ours: Stats, _ ref: Stats, _ limit: Double) -> String {
        let r = ours.p50 / ref.p50
        return String(format: "%@ ≤ %.2fx: %@ (%.2fx)", name, limit, r <= limit ? "met" : "MISSED", r)
    }
    print("\ntargets:")
    for t in [
        target("create→ready p50 vs raw", create[0], rawCreate, 2),
        target("exec p50 vs raw", exec[0], rawExec, 1.5),
        target("CLI exec p50 vs curl", cliExec, curlExec, 1.5),
        target("vivarium ls p50 vs curl", cliList, curlList, 2),
        target("vivarium run --rm p50 vs raw sequence", cliRun, rawSequence, 1.5),
        target("image pull p50 vs skopeo + umoci", pulls.ours, pulls.reference, 1),
    ] { print("  " + t) }
    print(String(format: "  audit overhead < 10%%: %@ (%+.1f%%)", overhead < 10 ? "met" : "MISSED", overhead))
    print(String(format: "  disk quota adds < 2 ms at p50: %@ (%+.2f ms)", quotaCost < 2 ? "met" : "MISSED", quotaCost))
    print(
        String(
            format: "  networking adds < 2 ms at p50: %@ (%+.2f ms)", networkCost < 2 ? "met" : "MISSED", networkCost))
} catch {
    FileHandle.standardError.write(Data("vivarium-bench: \(error)\n".utf8))
    daemon.shutdown()
    unaudited.shutdown()
    unquoted.shutdown()
    networked.shutdown()
    lab.close()
    baseline?.shutdown()
    exit(1)
}
