import Foundation

/// What the vivarium binary carries inside it: the static init of every sandbox and the OpenAPI
/// document of its API (both built into the binary by the EmbedAssets plugin).
public enum Assets {
    /// The static `vivarium-init` executable.
    public static var initBinary: Data { Data(base64Encoded: EmbeddedAssets.initBinaryBase64)! }
    /// `docs/openapi.json`.
    public static var openAPI: Data { Data(base64Encoded: EmbeddedAssets.openAPIBase64)! }
}
