// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

let package = Package(
    name: "Vivarium",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vivarium", targets: ["vivarium"]),
        .executable(name: "vivarium-bench", targets: ["vivarium-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
    ],
    targets: [
        .target(name: "CVivariumOS"),
        .target(
            name: "VivariumCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(
            name: "VivariumOS",
            dependencies: ["CVivariumOS", "VivariumCore", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "VivariumImages",
            dependencies: [
                "VivariumCore", "VivariumOS", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumRuntime",
            dependencies: ["VivariumCore", "VivariumOS", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "VivariumAudit",
            dependencies: ["VivariumCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(
            name: "VivariumStore",
            dependencies: [
                "VivariumCore", "VivariumAudit", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumAuth",
            dependencies: [
                "VivariumCore", "VivariumStore", "VivariumAudit", .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumEngine",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumImages", "VivariumRuntime", "VivariumStore", "VivariumAuth",
                "VivariumAudit", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumAPI",
            dependencies: [
                "VivariumCore", "VivariumAuth", "VivariumAudit", "VivariumEngine",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "vivarium",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumAuth", "VivariumAudit", "VivariumEngine", "VivariumAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .target(
            name: "VivariumTestSupport",
            dependencies: ["VivariumCore", "VivariumOS"],
            swiftSettings: strict),
        .executableTarget(
            name: "vivarium-bench",
            dependencies: ["VivariumCore", "VivariumOS", "VivariumRuntime", "VivariumTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumCoreTests",
            dependencies: [
                "VivariumCore", "VivariumOS", "VivariumRuntime", "VivariumStore", "VivariumAuth", "VivariumAudit",
                "VivariumEngine", "VivariumAPI", "VivariumTestSupport",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "VivariumIntegrationTests",
            dependencies: ["VivariumCore", "VivariumOS", "VivariumAudit", "VivariumTestSupport"],
            swiftSettings: strict),
    ]
)
