import ArgumentParser
import Foundation
import Glibc
import VivariumClient
import VivariumCore

/// `NAME:PATH`: a path inside a sandbox; anything else is a path on this machine.
struct BoxPath {
    var sandbox: String
    var path: String

    static func parse(_ s: String) -> BoxPath? {
        guard let colon = s.firstIndex(of: ":"), colon != s.startIndex, !s.hasPrefix("/"), !s.hasPrefix(".") else {
            return nil
        }
        let name = String(s[..<colon])
        guard (try? ResourceName.parse(name, what: "sandbox name")) != nil else { return nil }
        let path = String(s[s.index(after: colon)...])
        return BoxPath(sandbox: name, path: path.isEmpty ? "/" : path)
    }
}

struct CopyCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "cp", abstract: "Copy a file into a sandbox or out of one.",
        discussion: """
            One side is NAME:PATH, a path inside the running sandbox NAME; the other a path on this machine. \
            Inside the box every path resolves in its own root as it sees it (its /tmp and /run included): \
            no symlink or .. reaches outside it. An uploaded file is written whole or not at all, owned by \
            the box's root, with this file's permission bits; a download keeps the box file's bits. A \
            destination that is a directory (or ends in /) receives the source's name. Regular files only.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The source: a local path or NAME:PATH.") var source: String
    @Argument(help: "The destination: NAME:PATH or a local path.") var destination: String

    func run(_ client: APIClient) async throws {
        switch (BoxPath.parse(source), BoxPath.parse(destination)) {
        case (nil, let to?): try upload(client, to)
        case (let from?, nil): try download(client, from)
        default:
            throw VivariumError(.invalidArgument, "exactly one of SOURCE and DESTINATION is NAME:PATH")
        }
    }

    static func basename(_ path: String) -> String {
        String(path.split(separator: "/").last ?? Substring(path))
    }

    func upload(_ client: APIClient, _ to: BoxPath) throws {
        var st = stat()
        guard stat(source, &st) == 0 else { throw VivariumError(.invalidArgument, "cannot read \(source)") }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw VivariumError(.invalidArgument, "\(source) is not a regular file (cp copies files)")
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: source), options: .alwaysMapped) } catch {
            throw VivariumError(.invalidArgument, "cannot read \(source)")
        }
        var target = to.path
        let existing = try? client.call(Endpoints.fileStat, name: to.sandbox, query: [("path", target)])
        if target.hasSuffix("/") || existing?.type == "directory" {
            target = (target.hasSuffix("/") ? target : target + "/") + Self.basename(source)
        }
        let info = try client.upload(
            Endpoints.fileWrite, data, name: to.sandbox,
            query: [("path", target), ("mode", String(st.st_mode & 0o777, radix: 8))])
        FileHandle.standardError.write(
            Data("\(to.sandbox):\(info.path) \(Quantity.formatBytes(info.sizeBytes))\n".utf8))
    }

    func download(_ client: APIClient, _ from: BoxPath) throws {
        var target = destination
        var st = stat()
        if destination.hasSuffix("/") || (stat(destination, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR) {
            target = (destination.hasSuffix("/") ? destination : destination + "/") + Self.basename(from.path)
        }
        let r = try client.download(
            Endpoints.fileRead, name: from.sandbox, query: [("path", from.path)], limit: 8 << 30)
        let mode = r.headers["x-file-mode"].flatMap { mode_t($0, radix: 8) } ?? 0o644
        // Into a temporary name beside the target, then renamed: a failed copy leaves nothing.
        let temporary = target + ".vivarium-\(randomHex(bytes: 4))"
        guard FileManager.default.createFile(atPath: temporary, contents: r.body, attributes: [.posixPermissions: mode])
        else { throw VivariumError(.invalidArgument, "cannot write \(target)") }
        guard rename(temporary, target) == 0 else {
            unlink(temporary)
            throw VivariumError(.invalidArgument, "cannot write \(target): \(String(cString: strerror(errno)))")
        }
        FileHandle.standardError.write(Data("\(target) \(Quantity.formatBytes(Int64(r.body.count)))\n".utf8))
    }
}

struct FilesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "files", abstract: "List, inspect and change the files inside a running sandbox.",
        discussion: """
            Paths resolve inside the box's own root as it sees it: no symlink or .. reaches outside it. \
            Reading needs the files:read scope, changing files:write.
            """,
        subcommands: [Ls.self, Stat.self, Mkdir.self, Mv.self, Rm.self])

    static func line(_ f: FileInfo) -> String {
        let target = f.target.map { " -> \($0)" } ?? ""
        return "\(f.type.padding(toLength: 9, withPad: " ", startingAt: 0)) \(f.mode) \(f.uid):\(f.gid) "
            + "\(String(f.sizeBytes).padding(toLength: 10, withPad: " ", startingAt: 0)) \(f.path)\(target)"
    }

    struct Ls: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "List a directory.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sandbox.") var name: String
        @Argument(help: "The directory.") var path: String = "/"
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let page = try client.call(Endpoints.fileList, name: name, query: [("path", path)])
            if json { return try printJSON(page.items) }
            for f in page.items { print(FilesCommand.line(f)) }
        }
    }

    struct Stat: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "Show a path's type, size, mode and owner.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sandbox.") var name: String
        @Argument(help: "The path.") var path: String
        @Flag(help: "Print JSON.") var json = false
        func run(_ client: APIClient) async throws {
            let f = try client.call(Endpoints.fileStat, name: name, query: [("path", path)])
            if json { return try printJSON(f) }
            print(FilesCommand.line(f))
        }
    }

    struct Mkdir: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "Make a directory, owned by the box's root.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sandbox.") var name: String
        @Argument(help: "The directory.") var path: String
        @Flag(name: .shortAndLong, help: "Make missing parents too; an existing directory is no error.")
        var parents = false
        @Option(help: "Permission bits, octal.") var mode = "0755"
        func run(_ client: APIClient) async throws {
            _ = try client.call(
                Endpoints.fileMkdir, MakeDirectoryRequest(path: path, parents: parents, mode: mode), name: name)
        }
    }

    struct Mv: ClientCommand {
        static let configuration = CommandConfiguration(abstract: "Rename a path inside the box.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sandbox.") var name: String
        @Argument(help: "The path.") var from: String
        @Argument(help: "The new path.") var to: String
        func run(_ client: APIClient) async throws {
            _ = try client.call(Endpoints.fileMove, MoveRequest(from: from, to: to), name: name)
        }
    }

    struct Rm: ClientCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a file, a symlink (never what it points to) or an empty directory.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The sandbox.") var name: String
        @Argument(help: "The path.") var path: String
        @Flag(name: .shortAndLong, help: "Remove a directory and everything below it.") var recursive = false
        func run(_ client: APIClient) async throws {
            _ = try client.call(
                Endpoints.fileDelete, name: name, query: [("path", path), ("recursive", recursive ? "true" : nil)])
        }
    }
}
