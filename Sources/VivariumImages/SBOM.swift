import Foundation
import VivariumCore
import VivariumOS

/// One installed package an image holds.
public struct SBOMPackage: Codable, Sendable, Hashable {
    /// OSV's ecosystem name: `Debian`, `Alpine` or `PyPI`.
    public var ecosystem: String
    public var name: String
    public var version: String
    /// The source package it was built from (dpkg's `Source:`, apk's origin), with its version when it
    /// differs: distribution advisories name source packages.
    public var sourceName: String?
    public var sourceVersion: String?
    public var purl: String
}

/// The packages installed in an image's root: Debian's dpkg status, Alpine's apk database and Python
/// distributions (`*.dist-info`). Every file is opened inside the root (openat2 RESOLVE_IN_ROOT), so an
/// image's symlinks cannot point the scan at the host's files.
public struct SBOM: Codable, Sendable {
    /// os-release `ID` and `VERSION_ID`.
    public var distro: String?
    public var distroVersion: String?
    public var packages: [SBOMPackage]

    public static let maxPackages = 100_000
    static let maxDatabaseBytes = 64 << 20

    public static func scan(rootfs: String) throws -> SBOM {
        let root = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw VivariumError(.internalError, "cannot open the image root \(rootfs)") }
        defer { close(root) }
        let reader = RootReader(fd: root)
        let release =
            (reader.text("/etc/os-release", limit: 64 << 10) ?? reader.text("/usr/lib/os-release", limit: 64 << 10))
            .map(Self.osRelease) ?? [:]
        var sbom = SBOM(distro: release["ID"], distroVersion: release["VERSION_ID"], packages: [])
        let distroQualifier = sbom.distro.map { d in sbom.distroVersion.map { "\(d)-\($0)" } ?? d }
        if let status = reader.text("/var/lib/dpkg/status", limit: maxDatabaseBytes) {
            sbom.packages += dpkg(status, distro: sbom.distro ?? "debian", qualifier: distroQualifier)
        }
        if let installed = reader.text("/lib/apk/db/installed", limit: maxDatabaseBytes) {
            sbom.packages += apk(installed, qualifier: distroQualifier)
        }
        sbom.packages += try python(reader)
        guard sbom.packages.count <= maxPackages else {
            throw VivariumError(.invalidArgument, "the image lists more than \(maxPackages) packages")
        }
        sbom.packages.sort { ($0.ecosystem, $0.name, $0.version) < ($1.ecosystem, $1.name, $1.version) }
        return sbom
    }

    static func osRelease(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var v = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if v.count >= 2, let f = v.first, f == "\"" || f == "'", v.last == f {
                v = String(v.dropFirst().dropLast())
            }
            out[String(line[..<eq])] = v
        }
        return out
    }

    /// Blank-line separated stanzas of `Key: value` lines (continuation lines start with a space).
    static func stanzas(_ text: String, separator: Character) -> [[String: String]] {
        var out: [[String: String]] = []
        var current: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).isEmpty {
                if !current.isEmpty { out.append(current) }
                current = [:]
            } else if line.first != " ", line.first != "\t", let sep = line.firstIndex(of: separator) {
                let value = line[line.index(after: sep)...].trimmingCharacters(in: .whitespaces)
                current[String(line[..<sep])] = value
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Installed packages of a dpkg status file.
    static func dpkg(_ text: String, distro: String, qualifier: String?) -> [SBOMPackage] {
        stanzas(text, separator: ":").compactMap { s in
            guard let name = s["Package"], let version = s["Version"],
                s["Status"]?.split(separator: " ").last == "installed"
            else { return nil }
            var sourceName: String?
            var sourceVersion: String?
            if let source = s["Source"] {
                // `name` or `name (version)`
                let parts = source.split(separator: " ", maxSplits: 1)
                sourceName = parts.first.map(String.init)
                if parts.count == 2 {
                    sourceVersion = String(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "()")))
                }
            }
            var q = ["arch=" + (s["Architecture"] ?? "")]
            if let qualifier { q.append("distro=" + qualifier) }
            return SBOMPackage(
                ecosystem: "Debian", name: name, version: version, sourceName: sourceName ?? name,
                sourceVersion: sourceVersion ?? version,
                purl: "pkg:deb/\(distro)/\(purlEscape(name))@\(purlEscape(version))?\(q.joined(separator: "&"))")
        }
    }

    /// Installed packages of apk's database (`P:` name, `V:` version, `o:` origin).
    static func apk(_ text: String, qualifier: String?) -> [SBOMPackage] {
        stanzas(text, separator: ":").compactMap { s in
            guard let name = s["P"], let version = s["V"] else { return nil }
            return SBOMPackage(
                ecosystem: "Alpine", name: name, version: version, sourceName: s["o"] ?? name, sourceVersion: version,
                purl: "pkg:apk/alpine/\(purlEscape(name))@\(purlEscape(version))"
                    + (qualifier.map { "?distro=" + $0 } ?? ""))
        }
    }

    /// Python distributions: `*.dist-info/METADATA` under the usual site and dist-packages directories.
    static func python(_ reader: RootReader) throws -> [SBOMPackage] {
        var dirs: [String] = []
        for lib in ["/usr/lib", "/usr/local/lib", "/opt/venv/lib"] {
            for entry in reader.list(lib) where entry.hasPrefix("python3") {
                dirs += ["\(lib)/\(entry)/site-packages", "\(lib)/\(entry)/dist-packages"]
            }
        }
        var seen = Set<String>()
        var out: [SBOMPackage] = []
        for dir in dirs {
            for entry in reader.list(dir) where entry.hasSuffix(".dist-info") {
                guard out.count < maxPackages, let meta = reader.text("\(dir)/\(entry)/METADATA", limit: 4 << 20)
                else { continue }
                // The header block, before the first blank line (the description follows).
                let header = meta.components(separatedBy: "\n\n").first ?? meta
                let fields = stanzas(header, separator: ":").first ?? [:]
                guard let name = fields["Name"], let version = fields["Version"],
                    seen.insert(name + "@" + version).inserted
                else { continue }
                let normal = name.lowercased().replacingOccurrences(of: "_", with: "-").replacingOccurrences(
                    of: ".", with: "-")
                out.append(
                    SBOMPackage(
                        ecosystem: "PyPI", name: name, version: version, sourceName: nil, sourceVersion: nil,
                        purl: "pkg:pypi/\(purlEscape(normal))@\(purlEscape(version))"))
            }
        }
        return out
    }

    static func purlEscape(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: ".-_~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    /// The SBOM as a CycloneDX 1.5 JSON document.
    public func cycloneDX(image: String, digest: Digest) -> CycloneDX {
        CycloneDX(
            serialNumber: "urn:uuid:" + UUID().uuidString.lowercased(),
            metadata: .init(
                timestamp: ISO8601DateFormatter().string(from: Date()),
                tools: .init(components: [.init(type: "application", name: "vivarium")]),
                component: .init(type: "container", name: image, version: digest.rawValue)),
            components: packages.map { p in
                var props = [CycloneDX.Property(name: "vivarium:ecosystem", value: p.ecosystem)]
                if let s = p.sourceName, s != p.name || p.sourceVersion != p.version {
                    props.append(.init(name: "vivarium:source", value: s + (p.sourceVersion.map { " " + $0 } ?? "")))
                }
                return CycloneDX.Component(
                    type: "library", bomRef: p.purl, name: p.name, version: p.version, purl: p.purl, properties: props)
            })
    }
}

/// Reads files and directories inside a root, as if it were `/`.
struct RootReader {
    let fd: Int32

    func text(_ path: String, limit: Int) -> String? {
        let f = FileSystem.openInRoot(fd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
        guard f >= 0 else { return nil }
        defer { close(f) }
        var st = stat()
        guard fstat(f, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size <= limit else { return nil }
        var data = [UInt8](repeating: 0, count: Int(st.st_size))
        var got = 0
        while got < data.count {
            let n = data.withUnsafeMutableBytes { read(f, $0.baseAddress! + got, $0.count - got) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            got += n
        }
        return String(decoding: data[0..<got], as: UTF8.self)
    }

    func list(_ path: String) -> [String] {
        let f = FileSystem.openInRoot(fd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard f >= 0 else { return [] }
        guard let dir = fdopendir(f) else {
            close(f)
            return []
        }
        defer { closedir(dir) }
        var out: [String] = []
        while out.count < SBOM.maxPackages, let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }
}
