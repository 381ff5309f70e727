import Foundation
import Logging
import Synchronization
import VivariumCore
import VivariumOCI
import VivariumOS

/// How far a pull is: updated by the puller as bytes arrive, read by whoever shows it.
public final class PullProgress: Sendable {
    public struct State: Sendable {
        public var phase = "resolving"
        public var blobs = 0
        public var blobsDone = 0
        public var bytes: Int64 = 0
        public var totalBytes: Int64 = 0
    }
    let state = Mutex(State())
    public let started = ContinuousClock.now

    public init() {}

    public var current: State { state.withLock { $0 } }
    public func update(_ change: (inout State) -> Void) { state.withLock { change(&$0) } }
}

/// Pulls an image from a registry into the content store: the manifest (through an index, for this
/// host's platform), the config and the layers, each checked against its digest while it streams and
/// stored only when it matched; then the layers applied in order (whiteouts included) into the image's
/// root, each layer's uncompressed digest checked against the config's diff ids.
public struct ImagePuller: Sendable {
    public let store: ImageStore
    public let client: RegistryClient
    public let rules: UnpackRules
    let logger: Logger
    /// Layers fetched at once.
    public static let parallelLayers = 3

    public init(store: ImageStore, client: RegistryClient, rules: UnpackRules, logger: Logger) {
        self.store = store
        self.client = client
        self.rules = rules
        self.logger = logger
    }

    public struct Pulled: Sendable {
        /// The manifest's digest: what a sandbox runs.
        public var digest: Digest
        public var rootfs: String
        public var sizeBytes: Int64
        public var config: ImageConfig?
    }

    static let indexTypes: Set<String> = [MediaType.ociIndex, MediaType.dockerManifestList]
    static let layerTypes: Set<String> = [
        MediaType.ociLayer, MediaType.ociLayerGzip, MediaType.ociLayerZstd, MediaType.dockerLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar",
    ]

    /// What a reference resolves to before any blob is fetched: the digests to admit, and the manifest.
    public struct Resolved: Sendable {
        /// The digest the reference resolves to, then (through an index) the platform manifest's.
        public var digests: [Digest]
        var fetched: RegistryClient.Fetched
        var manifest: Manifest
    }

    /// Resolves `ref` (a registry, and a tag or digest) to this host's manifest, through an index.
    public func resolve(_ ref: ImageReference, login: RegistryLogin?) async throws -> Resolved {
        var fetched = try await client.manifest(
            ref, reference: ref.digest?.rawValue ?? ref.tag ?? "latest", login: login)
        var digests = [fetched.digest]
        if Self.indexTypes.contains(fetched.mediaType) {
            let index = try ImageStore.decode(Index.self, fetched.data, "the index of \(ref)")
            let arch = ImageStore.architecture
            guard
                let m = index.manifests.first(where: { $0.platform?.os == "linux" && $0.platform?.architecture == arch }
                )
            else {
                throw VivariumError(.imageNotFound, "\(ref) has no manifest for linux/\(arch)")
            }
            fetched = try await client.manifest(ref, reference: m.digest.rawValue, login: login)
            guard fetched.digest == m.digest else {
                throw VivariumError(.digestMismatch, "the index of \(ref) names \(m.digest), the registry sent another")
            }
            digests.append(fetched.digest)
        }
        let manifest = try ImageStore.decode(Manifest.self, fetched.data, "the manifest of \(ref)")
        guard manifest.layers.count <= client.options.maxLayers else {
            throw VivariumError(
                .invalidArgument, "\(ref) has \(manifest.layers.count) layers, more than \(client.options.maxLayers)")
        }
        for l in manifest.layers where !Self.layerTypes.contains(l.mediaType) {
            throw VivariumError(.invalidArgument, "\(ref) has a layer of type \(l.mediaType), which is not supported")
        }
        return Resolved(digests: digests, fetched: fetched, manifest: manifest)
    }

    /// Fetches what the store lacks of a resolved image and unpacks it.
    public func pull(
        _ ref: ImageReference, _ resolved: Resolved, login: RegistryLogin?, progress: PullProgress = PullProgress()
    ) async throws -> Pulled {
        let fetched = resolved.fetched
        let manifest = resolved.manifest
        let digest = fetched.digest
        if FileSystem.exists(store.rootfsPath(digest)) {
            return Pulled(
                digest: digest, rootfs: store.rootfsPath(digest),
                sizeBytes: await FileSystem.diskUsage(store.rootfsPath(digest)),
                config: try? store.config(manifest.config.digest))
        }
        let missing = ([manifest.config] + manifest.layers).filter { !FileSystem.exists(store.blobPath($0.digest)) }
        progress.update {
            $0.phase = "fetching"
            $0.blobs = missing.count
            $0.totalBytes = missing.reduce(0) { $0 + $1.size }
        }
        try await fetch([manifest.config], ref, login, progress)
        let config = try store.config(manifest.config.digest)
        _ = try ImageStore.diffIDs(manifest, config, "\(ref)")
        try await fetch(manifest.layers, ref, login, progress)
        progress.update { $0.phase = "unpacking" }
        let assembled = try await store.assemble(
            manifest, data: fetched.data, digest: digest, rules: rules, label: "\(ref)")
        logger.info(
            "pulled image", metadata: ["image": "\(ref)", "digest": "\(digest)", "bytes": "\(assembled.sizeBytes)"])
        return Pulled(digest: digest, rootfs: assembled.rootfs, sizeBytes: assembled.sizeBytes, config: config)
    }

    /// Fetches the blobs the store lacks, a few at once; each enters the store only after its digest
    /// matched.
    func fetch(
        _ blobs: [Descriptor], _ ref: ImageReference, _ login: RegistryLogin?, _ progress: PullProgress
    ) async throws {
        let missing = blobs.filter { !FileSystem.exists(store.blobPath($0.digest)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = missing.makeIterator()
            func start() -> Bool {
                guard let d = next.next() else { return false }
                group.addTask { [store, client] in
                    let tmp = "\(store.root)/tmp/blob-\(randomHex(bytes: 8))"
                    try await client.blob(ref, d, to: tmp, login: login) { n in progress.update { $0.bytes += Int64(n) }
                    }
                    do { try store.storeBlob(file: tmp, digest: d.digest) } catch {
                        unlink(tmp)
                        throw error
                    }
                    progress.update { $0.blobsDone += 1 }
                }
                return true
            }
            for _ in 0..<Self.parallelLayers where !start() { break }
            while try await group.next() != nil { _ = start() }
        }
    }
}
