import Foundation
import Testing
import VivariumClient
import VivariumCore
import VivariumOS
import VivariumTestSupport

/// Builds a .deb with dpkg-deb and installs it into `root` with dpkg itself.
func installDeb(root: String, work: String, package: String, version: String, source: String?) throws {
    let pkg = "\(work)/pkg-\(package)"
    try FileSystem.makeDirectory(pkg + "/DEBIAN", mode: 0o755)
    try FileSystem.makeDirectory(pkg + "/usr/share/\(package)", mode: 0o755)
    try "\(package) \(version)\n".write(
        toFile: "\(pkg)/usr/share/\(package)/VERSION", atomically: true, encoding: .utf8)
    try """
    Package: \(package)
    Version: \(version)
    \(source.map { "Source: \($0)\n" } ?? "")Architecture: all
    Maintainer: Vivarium Tests <tests@example.com>
    Description: a package the SBOM test installs

    """.write(toFile: pkg + "/DEBIAN/control", atomically: true, encoding: .utf8)
    var r = try runCommand("/usr/bin/dpkg-deb", ["--root-owner-group", "--build", pkg, "\(pkg).deb"])
    #expect(r.status == 0, "\(r.stderr)")
    r = try runCommand(
        "/usr/bin/dpkg", ["--root=\(root)", "--force-script-chrootless", "--log=/dev/null", "-i", "\(pkg).deb"])
    #expect(r.status == 0, "\(r.stderr)")
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct SBOMTests {
    @Test func listsWhatDpkgAndPythonSeeInsideTheImageAndNothingOfTheHost() async throws {
        let work = "/tmp/vivarium-sbom-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let root = work + "/root"
        for d in ["/bin", "/etc", "/var/lib/dpkg/info", "/var/lib/dpkg/updates", "/usr/lib/python3/dist-packages"] {
            try FileSystem.makeDirectory(root + d, mode: 0o755)
        }
        _ = try runCommand("/bin/cp", ["/bin/busybox", root + "/bin/busybox"])
        try FileManager.default.createSymbolicLink(atPath: root + "/bin/sh", withDestinationPath: "busybox")
        try "ID=debian\nVERSION_ID=\"12\"\n".write(toFile: root + "/etc/os-release", atomically: true, encoding: .utf8)
        #expect(FileManager.default.createFile(atPath: root + "/var/lib/dpkg/status", contents: Data()))
        try installDeb(
            root: root, work: work, package: "vivarium-probe", version: "1:2.0-3", source: "vivarium-probe-src (2.0-1)")
        try installDeb(root: root, work: work, package: "vivarium-probe-data", version: "0.9~rc1-1", source: nil)
        // apk's installed database, in apk's own format (no Alpine image can be fetched here): checksum,
        // name, version, architecture, size, description, origin, one stanza per package.
        try FileSystem.makeDirectory(root + "/lib/apk/db", mode: 0o755)
        try """
        C:Q1Hm1nX1i3p0rZ8c6sJZ0Ju3sqX2E=
        P:musl
        V:1.2.4_git20230717-r4
        A:x86_64
        S:383152
        I:622592
        T:the musl c library (libc) implementation
        o:musl
        m:Timo Teräs <timo.teras@iki.fi>

        C:Q1m1c1Ue7fJ0vR8Jw2xg1p1dLJ1QU=
        P:libcrypto3
        V:3.1.4-r1
        A:x86_64
        T:Crypto library from openssl
        o:openssl

        """.write(toFile: root + "/lib/apk/db/installed", atomically: true, encoding: .utf8)
        let dist = root + "/usr/lib/python3/dist-packages/Requests-2.25.0.dist-info"
        try FileSystem.makeDirectory(dist, mode: 0o755)
        try "Metadata-Version: 2.1\nName: requests\nVersion: 2.25.0\n\nName: not-a-header\n".write(
            toFile: dist + "/METADATA", atomically: true, encoding: .utf8)
        // Symlinks that would read the host's Python packages if followed on the host: the scan resolves
        // them inside the image, where they lead back to its own.
        try FileSystem.makeDirectory(root + "/usr/local/lib", mode: 0o755)
        try FileManager.default.createSymbolicLink(
            atPath: root + "/usr/local/lib/python3.11", withDestinationPath: "/../../../../../usr/lib/python3")
        try FileManager.default.createSymbolicLink(
            atPath: root + "/usr/lib/python3.11", withDestinationPath: "../../../../usr/lib/python3")
        #expect(
            (try FileManager.default.contentsOfDirectory(atPath: "/usr/lib/python3/dist-packages")).contains {
                $0.hasSuffix(".dist-info")
            }, "the host has Python distributions the scan must not report")

        // What dpkg-query and Python's importlib.metadata read from the image's own databases.
        let query = try runCommand(
            "/usr/bin/dpkg-query", ["--admindir=\(root)/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\\n"])
        let debian = Set(query.stdout.split(separator: "\n").map(String.init))
        #expect(debian == ["vivarium-probe 1:2.0-3", "vivarium-probe-data 0.9~rc1-1"], "\(query.stdout)")
        let py = try runCommand(
            "/usr/bin/env",
            [
                "python3", "-c",
                "import importlib.metadata as m, sys\nfor d in m.distributions(path=[sys.argv[1]]): print(d.metadata['Name'], d.version)",
                root + "/usr/lib/python3/dist-packages",
            ])
        let python = Set(py.stdout.split(separator: "\n").map(String.init))
        #expect(python == ["requests 2.25.0"], "\(py.stdout) \(py.stderr)")

        try await TestDaemon.with { d in
            var r = try d.cli("image", "import", root, "--name", "pkgs")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("image", "sbom", "pkgs")
            #expect(r.status == 0, "\(r.stderr)")
            let bom = try JSONDecoder().decode(CycloneDX.self, from: Data(r.stdout.utf8))
            #expect(bom.bomFormat == "CycloneDX" && bom.specVersion == "1.5")
            func ecosystem(_ c: CycloneDX.Component) -> String? {
                c.properties.first { $0.name == "vivarium:ecosystem" }?.value
            }
            let deb = Set(bom.components.filter { ecosystem($0) == "Debian" }.map { "\($0.name) \($0.version)" })
            let pypi = Set(bom.components.filter { ecosystem($0) == "PyPI" }.map { "\($0.name) \($0.version)" })
            #expect(deb == debian)
            #expect(pypi == python)
            let probe = try #require(bom.components.first { $0.name == "vivarium-probe" })
            #expect(
                probe.properties.contains { $0.name == "vivarium:source" && $0.value == "vivarium-probe-src 2.0-1" })
            #expect(probe.purl == "pkg:deb/debian/vivarium-probe@1%3A2.0-3?arch=all&distro=debian-12", "\(probe.purl)")
            #expect(bom.components.contains { $0.purl == "pkg:pypi/requests@2.25.0" })
            let apk = Set(bom.components.filter { ecosystem($0) == "Alpine" }.map { "\($0.name) \($0.version)" })
            #expect(apk == ["musl 1.2.4_git20230717-r4", "libcrypto3 3.1.4-r1"])
            let crypto = try #require(bom.components.first { $0.name == "libcrypto3" })
            #expect(crypto.properties.contains { $0.name == "vivarium:source" && $0.value == "openssl 3.1.4-r1" })
            // An image that is not there.
            r = try d.cli("image", "sbom", "missing")
            #expect(r.status != 0 && r.stderr.contains("[image_not_found]"), "\(r.stderr)")
        }
    }
}

