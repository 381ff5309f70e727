/// A CycloneDX 1.5 bill of materials (the parts Vivarium writes).
public struct CycloneDX: Codable, Sendable, ForeignDocument {
    public var bomFormat = "CycloneDX"
    public var specVersion = "1.5"
    public var serialNumber: String
    public var version = 1
    public var metadata: Metadata
    public var components: [Component]

    public init(serialNumber: String, metadata: Metadata, components: [Component]) {
        self.serialNumber = serialNumber
        self.metadata = metadata
        self.components = components
    }

    public struct Metadata: Codable, Sendable {
        public var timestamp: String
        public var tools: Tools
        public var component: Tool
        public init(timestamp: String, tools: Tools, component: Tool) {
            self.timestamp = timestamp
            self.tools = tools
            self.component = component
        }
    }
    public struct Tools: Codable, Sendable {
        public var components: [Tool]
        public init(components: [Tool]) { self.components = components }
    }
    public struct Tool: Codable, Sendable {
        public var type: String
        public var name: String
        public var version: String?
        public init(type: String, name: String, version: String? = nil) {
            self.type = type
            self.name = name
            self.version = version
        }
    }
    public struct Component: Codable, Sendable {
        public var type: String
        public var bomRef: String
        public var name: String
        public var version: String
        public var purl: String
        public var properties: [Property]
        public init(type: String, bomRef: String, name: String, version: String, purl: String, properties: [Property]) {
            self.type = type
            self.bomRef = bomRef
            self.name = name
            self.version = version
            self.purl = purl
            self.properties = properties
        }
        enum CodingKeys: String, CodingKey {
            case type, name, version, purl, properties
            case bomRef = "bom-ref"
        }
    }
    public struct Property: Codable, Sendable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }
}
