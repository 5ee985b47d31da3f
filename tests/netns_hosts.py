"""SSH hosts in network namespaces: real SSH targets for the Ansible tests and the push benchmark.

`NetnsHosts(count, workdir)` creates, for this session only, `count` network namespaces, each joined to the root
namespace by a veth pair on a private /30 (10.211.<block>.<4i>/30, a block no route or address on this machine
uses), with loopback up and an `sshd` listening on the namespace's address. The filesystem is shared: only the
network is separate, so every host has its own 127.0.0.1 (agents may all serve on the same port) and a host can be
made unreachable by taking its link down (`cut`/`restore`).

One host key and one client key per session (ssh-keygen, under `workdir`); root logs in with the client key only.
Namespace and interface names carry this process's pid, so parallel sessions (and pytest-xdist's workers, each a
process of its own) never clash. Two processes must not take the same /24 either: choosing a block that no address
uses and putting the first address on it happen under one lock (`fcntl.flock` on a file in the system's temporary
directory), so a second process choosing at the same time sees the first one's addresses.

Teardown (`close`, also on `__exit__`) always runs to the end: it kills, by PID, every process still inside each
namespace (`ip netns pids NS`: only what our tests started there - sshd, its sessions, the agents they spawned),
then deletes the namespaces and veths. It never looks processes up by name.

When namespaces cannot be made (not root, no `ip`, `ip netns add` refused, no sshd/ssh-keygen), `NetnsHosts`
raises `NetnsUnavailable` with the reason; a test turns it into `pytest.skip(reason)`, never a silent pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"
SSH_ARGS = "-o ControlMaster=no -o ControlPersist=no"
SSH_COMMON_ARGS = (
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=no -o ControlPersist=no "
    "-o LogLevel=ERROR -o ConnectTimeout=5"
)
SUPERNET = ipaddress.ip_network("10.211.0.0/16")
MAX_HOSTS = 60  # /30 per host inside one /24 block
_INSTANCES = itertools.cycle("abcdefghijklmnopqrstuvwxyz")


class NetnsUnavailable(RuntimeError):
    """Network namespaces or sshd cannot be used here; the message is the reason to skip with."""


@dataclass(frozen=True)
class NetnsHost:
    name: str  # the inventory hostname (and device id)
    namespace: str
    veth_root: str  # in the root namespace
    veth_peer: str  # inside the namespace
    address: str  # the namespace's side: sshd listens here
    gateway: str  # the root side of the pair
    sshd_config: Path


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why netns hosts cannot be created here, or None. Probes by creating and deleting a namespace and a veth pair."""
    if os.geteuid() != 0:
        return "netns SSH hosts need root (ip netns add)"
    for tool in ("ip", "ssh", "ssh-keygen", "scp"):
        if shutil.which(tool) is None:
            return f"netns SSH hosts need `{tool}` on PATH"
    if not Path(SSHD).exists():
        return f"netns SSH hosts need {SSHD} (apt-get install openssh-server)"
    probe = f"edgeprobe-{os.getpid()}"
    added = _run(["ip", "netns", "add", probe], check=False)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip() or added.returncode}"
    _run(["ip", "netns", "del", probe], check=False)
    veth = _run(["ip", "link", "add", f"ep{os.getpid()}", "type", "veth", "peer", "name", f"eq{os.getpid()}"], False)
    if veth.returncode != 0:
        return f"`ip link add ... type veth` failed: {veth.stderr.strip() or veth.returncode}"
    _run(["ip", "link", "del", f"ep{os.getpid()}"], check=False)
    return None


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for argv in (["ip", "-4", "-j", "addr", "show"], ["ip", "-4", "-j", "route", "show", "table", "all"]):
        for entry in json.loads(_run(argv).stdout or "[]"):
            for info in entry.get("addr_info", []):
                used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
            dst = entry.get("dst")
            if dst and dst != "default":
                with contextlib.suppress(ValueError):
                    used.append(ipaddress.ip_network(dst, strict=False))
    return used


