import Foundation
import Testing
import VivariumCore
import VivariumRuntime

@Suite struct RuntimeSpecTests {
    let spec = HardenedSpec(
        hostname: "box", rootfs: "/r", readOnly: true, hostUIDBase: 1 << 28, limits: .default,
        cgroupsPath: "/vivarium-x/id", initBinary: "/usr/libexec/vivarium-init", swapAccounting: true
    ).build()

    @Test func dropsDangerousCapabilities() {
        let caps = Set(spec.process.capabilities.bounding)
        for c in [
            "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_DAC_READ_SEARCH", "CAP_NET_RAW",
            "CAP_MKNOD",
        ] {
            #expect(!caps.contains(c))
        }
        #expect(spec.process.noNewPrivileges)
        #expect(spec.process.capabilities.ambient.isEmpty && spec.process.capabilities.inheritable.isEmpty)
    }

    @Test func isolatesEveryNamespaceAndMapsIDs() {
        #expect(Set(spec.linux.namespaces.map(\.type)) == ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"])
        #expect(spec.linux.uidMappings.count == 1)
        #expect(spec.linux.uidMappings[0].hostID == 1 << 28 && spec.linux.uidMappings[0].size == 65536)
        #expect(spec.linux.gidMappings[0].hostID == 1 << 28)
        #expect(spec.root.readonly)
    }

    @Test func seccompRefusesEscapesAndAnswersENOSYSForClone3() {
        let rules = spec.linux.seccomp.syscalls
        let denied = Set(rules.filter { $0.errnoRet == 1 && $0.args == nil }.flatMap(\.names))
        for s in [
            "mount", "umount2", "unshare", "setns", "keyctl", "bpf", "perf_event_open", "ptrace", "kexec_load",
            "init_module", "finit_module", "open_by_handle_at", "userfaultfd", "fsopen", "move_mount", "open_tree",
        ] {
            #expect(denied.contains(s), "\(s) must be refused")
        }
        #expect(rules.contains { $0.names == ["clone3"] && $0.errnoRet == 38 })
        let cloneFlags = rules.filter { $0.names == ["clone"] }.compactMap { $0.args?.first?.value }
        #expect(Set(cloneFlags).contains(0x1000_0000), "clone with CLONE_NEWUSER refused")
        #expect(cloneFlags.count == 7)
    }

    @Test func masksKernelInterfacesAndLimitsResources() {
        #expect(spec.linux.maskedPaths.contains("/proc/keys") && spec.linux.maskedPaths.contains("/proc/timer_list"))
        #expect(
            spec.linux.readonlyPaths.contains("/proc/sys") && spec.linux.readonlyPaths.contains("/proc/sysrq-trigger"))
        #expect(spec.linux.resources.memory.limit == 512 << 20)
        #expect(spec.linux.resources.memory.swap == 512 << 20)
        #expect(spec.linux.resources.cpu.quota == 100_000 && spec.linux.resources.cpu.period == 100_000)
        #expect(spec.linux.resources.pids.limit == 512)
        #expect(spec.mounts.contains { $0.destination == "/tmp" && $0.type == "tmpfs" })
        let initMount = spec.mounts.first { $0.destination == HardenedSpec.initPath }
        #expect(initMount?.options.contains("ro") == true)
        #expect(spec.mounts.first { $0.destination == "/sys" }?.options.contains("ro") == true)
    }

    @Test func execProcessesGetTheInitsHardening() {
        let root = HardenedSpec.process(args: ["/bin/true"], env: [:], cwd: "/", uid: 0, gid: 0)
        let user = HardenedSpec.process(args: ["/bin/true"], env: ["PATH": "/x"], cwd: "/", uid: 1000, gid: 1000)
        #expect(root.noNewPrivileges && user.noNewPrivileges)
        #expect(root.capabilities.effective == spec.process.capabilities.effective)
        #expect(user.capabilities.effective.isEmpty && user.capabilities.permitted.isEmpty)
        #expect(user.env.filter { $0.hasPrefix("PATH=") } == ["PATH=/x"])
    }
}
