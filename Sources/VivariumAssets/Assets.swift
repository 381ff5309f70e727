import Foundation

/// What the vivarium binary carries inside it: the static init of every sandbox, the shim of detached
/// commands and the OpenAPI document of its API (built into the binary by the EmbedAssets plugin).
public enum Assets {
    /// The static `vivarium-init` executable.
    public static var initBinary: Data { Data(base64Encoded: EmbeddedAssets.initBinaryBase64)! }
    /// The static `vivarium-shim` executable, the keeper of each detached command.
    public static var shimBinary: Data { Data(base64Encoded: EmbeddedAssets.shimBinaryBase64)! }
    /// `docs/openapi.json`.
    public static var openAPI: Data { Data(base64Encoded: EmbeddedAssets.openAPIBase64)! }
}
