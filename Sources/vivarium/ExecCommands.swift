import ArgumentParser
import Foundation
import VivariumClient
import VivariumCore
import VivariumOS

struct Exec: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a sandbox and exit with its status.",
        discussion: """
            Output is streamed as the command writes it. When vivarium's own stdin is not a terminal it is \
            passed to the command (`tar c . | vivarium exec box -- tar x -C /work`); -n turns that off, -i \
            forces it. -t gives the command a terminal (window size and resizes follow yours; keys such as \
            ^C go to the command): `vivarium exec -it box -- sh` is an interactive shell. Ending vivarium \
            (^C without -t) kills the command. There is no timeout unless --timeout is given; when it fires \
            every process the command started is killed and vivarium exits 124. --json (and a daemon reached \
            over HTTPS, for now) collects the output instead, with a 60 s default timeout. -d starts the \
            command detached: it runs on after vivarium (and the daemon) go away, its output kept on the host \
            (`vivarium logs`), with a stdin fed by `vivarium input` when -i is given too.
            """)
    @OptionGroup var global: GlobalOptions
    @OptionGroup var command: CommandOptions
    @Option(name: .customLong("env"), help: "Environment variable K=V (repeatable).") var env: [String] = []
    @Flag(name: .shortAndLong, help: "Pass stdin to the command even when it is a terminal.") var interactive = false
    @Flag(name: .customShort("t"), help: "Give the command a terminal.") var tty = false
    @Flag(name: .customShort("n"), help: "Never pass stdin to the command.") var noStdin = false
    @Flag(help: "Print the JSON result instead of the output (collected, not streamed).") var json = false
    @Flag(
        name: .customShort("d"),
        help: "Start the command detached and print its process id (see `vivarium ps`, `logs`, `kill`).")
    var detach = false
    @Option(help: "With -d: the output bytes kept (default 8M).") var keep: String?
    @Argument(help: "Sandbox name.") var name: String
    @Argument(parsing: .postTerminator, help: "The command and its arguments, after --.") var argv: [String]

    func run(_ client: APIClient) async throws {
        let request = try command.request(argv, env: env)
        if detach {
            guard !tty else { throw VivariumError(.invalidArgument, "-d and -t do not go together") }
            let p = try client.call(
                Endpoints.processStart,
                StartProcessRequest(
                    argv: request.argv, env: request.env, workdir: request.workdir, user: request.user,
                    stdin: interactive ? true : nil, maxOutputBytes: try keep.map { Int(try Quantity.parseBytes($0)) }),
                name: name)
            return json ? try printJSON(p) : print(p.id)
        }
        guard !json, client.transport == nil else {
            guard !tty, !interactive else {
                throw VivariumError(
                    .invalidArgument, "-i and -t need the daemon's socket (or loopback TCP), not --json")
            }
            let result = try client.call(Endpoints.sandboxExec, request, name: name)
            if json { return try printJSON(result) }
            return try finish(result)
        }
        let stdin = !noStdin && (interactive || isatty(0) != 1)
        let size = tty ? windowSize(1) ?? windowSize(0) : nil
        let stream = StreamExecRequest(
            argv: request.argv, env: request.env, workdir: request.workdir, user: request.user,
            timeoutSeconds: command.timeout, tty: tty ? true : nil, rows: size?.rows, columns: size?.columns,
            stdin: stdin ? true : nil)
        let raw = tty && stdin ? RawTerminal(0) : nil
        defer { raw?.restore() }
        var resizes: (any DispatchSourceSignal)?
        let end = try StreamedExec.run(
            client.http, name: name, stream, input: stdin ? 0 : nil,
            opened: { ws in
                guard tty else { return }
                signal(SIGWINCH, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: SIGWINCH)
                source.setEventHandler {
                    guard let s = windowSize(1) ?? windowSize(0) else { return }
                    let resize = StreamControl(.resize, rows: s.rows, columns: s.columns)
                    if let text = try? WireCoding.encoder().encode(resize) {
                        try? ws.send(.text(String(decoding: text, as: UTF8.self)))
                    }
                }
                source.resume()
                resizes = source
            },
            output: { channel, bytes in try writeAll(channel == .stderr ? 2 : 1, bytes) })
        resizes?.cancel()
        raw?.restore()
        if end.timedOut == true {
            FileHandle.standardError.write(Data("vivarium: timed out; every process of the command was killed\n".utf8))
            throw ExitCode(124)
        }
        if let code = end.exitCode, code != 0 { throw ExitCode(code) }
    }
}