@contextlib.contextmanager
def _choosing_addresses() -> Iterator[None]:
    """Hold the machine-wide lock under which a process picks its /24 and puts its addresses on it: without it two
    processes (xdist workers, or a test session and `benchmarks/ansible_push.py`) could both find the same block
    free before either has used it. The kernel drops the lock if the holder dies."""
    path = Path(tempfile.gettempdir()) / f"edge-netns-hosts-{os.geteuid()}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_block() -> ipaddress.IPv4Network:
    """A /24 inside 10.211.0.0/16 that no address or route here overlaps; starts at pid % 256 to spread sessions."""
    used = [net for net in _used_networks() if net.prefixlen > 0]
    blocks = list(SUPERNET.subnets(new_prefix=24))
    start = os.getpid() % len(blocks)
    for block in blocks[start:] + blocks[:start]:
        if not any(block.overlaps(net) for net in used):
            return block
    raise NetnsUnavailable(f"no free /24 inside {SUPERNET} for netns hosts")


def _ip_port(field: str) -> tuple[str, int]:
    """`0200D30A:0016` (a /proc/net/tcp address: host-order hex) -> ("10.211.0.2", 22); IPv6 ones give ("", port)."""
    address, _, port = field.partition(":")
    if len(address) != 8:
        return "", int(port, 16)
    return str(ipaddress.IPv4Address(int(address, 16).to_bytes(4, "little"))), int(port, 16)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class NetnsHosts:
    """`count` SSH hosts, each in its own network namespace; a context manager. See the module docstring."""

    def __init__(self, count: int, workdir: Path, prefix: str = "edge", *, loopback_only: bool = False) -> None:
        """`loopback_only`: each sshd listens on its namespace's own 127.0.0.1 only, which nothing outside the
        namespace can reach (a device whose SSH no address leads to: the tunnel tests)."""
        self.loopback_only = loopback_only
        if not 1 <= count <= MAX_HOSTS:
            raise ValueError(f"count must be within 1..{MAX_HOSTS}")
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts: list[NetnsHost] = []
        self._created_ns: list[str] = []
        self._created_veths: list[str] = []
        self._sshd: dict[str, subprocess.Popen[bytes]] = {}
        tag = f"{os.getpid()}{next(_INSTANCES)}"  # unique among sessions (pid) and within one (a letter)
        try:
            self.host_key = self._keygen("host_key")
            self.client_key = self._keygen("client_key")
            self.authorized_keys = self.workdir / "authorized_keys"
            self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
            self.authorized_keys.chmod(0o600)
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
            with _choosing_addresses():
                block = _free_block()
                for i in range(count):
                    subnet = list(block.subnets(new_prefix=30))[i]
                    gateway, address = (str(a) for a in list(subnet.hosts())[:2])
                    host = NetnsHost(
                        name=f"{prefix}-{i + 1}",
                        namespace=f"edgetest-{tag}-{i + 1}",
                        veth_root=f"et{tag}h{i + 1}",  # interface names: 15 characters at most
                        veth_peer=f"et{tag}p{i + 1}",
                        address=address,
                        gateway=gateway,
                        sshd_config=self.workdir / f"sshd-{i + 1}.conf",
                    )
                    self._create(host, subnet.prefixlen)
                    self.hosts.append(host)
            for host in self.hosts:
                self._start_sshd(host)
            for host in self.hosts:
                self._wait_ssh(host)
        except BaseException:
            self.close()
            raise

    # -- setup -----------------------------------------------------------------------------------------------------

    def _keygen(self, name: str) -> Path:
        path = self.workdir / name
        for old in (path, path.with_suffix(".pub")):
            old.unlink(missing_ok=True)  # a reused workdir: ssh-keygen would ask before overwriting
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"netns-{name}", "-f", str(path)])
        return path

    def _create(self, host: NetnsHost, prefixlen: int) -> None:
        ns = ["ip", "netns", "exec", host.namespace]
        _run(["ip", "netns", "add", host.namespace])
        self._created_ns.append(host.namespace)
        _run(["ip", "link", "add", host.veth_root, "type", "veth", "peer", "name", host.veth_peer])
        self._created_veths.append(host.veth_root)
        _run(["ip", "link", "set", host.veth_peer, "netns", host.namespace])
        _run(["ip", "addr", "add", f"{host.gateway}/{prefixlen}", "dev", host.veth_root])
        _run(["ip", "link", "set", host.veth_root, "up"])
        _run([*ns, "ip", "link", "set", "lo", "up"])
        _run([*ns, "ip", "addr", "add", f"{host.address}/{prefixlen}", "dev", host.veth_peer])
        _run([*ns, "ip", "link", "set", host.veth_peer, "up"])
        _run([*ns, "ip", "route", "add", "default", "via", host.gateway])

    def _start_sshd(self, host: NetnsHost) -> None:
        host.sshd_config.write_text(
            f"ListenAddress {'127.0.0.1' if self.loopback_only else host.address}\n"
            "Port 22\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / (host.name + '.sshd.pid')}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"  # keys live under /tmp
            "MaxStartups 100:30:200\n"  # ansible with many forks opens many connections at once
            "MaxSessions 100\n"
            "UseDNS no\n"
            "LogLevel ERROR\n"
            "Subsystem sftp internal-sftp\n"
        )
        log = (self.workdir / f"{host.name}.sshd.log").open("ab")
        with log:
            self._sshd[host.name] = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, SSHD, "-D", "-e", "-f", str(host.sshd_config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def _wait_ssh(self, host: NetnsHost, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            process = self._sshd[host.name]
            if process.poll() is not None:
                log = (self.workdir / f"{host.name}.sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd for {host.name} exited with {process.returncode}: {log[-2000:]}")
            if self._ssh_answers(host):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd for {host.name} on {host.address} did not accept within {timeout}s")
            time.sleep(0.05)

    def _ssh_answers(self, host: NetnsHost) -> bool:
        if not self.loopback_only:
            return self.ssh(host, "true", timeout=5).returncode == 0
        argv = [*self.ssh_argv(host)[:-1], "root@127.0.0.1", "true"]  # from inside: its own loopback
        return self.exec(host, argv, timeout=10).returncode == 0

    # -- use -------------------------------------------------------------------------------------------------------

    def __enter__(self) -> NetnsHosts:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def host(self, name: str) -> NetnsHost:
        return next(h for h in self.hosts if h.name == name)

    def ssh_argv(self, host: NetnsHost) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.client_key),
            "-o",
            "BatchMode=yes",
            *SSH_COMMON_ARGS.split(),
            f"root@{host.address}",
        ]

    def ssh(self, host: NetnsHost, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `command` on `host` over SSH (a real connection through its veth)."""
        try:
            return subprocess.run(
                [*self.ssh_argv(host), command], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout}s")

    def exec(self, host: NetnsHost, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside `host`'s namespace directly (no SSH): sees the host's own loopback."""
        return subprocess.run(
            ["ip", "netns", "exec", host.namespace, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def http_get(self, host: NetnsHost, url: str, timeout: float = 5) -> tuple[int, str]:
        """GET `url` from inside `host`'s namespace (e.g. its 127.0.0.1): (status, body); status 0 when no answer."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen(sys.argv[1], timeout={timeout})\n"
            "    print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); print(e.read().decode())\n"
            "except OSError as e:\n"
            "    print(0); print(e)\n"
        )
        result = self.exec(host, [sys.executable, "-c", script, url], timeout=timeout + 10)
        status, _, body = result.stdout.partition("\n")
        return (int(status) if status.strip().isdigit() else 0), body

    def cut(self, host: NetnsHost) -> None:
        """Take `host`'s link down: SSH to it times out (unreachable) until `restore`."""
        _run(["ip", "link", "set", host.veth_root, "down"])

    def restore(self, host: NetnsHost) -> None:
        _run(["ip", "link", "set", host.veth_root, "up"])
        _run(["ip", "netns", "exec", host.namespace, "ip", "link", "set", host.veth_peer, "up"])
        # the route through the peer goes when its link drops; put it back if it went
        self.exec(host, ["ip", "route", "replace", "default", "via", host.gateway])

    def sshd_pid(self, host: NetnsHost) -> int:
        """The sshd listening in `host`'s namespace (`ip netns exec` execs it: same PID)."""
        return self._sshd[host.name].pid

    def kill(self, pids: list[int]) -> None:
        """SIGKILL these PIDs (ones a test found, e.g. `ssh_clients()`), and wait until they are gone."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} survived SIGKILL")
            time.sleep(0.05)

    def pids(self, host: NetnsHost) -> list[int]:
        result = _run(["ip", "netns", "pids", host.namespace], check=False)
        return [int(p) for p in result.stdout.split() if p.isdigit()]

    def inventory(
        self,
        host_vars: dict[str, dict[str, Any]] | None = None,
        group_vars: dict[str, Any] | None = None,
        group: str = "edge",
        *,
        pipelining: bool = True,
        connect_timeout_s: int = 10,
    ) -> dict[str, Any]:
        """A YAML/JSON inventory of every host in `group`, connecting over real SSH without ControlPersist.

        Everything the connection needs is in the inventory (not only in `env()`), so that ansible-runner, which
        builds its own environment, connects the same way.
        """
        hosts = {}
        for host in self.hosts:
            hosts[host.name] = {
                "ansible_host": host.address,
                "ansible_user": "root",
                "ansible_connection": "ssh",
                "ansible_ssh_private_key_file": str(self.client_key),
                "ansible_ssh_common_args": SSH_COMMON_ARGS,
                # ssh takes the first value of an option: the default ssh_args (ControlMaster=auto,
                # ControlPersist=60s) come first, so override them too, else a master ssh outlives the run
                "ansible_ssh_args": SSH_ARGS,
                "ansible_python_interpreter": sys.executable,
                "ansible_pipelining": pipelining,
                "ansible_ssh_timeout": connect_timeout_s,
                **(host_vars or {}).get(host.name, {}),
            }
        return {"all": {"children": {group: {"hosts": hosts, "vars": dict(group_vars or {})}}}}

    def write_inventory(self, path: Path, **kwargs: Any) -> Path:
        path.write_text(json.dumps(self.inventory(**kwargs), indent=2))  # JSON is YAML: the yaml plugin reads it
        return path

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for ansible commands: the venv first on PATH, no ControlPersist, no host key prompts,
        pipelining on; `extra` overrides."""
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env |= {
            "ANSIBLE_SSH_ARGS": SSH_ARGS,
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "ansible-local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(self.workdir / "ansible-remote-tmp"),
        }
        return env | extra

    def ssh_clients(self) -> list[int]:
        """PIDs of processes here (the root namespace) holding a TCP connection to one of our hosts' sshd: ssh
        clients of ours still alive. Found by socket, not by name or arguments - a ControlPersist master renames
        itself (`ssh: /path/to/control [mux]`)."""
        addresses = {host.address for host in self.hosts}
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()
                    remote_ip, remote_port = _ip_port(fields[2])
                    if remote_ip in addresses and remote_port == 22:
                        inodes.add(fields[9])
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                for fd in (entry / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        link = os.readlink(fd)
                        if link.startswith("socket:[") and link[8:-1] in inodes:
                            found.append(int(entry.name))
                            break
        return found

    # -- teardown --------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill what runs in our namespaces (by PID), delete namespaces and veths. Safe to call twice."""
        for namespace in self._created_ns:
            self._kill_namespace(namespace)
        for process in self._sshd.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._sshd.clear()
        for veth in self._created_veths:
            _run(["ip", "link", "del", veth], check=False)  # usually gone with its peer's namespace already
        for namespace in self._created_ns:
            _run(["ip", "netns", "del", namespace], check=False)
        self._created_veths.clear()
        self._created_ns.clear()

    def _kill_namespace(self, namespace: str, timeout: float = 5.0) -> None:
        def pids() -> list[int]:
            result = _run(["ip", "netns", "pids", namespace], check=False)
            return [int(p) for p in result.stdout.split() if p.isdigit()]

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not pids():
                return
