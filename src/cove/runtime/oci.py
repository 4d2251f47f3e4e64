"""OCI config.json for a sandbox: crun's default spec, hardened, with the zygote as PID 1."""

from __future__ import annotations

import json
from pathlib import Path

from cove.runtime.base import Limits

ZYGOTE_DIR = "/.cove"  # data_dir/bin bind-mounted read-only here; holds the zygote binary
CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
DEFAULT_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=xterm",
]

# isolation.md §2: ALLOW by default, EPERM for what a sandbox never needs and what widens the
# kernel attack surface (mounting, new namespaces, tracing, keyrings, bpf, modules, clocks, ...).
DENY = [
    "mount",
    "umount2",
    "ptrace",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "delete_module",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "pivot_root",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "settimeofday",
    "clock_settime",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
]
CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38


def seccomp() -> dict:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": DENY, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            # unshare is denied above, but clone(CLONE_NEWUSER) would still make a user namespace.
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NEWUSER,
                        "valueTwo": CLONE_NEWUSER,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            # clone3 passes its flags in memory, which seccomp cannot inspect: answer ENOSYS so
            # libc falls back to clone(2), which the rule above checks (Docker does the same).
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def resources(limits: Limits, memsw: bool) -> dict:
    mem = limits.memory_mb * 2**20
    memory: dict = {"limit": mem}
    if memsw:
        memory["swap"] = mem  # memsw = memory + swap: no swapping beyond the memory limit
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": memory,
        "pids": {"limit": limits.pids},
        "cpu": {"shares": limits.cpu_weight},
    }


def build_config(
    sandbox_id: str,
    rootfs: Path,
    zygote_dir: Path,
    limits: Limits,
    hostname: str,
    memsw: bool,
    cgroup_parent: str,
) -> dict:
    nosuid = ["nosuid", "noexec", "nodev"]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [f"{ZYGOTE_DIR}/zygote"],
            "env": DEFAULT_ENV,
            "cwd": "/",
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")}
            | {"inheritable": [], "ambient": []},
            # The host's hard NOFILE is 20000 and root lacks CAP_SYS_RESOURCE: stay below it.
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
            "oomScoreAdj": 0,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*nosuid, "mode=1777", "size=65536k"],
            },
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
            {
                "destination": ZYGOTE_DIR,
                "type": "bind",
                "source": str(zygote_dir),
                "options": ["rbind", "ro", "nosuid", "nodev"],
            },
        ],
        "linux": {
            "cgroupsPath": f"/{cgroup_parent}/{sandbox_id}",
            "resources": resources(limits, memsw),
            # Fresh pid/ipc/uts/mount/net namespaces; the net ns only has lo. No user namespace:
            # that needs a uid-shifted image (see isolation.md).
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "seccomp": seccomp(),
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def write_config(bundle: Path, config: dict) -> None:
    (bundle / "config.json").write_text(json.dumps(config))
