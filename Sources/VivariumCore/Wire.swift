import Crypto
import Foundation

/// JSON wire types of the REST API, shared by the daemon and the CLI. Keys are snake_case on the
/// wire (see `WireCoding`).
public enum WireCoding {
    /// `type`'s encoder: a document of another specification (`ForeignDocument`) keeps its own keys.
    public static func encoder(for type: Any.Type = Never.self) -> JSONEncoder {
        let e = JSONEncoder()
        if !(type is any ForeignDocument.Type) { e.keyEncodingStrategy = .convertToSnakeCase }
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }
    public static func decoder(for type: Any.Type = Never.self) -> JSONDecoder {
        let d = JSONDecoder()
        if !(type is any ForeignDocument.Type) { d.keyDecodingStrategy = .convertFromSnakeCase }
        d.dateDecodingStrategy = .iso8601
        return d
    }
}

/// A document of another specification (CycloneDX): sent with the keys that specification spells.
public protocol ForeignDocument {}

public struct CreateSandboxRequest: Codable, Sendable {
    public var name: String?
    public var image: String?
    public var memoryBytes: Int64?
    public var milliCpus: Int64?
    public var pids: Int64?
    /// The quota of the writable layer, data and metadata (default 1 GiB).
    public var diskBytes: Int64?
    public var env: [String: String]?
    public var labels: [String: String]?
    public var ttlSeconds: Int64?
    public var readOnly: Bool?
    public var restart: String?
    /// `none` (loopback only), `public` or `allowlist`; default: the daemon's (`public` when it runs a
    /// sandbox network).
    public var network: String?
    /// With `allowlist`: `ADDRESS[/PREFIX][:PORT]` rules.
    public var allow: [String]?

    public init(
        name: String? = nil, image: String? = nil, memoryBytes: Int64? = nil, milliCpus: Int64? = nil,
        pids: Int64? = nil, env: [String: String]? = nil, labels: [String: String]? = nil,
        ttlSeconds: Int64? = nil, readOnly: Bool? = nil, restart: String? = nil, diskBytes: Int64? = nil,
        network: String? = nil, allow: [String]? = nil
    ) {
        self.network = network
        self.allow = allow
        self.diskBytes = diskBytes
        self.name = name
        self.image = image
        self.memoryBytes = memoryBytes
        self.milliCpus = milliCpus
        self.pids = pids
        self.env = env
        self.labels = labels
        self.ttlSeconds = ttlSeconds
        self.readOnly = readOnly
        self.restart = restart
    }
}

public struct SandboxInfo: Codable, Sendable {
    public var id: String
    public var name: String
    public var tenant: String
    public var image: String
    public var imageDigest: String
    public var state: String
    public var pid: Int32?
    public var memoryBytes: Int64
    public var milliCpus: Int64
    public var pids: Int64
    /// The disk quota of the writable layer (data and metadata).
    public var diskBytes: Int64
    /// The names of the sandbox's environment variables: values never leave through the API.
    public var envNames: [String]
    public var labels: [String: String]
    public var readOnly: Bool
    public var restart: String
    public var createdAt: Date
    public var expiresAt: Date?
    public var hostUidBase: Int64
    /// Bytes the sandbox's writable layer holds, counted as its quota counts them (data and metadata) where
    /// the disk pool enforces `disk_bytes`; only filled by a single-sandbox get.
    public var diskUsageBytes: Int64?
    /// The egress policy (`none`, `public`, `allowlist` with its `allow` rules) and the IPv4 address on
    /// the sandbox network (nil: loopback only).
    public var network: String
    public var allow: [String]?
    public var address: String?
    /// Packets the egress policy dropped since the daemon started; only filled by a single-sandbox get.
    public var deniedPackets: Int64?

    public init(
        id: String, name: String, tenant: String, image: String, imageDigest: String, state: String, pid: Int32?,
        memoryBytes: Int64, milliCpus: Int64, pids: Int64, envNames: [String], labels: [String: String],
        readOnly: Bool, restart: String, createdAt: Date, expiresAt: Date?, hostUidBase: Int64,
        diskUsageBytes: Int64?, diskBytes: Int64 = ResourceLimits.defaultDiskBytes, network: String = "none",
        address: String? = nil, allow: [String]? = nil, deniedPackets: Int64? = nil
    ) {
        self.deniedPackets = deniedPackets
        self.network = network
        self.address = address
        self.allow = allow
        self.diskBytes = diskBytes
        self.id = id
        self.name = name
        self.tenant = tenant
        self.image = image
        self.imageDigest = imageDigest
        self.state = state
        self.pid = pid
        self.memoryBytes = memoryBytes
        self.milliCpus = milliCpus
        self.pids = pids
        self.envNames = envNames
        self.labels = labels
        self.readOnly = readOnly
        self.restart = restart
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.hostUidBase = hostUidBase
        self.diskUsageBytes = diskUsageBytes
    }
}