/// An OCI layout tag holding `root` as its one layer (umoci).
func layout(from root: String, work: String, tag: String) throws -> String {
    let layout = work + "/layout"
    func umoci(_ args: [String]) throws {
        let r = try runCommand("/usr/bin/umoci", args)
        guard r.status == 0 else { throw VivariumError(.internalError, "umoci \(args[0]): \(r.stderr)") }
    }
    if !FileSystem.exists(layout) { try umoci(["init", "--layout", layout]) }
    try umoci(["new", "--image", "\(layout):\(tag)"])
    let bundle = "\(work)/bundle-\(tag)"
    try umoci(["unpack", "--image", "\(layout):\(tag)", bundle])
    let r = try runCommand("/bin/sh", ["-c", "cp -a \(root)/. \(bundle)/rootfs/"])
    #expect(r.status == 0, "\(r.stderr)")
    try umoci(["repack", "--image", "\(layout):\(tag)", bundle])
    return layout
}

/// A Debian 12 root with busybox and the test's packages.
func debianRoot(_ root: String, work: String, probe: String, probeSource: String) throws {
    for d in ["/bin", "/etc", "/var/lib/dpkg/info", "/var/lib/dpkg/updates"] {
        try FileSystem.makeDirectory(root + d, mode: 0o755)
    }
    _ = try runCommand("/bin/cp", ["/bin/busybox", root + "/bin/busybox"])
    try FileManager.default.createSymbolicLink(atPath: root + "/bin/sh", withDestinationPath: "busybox")
    try "ID=debian\nVERSION_ID=\"12\"\n".write(toFile: root + "/etc/os-release", atomically: true, encoding: .utf8)
    #expect(FileManager.default.createFile(atPath: root + "/var/lib/dpkg/status", contents: Data()))
    try installDeb(root: root, work: work, package: "vivarium-probe", version: probe, source: probeSource)
    try installDeb(root: root, work: work, package: "vivarium-probe-data", version: "0.9~rc1-1", source: nil)
}

