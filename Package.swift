// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let nio = Target.Dependency.product(name: "NIOCore", package: "swift-nio")

let package = Package(
    name: "Vivarium",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vivarium", targets: ["vivarium"]),
        .executable(name: "vivarium-bench", targets: ["vivarium-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .target(name: "CVivariumOS", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("zstd")]),
        .target(name: "VivariumCore", dependencies: [crypto], swiftSettings: strict),
        .target(name: "VivariumOS", dependencies: ["CVivariumOS", "VivariumCore"], swiftSettings: strict),
        .target(name: "VivariumOCI", dependencies: ["VivariumCore"], swiftSettings: strict),
        .target(name: "VivariumAudit", dependencies: ["VivariumCore", "VivariumOS", crypto], swiftSettings: strict),
        .target(
            name: "VivariumImages",
            dependencies: [
                "VivariumCore", "VivariumOCI", "VivariumOS", crypto, logging, nio,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumRuntime", dependencies: ["VivariumCore", "VivariumOCI", "VivariumOS", logging],
            swiftSettings: strict),
        .target(
            name: "VivariumStore",
            dependencies: ["VivariumCore", "VivariumAudit", .product(name: "GRDB", package: "GRDB.swift"), logging],
            swiftSettings: strict),
        .target(
            name: "VivariumAuth",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumStore", "VivariumAudit",
                .product(name: "JWTKit", package: "jwt-kit"), crypto, logging,
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumNetwork",
            dependencies: [
                "VivariumCore", "VivariumOS", logging, nio, .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumSecrets",
            dependencies: [
                "VivariumCore", "VivariumOS", crypto, nio, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumEngine",
            dependencies: [
                "VivariumCore", "VivariumOCI", "VivariumOS", "VivariumImages", "VivariumRuntime", "VivariumNetwork",
                "VivariumSecrets", "VivariumStore", "VivariumAuth", "VivariumAudit", logging, lifecycle,
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumAPI",
            dependencies: [
                "VivariumCore", "VivariumAuth", "VivariumAudit", "VivariumEngine",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"), nio,
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOWebSocket", package: "swift-nio"),
                logging,
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumClient",
            dependencies: [
                "VivariumCore", nio, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        .plugin(name: "EmbedAssets", capability: .buildTool()),
        .target(name: "VivariumAssets", swiftSettings: strict, plugins: ["EmbedAssets"]),
        .executableTarget(
            name: "vivarium",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumAuth", "VivariumAudit", "VivariumEngine", "VivariumAPI",
                "VivariumClient", "VivariumAssets", "VivariumRuntime", "VivariumStore", "VivariumImages",
                "VivariumNetwork", "VivariumSecrets",
                .product(name: "ArgumentParser", package: "swift-argument-parser"), logging,
                lifecycle,
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), nio,
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"), crypto,
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumTestSupport", dependencies: ["VivariumCore", "VivariumOS", "VivariumClient"],
            swiftSettings: strict),
        .executableTarget(
            name: "vivarium-bench",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumRuntime", "VivariumClient", "VivariumTestSupport", logging,
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumEngineTestSupport",
            dependencies: [
                "VivariumCore", "VivariumOCI", "VivariumOS", "VivariumRuntime", "VivariumStore", "VivariumAuth",
                "VivariumAudit", "VivariumEngine", "VivariumImages", "VivariumSecrets", logging,
            ],
            path: "Tests/EngineTestSupport", swiftSettings: strict),
        // One test target per module; the integration tests drive a real daemon as root.
        .testTarget(
            name: "VivariumCoreTests", dependencies: ["VivariumCore", "VivariumTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "VivariumImagesTests", dependencies: ["VivariumCore", "VivariumImages", "VivariumTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumOSTests", dependencies: ["VivariumCore", "VivariumOS", "VivariumTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumNetworkTests",
            dependencies: ["VivariumCore", "VivariumOS", "VivariumNetwork", "VivariumTestSupport", logging],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumSecretsTests",
            dependencies: ["VivariumCore", "VivariumOS", "VivariumSecrets", "VivariumTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumAuditTests", dependencies: ["VivariumCore", "VivariumAudit", crypto], swiftSettings: strict),
        .testTarget(
            name: "VivariumStoreTests",
            dependencies: ["VivariumCore", "VivariumAudit", "VivariumStore", "VivariumTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumAuthTests",
            dependencies: [
                "VivariumCore", "VivariumAudit", "VivariumStore", "VivariumAuth", "VivariumTestSupport", crypto,
                logging,
            ],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumRuntimeTests",
            dependencies: [
                "VivariumCore", "VivariumOCI", "VivariumOS", "VivariumRuntime", "VivariumImages", "VivariumAssets",
                "VivariumTestSupport", logging,
            ],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumEngineTests",
            dependencies: [
                "VivariumCore", "VivariumAudit", "VivariumStore", "VivariumRuntime", "VivariumEngine",
                "VivariumEngineTestSupport", "VivariumTestSupport",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumAPITests",
            dependencies: [
                "VivariumCore", "VivariumAudit", "VivariumAuth", "VivariumEngine", "VivariumAPI",
                "VivariumEngineTestSupport", "VivariumTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumClientTests",
            dependencies: ["VivariumCore", "VivariumClient", "VivariumTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "VivariumIntegrationTests",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumAudit", "VivariumClient", "VivariumTestSupport", logging,
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"), nio,
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: strict),
    ]
)