/// A running or stopped sandbox's new egress policy.
public struct SetNetworkRequest: Codable, Sendable {
    public var egress: String
    public var allow: [String]?

    public init(egress: String, allow: [String]? = nil) {
        self.egress = egress
        self.allow = allow
    }
}

/// A sandbox port to publish through the ingress: by host name (`hostname`, or `PORT-SANDBOXID.DOMAIN`
/// when left out) over HTTP, or from a host port (`tcpPort`) as a plain TCP forward, which is public.
public struct ExposeRequest: Codable, Sendable {
    public var port: Int
    public var hostname: String?
    /// public or token (the default for HTTP routes).
    public var access: String?
    public var tcpPort: Int?

    public init(port: Int, hostname: String? = nil, access: String? = nil, tcpPort: Int? = nil) {
        self.port = port
        self.hostname = hostname
        self.access = access
        self.tcpPort = tcpPort
    }
}

/// A published sandbox port.
public struct RouteInfo: Codable, Sendable, Equatable {
    /// The host name, or `tcp-HOSTPORT` for a TCP forward.
    public var key: String
    public var sandbox: String
    public var port: Int
    public var access: String
    public var hostname: String?
    public var tcpPort: Int?
    /// Where to reach it (the ingress's address for a TCP forward).
    public var url: String
    public var createdAt: Date

    public init(
        key: String, sandbox: String, port: Int, access: String, hostname: String?, tcpPort: Int?, url: String,
        createdAt: Date
    ) {
        self.key = key
        self.sandbox = sandbox
        self.port = port
        self.access = access
        self.hostname = hostname
        self.tcpPort = tcpPort
        self.url = url
        self.createdAt = createdAt
    }
}

/// One page of a list, and the cursor of the next page (nil at the end).
public struct Page<Item: Sendable>: Sendable {
    public var items: [Item]
    public var nextCursor: String?
    public init(items: [Item], nextCursor: String?) {
        self.items = items
        self.nextCursor = nextCursor
    }
}

extension Page: Codable where Item: Codable {}

public struct ExecRequest: Codable, Sendable {
    public var argv: [String]
    /// Run `argv` joined by spaces through `/bin/sh -c`.
    public var shell: Bool?
    public var env: [String: String]?
    public var workdir: String?
    public var user: UInt32?
    public var timeoutSeconds: Double?
    public var maxOutputBytes: Int?

    public init(
        argv: [String], shell: Bool? = nil, env: [String: String]? = nil, workdir: String? = nil,
        user: UInt32? = nil, timeoutSeconds: Double? = nil, maxOutputBytes: Int? = nil
    ) {
        self.argv = argv
        self.shell = shell
        self.env = env
        self.workdir = workdir
        self.user = user
        self.timeoutSeconds = timeoutSeconds
        self.maxOutputBytes = maxOutputBytes
    }
}

/// The first message of a streamed exec (`/v1/sandboxes/{name}/exec/stream`), sent as JSON text: the
/// command as `ExecRequest` has it (output is streamed, so there is no output cap), with a terminal when
/// `tty` is set (`rows` × `columns`, 24 × 80 by default) and the caller's input when `stdin` is.
public struct StreamExecRequest: Codable, Sendable {
    public var argv: [String]
    public var shell: Bool?
    public var env: [String: String]?
    public var workdir: String?
    public var user: UInt32?
    /// Kill the command after this long (the default is the 24 h cap; closing the socket kills it too).
    public var timeoutSeconds: Double?
    public var tty: Bool?
    public var rows: UInt16?
    public var columns: UInt16?
    public var stdin: Bool?

    public init(
        argv: [String], shell: Bool? = nil, env: [String: String]? = nil, workdir: String? = nil,
        user: UInt32? = nil, timeoutSeconds: Double? = nil, tty: Bool? = nil, rows: UInt16? = nil,
        columns: UInt16? = nil, stdin: Bool? = nil
    ) {
        self.argv = argv
        self.shell = shell
        self.env = env
        self.workdir = workdir
        self.user = user
        self.timeoutSeconds = timeoutSeconds
        self.tty = tty
        self.rows = rows
        self.columns = columns
        self.stdin = stdin
    }
}