@Suite(.serialized, .enabled(if: Integration.enabled)) struct VulnerabilityGateTests {
    @Test func refusesAffectedImagesAdmitsFixedOnesAndHonoursWaiversUntilTheyExpire() async throws {
        let work = "/tmp/vivarium-vulns-" + randomHex(bytes: 6)
        defer { try? FileManager.default.removeItem(atPath: work) }
        try FileSystem.makeDirectory(work, mode: 0o700)
        // The affected image runs source 2.0-1; the fixed one 2.0-2 (binary versions with an epoch).
        try debianRoot(work + "/a", work: work + "/pa", probe: "1:2.0-3", probeSource: "vivarium-probe-src (2.0-1)")
        try debianRoot(work + "/b", work: work + "/pb", probe: "1:2.0-4", probeSource: "vivarium-probe-src (2.0-2)")
        let registry = try TestRegistry(ca: nil)
        try registry.push(
            try layout(from: work + "/a", work: work, tag: "a"), "a", to: "app/probe:affected", certs: nil)
        try registry.push(try layout(from: work + "/b", work: work, tag: "b"), "b", to: "app/probe:fixed", certs: nil)
        let affectedDigest = Digest.of(try registry.manifest("app/probe", "affected", ca: nil))

        // OSV records in the real schema: a critical one on the source package (fixed in 2.0-2), a low
        // one whose fix carries an epoch (so 0.9~rc1-1 is before it).
        let advisories = work + "/osv"
        try FileSystem.makeDirectory(advisories, mode: 0o700)
        try """
        {"schema_version":"1.6.0","id":"VIVT-2026-0001","modified":"2026-11-01T00:00:00Z","summary":"probe",
         "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
         "affected":[{"package":{"ecosystem":"Debian:12","name":"vivarium-probe-src"},
           "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0-2"}]}]}]}
        """.write(toFile: advisories + "/VIVT-2026-0001.json", atomically: true, encoding: .utf8)
        try """
        {"schema_version":"1.6.0","id":"VIVT-2026-0002","modified":"2026-11-01T00:00:00Z",
         "affected":[{"package":{"ecosystem":"Debian:12","name":"vivarium-probe-data"},
           "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:0.1-1"}]}],
           "database_specific":{"severity":"low"}}]}
        """.write(toFile: advisories + "/VIVT-2026-0002.json", atomically: true, encoding: .utf8)
        func policy(waiverExpires: Date) throws {
            try """
            [vulnerabilities]
            refuse = "high"

            [[waiver]]
            advisory = "VIVT-2026-0001"
            expires = "\(ISO8601DateFormatter().string(from: waiverExpires))"
            reason = "test"
            """.write(toFile: work + "/policy.toml", atomically: true, encoding: .utf8)
        }
        try policy(waiverExpires: Date().addingTimeInterval(-3600))

        try await TestDaemon.with(extraEnv: [
            "VIVARIUM_REGISTRY_PLAIN_HTTP": registry.host, "VIVARIUM_IMAGE_POLICY": work + "/policy.toml",
        ]) { d in
            var r = try d.cli("vulndb", "import", advisories, "--json")
            #expect(r.status == 0, "\(r.stderr)")
            let info = try WireCoding.decoder().decode(VulnDBInfo.self, from: Data(r.stdout.utf8))
            #expect(info.advisories == 2 && info.version.hasPrefix("sha256:"))
            // The published fixtures too (none names these packages).
            let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures/osv").path
            r = try d.cli("vulndb", "import", fixtures, "--json")
            let all = try WireCoding.decoder().decode(VulnDBInfo.self, from: Data(r.stdout.utf8))
            #expect(r.status == 0 && all.advisories > 10 && all.version != info.version, "\(r.stderr)")

            // Affected, and its waiver expired: refused, naming the advisory and the database version.
            r = try d.cli("image", "pull", "\(registry.host)/app/probe:affected")
            #expect(
                r.status != 0 && r.stderr.contains("VIVT-2026-0001") && r.stderr.contains(all.version)
                    && r.stderr.contains("[image_refused]"), "\(r.stderr)")
            let refused = try d.cli("audit", "ls", "--action", "image.pull", "--outcome", "refused", "--json")
            #expect(refused.stdout.contains(affectedDigest.rawValue), "\(refused.stdout)")
            // The fixed version passes; its scan shows the low finding (dpkg's epoch order) and not the
            // critical one.
            r = try d.cli("image", "pull", "\(registry.host)/app/probe:fixed")
            #expect(r.status == 0, "\(r.stderr)")
            r = try d.cli("image", "scan", "\(registry.host)/app/probe:fixed", "--json")
            let report = try WireCoding.decoder().decode(ScanReport.self, from: Data(r.stdout.utf8))
            #expect(report.findings.map(\.advisory) == ["VIVT-2026-0002"], "\(r.stdout)")
            #expect(report.findings.first?.severity == .low && report.vulndbVersion == all.version)

            // A live waiver admits the affected image, and the pull records it.
            try policy(waiverExpires: Date().addingTimeInterval(86400))
            d.stop()
            try d.start()
            r = try d.cli("image", "pull", "\(registry.host)/app/probe:affected")
            #expect(r.status == 0, "\(r.stderr)")
            let ok = try d.cli("audit", "ls", "--action", "image.pull", "--outcome", "ok", "--json")
            #expect(ok.stdout.contains("VIVT-2026-0001") && ok.stdout.contains(all.version), "\(ok.stdout)")
        }
    }
}