/// Writes all of `bytes` to `fd`.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else {
            throw VivariumError(.unavailable, "cannot write the output: \(String(cString: strerror(errno)))")
        }
        off += n
    }
}

/// `vivarium ps NAME`: a sandbox's detached processes.
struct ProcessList: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "ps", abstract: "List a sandbox's detached processes (vivarium exec -d).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run(_ client: APIClient) async throws {
        let items = try client.call(Endpoints.processList, name: name).items
        if json { return try printJSON(items) }
        printTable(
            ["ID", "STATE", "EXIT", "STARTED", "COMMAND"],
            items.map {
                [
                    $0.id, $0.state, $0.exitCode.map(String.init) ?? "-",
                    ISO8601DateFormatter().string(from: $0.startedAt),
                    $0.argv.joined(separator: " "),
                ]
            })
    }
}

/// `vivarium logs NAME ID`: a detached process's kept output, or (-f) its output as it comes.
struct ProcessLogsCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs", abstract: "Print a detached process's output (kept on the host, bounded).",
        discussion: """
            Without -f: what is kept, stdout then stderr, and vivarium exits 0. With -f: what is kept in the \
            order it was written, then new output as it comes, until the process ends; vivarium then exits \
            with its status. Output dropped to stay within the process's bound is reported on stderr.
            """)
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Argument(help: "Process id (vivarium ps).") var id: String
    @Flag(name: .shortAndLong, help: "Follow the output until the process ends.") var follow = false

    func run(_ client: APIClient) async throws {
        guard follow else {
            let logs = try client.call(Endpoints.processLogs, name: name, query: [("id", id)])
            if logs.droppedBytes > 0 {
                FileHandle.standardError.write(Data("vivarium: \(logs.droppedBytes) earlier bytes were dropped\n".utf8))
            }
            try writeAll(1, Array(logs.stdout))
            try writeAll(2, Array(logs.stderr))
            return
        }
        guard client.transport == nil else {
            throw VivariumError(.invalidArgument, "-f needs the daemon's socket (or loopback TCP)")
        }
        let ws = try BlockingWebSocket.connect(
            client.http, path: Endpoints.processFollow.path(["name": name], query: [("id", id)]))
        defer { ws.close() }
        let end = try StreamedExec.receive(ws) { channel, bytes in try writeAll(channel == .stderr ? 2 : 1, bytes) }
        if let code = end.exitCode, code != 0 { throw ExitCode(code) }
    }
}

/// `vivarium kill NAME ID`: a signal to a detached process.
struct ProcessKill: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "kill", abstract: "Send a signal to a detached process (TERM by default).")
    @OptionGroup var global: GlobalOptions
    @Option(name: .shortAndLong, help: "The signal: TERM, KILL, INT, HUP, … or a number.") var signal = "TERM"
    @Argument(help: "Sandbox name.") var name: String
    @Argument(help: "Process id (vivarium ps).") var id: String

    func run(_ client: APIClient) async throws {
        let p = try client.call(Endpoints.processSignal, SignalProcessRequest(id: id, signal: signal), name: name)
        print("\(p.id) \(p.state)\(p.exitCode.map { " (exit \($0))" } ?? "")")
    }
}

/// `vivarium input NAME ID`: vivarium's stdin to a detached process's stdin.
struct ProcessInput: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "input", abstract: "Feed vivarium's stdin to a detached process started with -d -i.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox name.") var name: String
    @Argument(help: "Process id (vivarium ps).") var id: String

    func run(_ client: APIClient) async throws {
        var buffer = [UInt8](repeating: 0, count: 32 << 10)
        while true {
            let n = read(0, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            let chunk = Data(buffer[0..<n])
            // A process slower than its input is waited for, a second at a time.
            while true {
                do {
                    _ = try client.call(Endpoints.processInput, ProcessInputRequest(id: id, data: chunk), name: name)
                    break
                } catch let e as VivariumError where e.code == .rateLimited {
                    try await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
}
