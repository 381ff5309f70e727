import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import VivariumCore
import VivariumOS
import X509

/// The daemon's TLS certificate: the operator's (`tls_cert` + `tls_key`), or a self-signed one made
/// on first start and kept in `<state>/tls` (key 0600). Clients pin it by its SHA-256 fingerprint.
struct TLSIdentity {
    let certificateDER: [UInt8]
    let privateKeyPEM: String

    /// SHA-256 of the certificate's DER, as colon-separated upper-case hex (what `login --fingerprint` takes).
    var fingerprint: String {
        Digest.of(certificateDER).hex.uppercased().enumerated().map { i, c in i > 0 && i % 2 == 0 ? ":\(c)" : "\(c)" }
            .joined()
    }

    static func load(certFile: String, keyFile: String) throws -> TLSIdentity {
        do {
            let certs = try NIOSSLCertificate.fromPEMFile(certFile)
            guard let first = certs.first else {
                throw VivariumError(.invalidArgument, "no certificate in \(certFile)")
            }
            let key = try String(contentsOfFile: keyFile, encoding: .utf8)
            _ = try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem)
            return TLSIdentity(certificateDER: try first.toDERBytes(), privateKeyPEM: key)
        } catch let e as VivariumError {
            throw e
        } catch {
            throw VivariumError(.invalidArgument, "cannot load the TLS certificate or key", cause: error)
        }
    }

    /// The self-signed identity in `dir`, made on first use, valid for `host` and localhost.
    static func selfSigned(dir: String, host: String) throws -> TLSIdentity {
        let certPath = dir + "/cert.pem"
        let keyPath = dir + "/key.pem"
        if FileSystem.exists(certPath) && FileSystem.exists(keyPath) {
            return try load(certFile: certPath, keyFile: keyPath)
        }
        try FileSystem.makeDirectory(dir, mode: 0o700)
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("vivarium") }
        var sans: [GeneralName] = [.dnsName("localhost")]
        if let ip = ipv4Bytes(host) { sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip)))) }
        if host == "::1" {
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))))
        }
        if ipv4Bytes(host) == nil && host != "::1" && !host.isEmpty { sans.append(.dnsName(host)) }
        sans.append(.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])))
        let now = Date()
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(825 * 86400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                KeyUsage(digitalSignature: true, keyCertSign: true)
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(sans)
            },
            issuerPrivateKey: .init(key))
        let certPEM = try cert.serializeAsPEM().pemString
        try FileSystem.writeSecret(Data(key.pemRepresentation.utf8), to: keyPath)
        try FileSystem.writeAtomically(Data(certPEM.utf8), to: certPath, mode: 0o644)
        return try load(certFile: certPath, keyFile: keyPath)
    }

    static func ipv4Bytes(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".")
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { UInt8($0) }
        return bytes.count == 4 ? bytes : nil
    }

    /// TLS 1.2 or newer, this certificate.
    func serverConfiguration() throws -> TLSConfiguration {
        var c = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: certificateDER, format: .der))],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)))
        c.minimumTLSVersion = .tlsv12
        return c
    }
}

/// The ingress's certificates per host name (`ingress_certs`): every `NAME.crt` (PEM, the chain) with its
/// `NAME.key` in one directory, each serving the DNS names of its subject alternative names (`*.domain`
/// too). A client's SNI picks one; a name none covers gets the daemon's certificate.
struct HostCertificates: Sendable {
    struct Entry: Sendable {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
    }
    let byName: [String: Entry]

    static func load(dir: String) throws -> HostCertificates {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        var byName: [String: Entry] = [:]
        for file in files.sorted() where file.hasSuffix(".crt") {
            let base = dir + "/" + file.dropLast(4)
            do {
                let chain = try NIOSSLCertificate.fromPEMFile(dir + "/" + file)
                let key = try NIOSSLPrivateKey(file: base + ".key", format: .pem)
                guard let leaf = chain.first else { throw VivariumError(.invalidArgument, "no certificate") }
                let cert = try Certificate(derEncoded: try leaf.toDERBytes())
                let sans = try cert.extensions.subjectAlternativeNames.map { Array($0) } ?? []
                let names = sans.compactMap { n -> String? in
                    if case .dnsName(let d) = n { return d.lowercased() }
                    return nil
                }
                guard !names.isEmpty else { throw VivariumError(.invalidArgument, "it names no DNS name") }
                for n in names { byName[n] = Entry(chain: chain, key: key) }
            } catch {
                throw VivariumError(
                    .invalidArgument, "ingress_certs: cannot use \(dir)/\(file) with \(base).key: \(error)")
            }
        }
        guard !byName.isEmpty else {
            throw VivariumError(.invalidArgument, "ingress_certs: no NAME.crt with its NAME.key in \(dir)")
        }
        return HostCertificates(byName: byName)
    }

    /// The certificate for a requested name: exact, then a wildcard for its first label.
    func entry(for sni: String?) -> Entry? {
        guard let name = sni?.lowercased() else { return nil }
        if let e = byName[name] { return e }
        guard let dot = name.firstIndex(of: ".") else { return nil }
        return byName["*" + name[dot...]]
    }

    /// The ingress's TLS configuration: `fallback`'s certificate unless the client's SNI names one of these.
    func serverConfiguration(fallback: TLSIdentity) throws -> TLSConfiguration {
        var c = try fallback.serverConfiguration()
        c.sslContextCallback = { values, promise in
            var o = NIOSSLContextConfigurationOverride()
            if let e = entry(for: values.serverHostname) {
                o.certificateChain = e.chain.map { .certificate($0) }
                o.privateKey = .privateKey(e.key)
            }
            promise.succeed(o)
        }
        return c
    }
}