/// A command to start detached: it runs until it ends, is signalled, or its sandbox stops; its output is
/// kept (the last `max_output_bytes`, 8 MiB by default) and can be read or followed later.
public struct StartProcessRequest: Codable, Sendable {
    public var argv: [String]
    public var shell: Bool?
    public var env: [String: String]?
    public var workdir: String?
    public var user: UInt32?
    /// Keep a stdin the process can be fed through `processes/input`.
    public var stdin: Bool?
    public var maxOutputBytes: Int?

    public init(
        argv: [String], shell: Bool? = nil, env: [String: String]? = nil, workdir: String? = nil,
        user: UInt32? = nil, stdin: Bool? = nil, maxOutputBytes: Int? = nil
    ) {
        self.argv = argv
        self.shell = shell
        self.env = env
        self.workdir = workdir
        self.user = user
        self.stdin = stdin
        self.maxOutputBytes = maxOutputBytes
    }
}

/// A detached process: `running`, `exited` (with its exit code) or `lost` (killed with its sandbox).
public struct ProcessSummary: Codable, Sendable, Equatable {
    public var id: String
    public var argv: [String]
    public var user: UInt32
    public var workdir: String
    public var state: String
    public var pid: Int32?
    public var exitCode: Int32?
    public var stdin: Bool
    public var startedAt: Date
    public var endedAt: Date?

    public init(
        id: String, argv: [String], user: UInt32, workdir: String, state: String, pid: Int32?, exitCode: Int32?,
        stdin: Bool, startedAt: Date, endedAt: Date?
    ) {
        self.id = id
        self.argv = argv
        self.user = user
        self.workdir = workdir
        self.state = state
        self.pid = pid
        self.exitCode = exitCode
        self.stdin = stdin
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

/// A detached process's kept output, each stream in order; `dropped_bytes` were dropped at the front to
/// stay in bounds.
public struct ProcessLogs: Codable, Sendable {
    public var process: ProcessSummary
    public var stdout: Data
    public var stderr: Data
    public var droppedBytes: Int64

    public init(process: ProcessSummary, stdout: Data, stderr: Data, droppedBytes: Int64) {
        self.process = process
        self.stdout = stdout
        self.stderr = stderr
        self.droppedBytes = droppedBytes
    }
}

public struct SignalProcessRequest: Codable, Sendable {
    public var id: String
    /// A name (`TERM`, `KILL`, …) or number, as `StreamControl.signal`.
    public var signal: String
    public init(id: String, signal: String) {
        self.id = id
        self.signal = signal
    }
}

public struct ProcessInputRequest: Codable, Sendable {
    public var id: String
    /// Bytes (base64) for the process's stdin, at most a pipe's worth (64 KiB) at a time.
    public var data: Data
    public init(id: String, data: Data) {
        self.id = id
        self.data = data
    }
}

/// A streamed exec's data travel as binary messages whose first byte names the stream.
public enum StreamChannel: UInt8, Sendable {
    case stdin = 0
    case stdout = 1
    case stderr = 2
}

/// A streamed exec's control messages, JSON text. The client sends `resize`, `signal` and `close_stdin`;
/// the daemon ends with `exit` (every output byte was sent before it), or `error` when the command could
/// not run, and then closes the socket.
public struct StreamControl: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case resize, signal, exit, error
        case closeStdin = "close_stdin"
    }
    public var type: Kind
    public var rows: UInt16?
    public var columns: UInt16?
    /// A signal name (`INT`, `TERM`, `KILL`, `HUP`, `QUIT`, `USR1`, `USR2`, `WINCH`) or number.
    public var signal: String?
    public var exitCode: Int32?
    public var timedOut: Bool?
    public var code: String?
    public var message: String?

    public init(
        _ type: Kind, rows: UInt16? = nil, columns: UInt16? = nil, signal: String? = nil, exitCode: Int32? = nil,
        timedOut: Bool? = nil, code: String? = nil, message: String? = nil
    ) {
        self.type = type
        self.rows = rows
        self.columns = columns
        self.signal = signal
        self.exitCode = exitCode
        self.timedOut = timedOut
        self.code = code
        self.message = message
    }

    /// The signals a caller may send, by name.
    public static let signals: [String: Int32] = [
        "HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15, "CONT": 18, "STOP": 19,
        "WINCH": 28,
    ]

