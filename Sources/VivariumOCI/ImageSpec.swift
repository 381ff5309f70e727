import VivariumCore

/// The media types of the OCI image specification and their Docker v2 equivalents.
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
}

/// A reference to content by digest, size and media type.
public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var annotations: [String: String]?
    public var platform: Platform?
    /// In a referrers index: the referring artifact's type.
    public var artifactType: String?

    public init(
        mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil,
        platform: Platform? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

public struct Platform: Codable, Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var variant: String?
    public init(architecture: String, os: String, variant: String? = nil) {
        self.architecture = architecture
        self.os = os
        self.variant = variant
    }
}

/// An image manifest: one config and the layers, in order.
public struct Manifest: Codable, Sendable, Equatable {
    public var schemaVersion = 2
    public var mediaType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var annotations: [String: String]?

    public init(mediaType: String? = MediaType.ociManifest, config: Descriptor, layers: [Descriptor]) {
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
    }
}

/// An image index: manifests per platform.
public struct Index: Codable, Sendable, Equatable {
    public var schemaVersion = 2
    public var mediaType: String?
    public var manifests: [Descriptor]
    public init(mediaType: String? = MediaType.ociIndex, manifests: [Descriptor]) {
        self.mediaType = mediaType
        self.manifests = manifests
    }
}

/// The parts of an image configuration Vivarium reads.
public struct ImageConfig: Codable, Sendable, Equatable {
    public struct Config: Codable, Sendable, Equatable {
        public var env: [String]?
        public var entrypoint: [String]?
        public var cmd: [String]?
        public var workingDir: String?
        public var user: String?
        enum CodingKeys: String, CodingKey {
            case env = "Env", entrypoint = "Entrypoint", cmd = "Cmd", workingDir = "WorkingDir", user = "User"
        }
        public init(env: [String]? = nil) { self.env = env }
    }
    public struct RootFS: Codable, Sendable, Equatable {
        public var type: String
        public var diffIds: [Digest]
        enum CodingKeys: String, CodingKey { case type, diffIds = "diff_ids" }
        public init(diffIds: [Digest]) {
            type = "layers"
            self.diffIds = diffIds
        }
    }
    public var architecture: String
    public var os: String
    public var config: Config?
    public var rootfs: RootFS

    public init(architecture: String, os: String, config: Config?, rootfs: RootFS) {
        self.architecture = architecture
        self.os = os
        self.config = config
        self.rootfs = rootfs
    }
}
