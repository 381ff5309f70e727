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
            // An image that is not there.
            r = try d.cli("image", "sbom", "missing")
            #expect(r.status != 0 && r.stderr.contains("[image_not_found]"), "\(r.stderr)")
        }
    }
}