    /// The number of a signal given by name (`TERM`, `SIGTERM`) or number (1...64).
    public static func signalNumber(_ s: String) -> Int32? {
        let name = s.uppercased().hasPrefix("SIG") ? String(s.uppercased().dropFirst(3)) : s.uppercased()
        if let n = signals[name] { return n }
        if let n = Int32(s), (1...64).contains(n) { return n }
        return nil
    }
}

public struct ExecResult: Codable, Sendable {
    public var exitCode: Int32
    public var stdout: Data
    public var stderr: Data
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool
    public var timedOut: Bool
    public var durationMs: Double

    public init(
        exitCode: Int32, stdout: Data, stderr: Data, stdoutTruncated: Bool, stderrTruncated: Bool, timedOut: Bool,
        durationMs: Double
    ) {
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.stderrTruncated = stderrTruncated
        self.timedOut = timedOut
        self.durationMs = durationMs
    }
}

/// `POST /v1/sandboxes/run`: create a sandbox, run one command in it, and delete it when `remove` is set.
public struct RunRequest: Codable, Sendable {
    public var sandbox: CreateSandboxRequest
    public var exec: ExecRequest
    public var remove: Bool?
    public init(sandbox: CreateSandboxRequest, exec: ExecRequest, remove: Bool? = nil) {
        self.sandbox = sandbox
        self.exec = exec
        self.remove = remove
    }
}

public struct RunResult: Codable, Sendable {
    /// The sandbox as created (it is gone when `removed`).
    public var sandbox: SandboxInfo
    public var result: ExecResult
    public var removed: Bool
    public init(sandbox: SandboxInfo, result: ExecResult, removed: Bool) {
        self.sandbox = sandbox
        self.result = result
        self.removed = removed
    }
}

/// What `image import` reads: a root file system (a directory or a tar of one), an OCI image layout
/// (`oci-layout`, `index.json`, `blobs/`, as `skopeo copy … oci:` or `umoci` write it), or a
/// docker-archive (`manifest.json` with the config and the layer tars, as `docker save` writes it);
/// the two image formats as a directory or a tar. `auto` looks for the formats' marker files.
public enum ImportFormat: String, Sendable, CaseIterable, Codable {
    case auto, rootfs, oci, dockerArchive = "docker-archive"
}

public struct ImportImageRequest: Codable, Sendable {
    /// A rootfs directory, an OCI image layout or a docker-archive, or a tar archive of one, on the
    /// daemon's host.
    public var path: String
    public var name: String
    public var format: ImportFormat?
    public init(path: String, name: String, format: ImportFormat? = nil) {
        self.path = path
        self.name = name
        self.format = format
    }
}

public struct ImageInfo: Codable, Sendable {
    public var name: String
    public var tenant: String
    public var digest: String
    public var sizeBytes: Int64
    public var createdAt: Date
    /// A pulled image's registry reference, pinned to `digest`.
    public var reference: String?
    public init(
        name: String, tenant: String, digest: String, sizeBytes: Int64, createdAt: Date, reference: String? = nil
    ) {
        self.reference = reference
        self.name = name
        self.tenant = tenant
        self.digest = digest
        self.sizeBytes = sizeBytes
        self.createdAt = createdAt
    }
}

/// `POST /v1/images/pull`.
extension ImageRecord {
    public var info: ImageInfo {
        ImageInfo(
            name: name.rawValue, tenant: tenant, digest: digest.rawValue, sizeBytes: sizeBytes, createdAt: createdAt,
            reference: reference)
    }
}

/// A pull in flight: what `vivarium image pull` shows while it waits.
public struct PullStatus: Codable, Sendable, Equatable {
    public var reference: String
    /// `resolving`, `fetching`, `unpacking` or `checking` (the vulnerability gate).
    public var phase: String
    /// Blobs to fetch (config and layers the store lacks), and those fetched.
    public var blobs: Int
    public var blobsDone: Int
    public var bytes: Int64
    public var totalBytes: Int64
    public var elapsedSeconds: Double
    public init(
        reference: String, phase: String, blobs: Int, blobsDone: Int, bytes: Int64, totalBytes: Int64,
        elapsedSeconds: Double
    ) {
        self.reference = reference
        self.phase = phase
        self.blobs = blobs
        self.blobsDone = blobsDone
        self.bytes = bytes
        self.totalBytes = totalBytes
        self.elapsedSeconds = elapsedSeconds
    }
}

public struct PullImageRequest: Codable, Sendable {
    /// Docker's grammar: `busybox`, `registry.example.com:5000/team/app:1.0`, `…@sha256:…`.
    public var reference: String
    public init(reference: String) { self.reference = reference }
}

/// A local image (a name, or a reference pulled) published to a registry under `destination`.
public struct PushImageRequest: Codable, Sendable {
    public var image: String
    /// A registry reference with a tag: `registry.example.com/team/app:1.0`.
    public var destination: String
    public init(image: String, destination: String) {
        self.image = image
        self.destination = destination
    }
}

/// An image in the content store: its record, its manifest's layers and what its config says.
public struct ImageDetails: Codable, Sendable {
    public struct Layer: Codable, Sendable {
        public var digest: Digest
        public var mediaType: String
        public var sizeBytes: Int64
        public init(digest: Digest, mediaType: String, sizeBytes: Int64) {
            self.digest = digest
            self.mediaType = mediaType
            self.sizeBytes = sizeBytes
        }
    }
    public var image: ImageInfo
    public var mediaType: String
    public var configDigest: Digest
    public var architecture: String?
    public var os: String?
    public var env: [String]
    public var entrypoint: [String]?
    public var cmd: [String]?
    public var workingDir: String?
    public var user: String?
    public var layers: [Layer]
    /// Where the image was pushed, for `image push`.
    public var pushedTo: String?
    public init(
        image: ImageInfo, mediaType: String, configDigest: Digest, architecture: String?, os: String?, env: [String],
        entrypoint: [String]?, cmd: [String]?, workingDir: String?, user: String?, layers: [Layer],
        pushedTo: String? = nil
    ) {
        self.image = image
        self.mediaType = mediaType
        self.configDigest = configDigest
        self.architecture = architecture
        self.os = os
        self.env = env
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.workingDir = workingDir
        self.user = user
        self.layers = layers
        self.pushedTo = pushedTo
    }
}

/// What to sign for an image: the digest its reference resolves to, and cosign's simple-signing payload
/// for it (base64), signed as it is.
public struct SigningPayload: Codable, Sendable {
    public var reference: String
    public var digest: Digest
    public var payload: Data
    public init(reference: String, digest: Digest, payload: Data) {
        self.reference = reference
        self.digest = digest
        self.payload = payload
    }
}

/// A signature over a signing payload (both base64): ECDSA P-256 (ASN.1 DER) or Ed25519.
public struct PublishSignatureRequest: Codable, Sendable {
    public var reference: String
    public var payload: Data
    public var signature: Data
    public init(reference: String, payload: Data, signature: Data) {
        self.reference = reference
        self.payload = payload
        self.signature = signature
    }
}

public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var requestId: String
        public init(code: String, message: String, requestId: String) {
            self.code = code
            self.message = message
            self.requestId = requestId
        }
    }
    public var error: Detail
    public init(error: Detail) { self.error = error }
}

/// Up or down, and nothing else: the route is unauthenticated.
public struct HealthInfo: Codable, Sendable {
    public var status: String
    public init(status: String) { self.status = status }
}

public enum VivariumVersion {
    public static let string = "0.1.0"
}

/// A path inside a sandbox, as the file API reports it (a symlink itself, with its target).
public struct FileInfo: Codable, Sendable, Equatable {
    public var path: String
    /// `file`, `directory`, `symlink`, `fifo`, `socket`, `device` or `other`.
    public var type: String
    public var sizeBytes: Int64
    /// Permission bits, octal as `ls` shows them (`0644`).
    public var mode: String
    /// Owner and group as the sandbox sees them.
    public var uid: Int64
    public var gid: Int64
    public var modifiedAt: Date
    public var target: String?
    public init(
        path: String, type: String, sizeBytes: Int64, mode: String, uid: Int64, gid: Int64, modifiedAt: Date,
        target: String? = nil
    ) {
        self.path = path
        self.type = type
        self.sizeBytes = sizeBytes
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.modifiedAt = modifiedAt
        self.target = target
    }
}

public struct MakeDirectoryRequest: Codable, Sendable {
    public var path: String
    public var parents: Bool?
    /// Octal, `0755` when not given.
    public var mode: String?
    public init(path: String, parents: Bool? = nil, mode: String? = nil) {
        self.path = path
        self.parents = parents
        self.mode = mode
    }
}

public struct MoveRequest: Codable, Sendable {
    public var from: String
    public var to: String
    public init(from: String, to: String) {
        self.from = from
        self.to = to
    }
}

/// RFC 6455's handshake check: the `Sec-WebSocket-Accept` a server must answer for a client's key.
public enum WebSocketHandshake {
    public static func accept(key: String) -> String {
        Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            .base64EncodedString()
    }
}
