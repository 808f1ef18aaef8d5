"""Several hosts on one machine for the fleet tests: a network namespace per host on a bridge the test makes
(10.77.x.0/24, nothing routed anywhere else), a UTS namespace with the host's name, and a mount namespace in which
the fleet's folder is an empty tmpfs but for the host's own 0700 home: a host reads no other host's files and
nothing leans on a shared disk. (Not separate uids: the interpreter lives under /root, which only root may
enter.) Made and removed by the test; needs root (CI is root)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

UID_BASE = 41000


@dataclass
class Host:
    name: str
    ip: str
    uid: int
    ns: str
    home: Path
    stash: Path
    procs: list[tuple[str, subprocess.Popen, object]] = field(default_factory=list)

    def argv(self, argv: list[str], *, isolated: bool = True) -> list[str]:
        """`argv` run on this host: its network and UTS namespaces (the host name is what processes log and put
        in leases), and unless `isolated` is False a mount namespace that shows it its own home only."""
        argv = [str(a) for a in argv]
        if not isolated:
            return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--", "sh", "-c",
                    'hostname "$0" && exec "$@"', self.name, *argv]
        script = ('set -e; hostname "$0"; mount --make-rprivate /; mount --bind "$1" "$2"; '
                  'mount -t tmpfs -o mode=0711 fleet "$3"; mkdir -p "$1"; mount --move "$2" "$1"; shift 3; '
                  'exec "$@"')
        return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "--mount", "--", "sh", "-c", script, self.name,
                str(self.home), str(self.stash), str(self.home.parent), *argv]

    def start(self, name: str, argv: list[str], env: dict[str, str], *, isolated: bool = True) -> subprocess.Popen:
        log = open(self.home.parent / "logs" / f"{self.name}-{name}.log", "ab")  # noqa: SIM115 (closed on stop)
        proc = subprocess.Popen(self.argv(argv, isolated=isolated), env={**env, "HOME": str(self.home)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def kill_all(self) -> float:
        """SIGKILL every process of this host (each started in its own process group, children included): the
        whole host dies at once. Returns time.time()."""
        at = time.time()
        for _, proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return at

    def stop(self, name: str | None = None, timeout: float = 15) -> None:
        for entry in [p for p in self.procs if name is None or p[0] == name]:
            _, proc, log = entry
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            log.close()
            self.procs.remove(entry)

    def log(self, name: str) -> str:
        return (self.home.parent / "logs" / f"{self.name}-{name}.log").read_text(errors="replace")


class Fleet:
    """`Fleet(["core", "render-a", ...])`: the bridge, a namespace per host, homes; `.remove()` undoes all."""

    def __init__(self, names: list[str]) -> None:
        tag = secrets.token_hex(2)
        self.bridge = f"brst{tag}"
        subnet = 10 + int(tag, 16) % 200
        self.prefix = f"10.77.{subnet}"
        self.root = Path(tempfile.mkdtemp(prefix="studio-fleet-"))
        self.stash = Path(tempfile.mkdtemp(prefix="studio-fleet-stash-"))
        os.chmod(self.root, 0o711)
        (self.root / "logs").mkdir()
        self.hosts: dict[str, Host] = {}
        self._sh(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._sh(["ip", "link", "set", self.bridge, "up"])
        self._sh(["ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge])  # the test's own door in
        for i, name in enumerate(names, start=1):
            ns, veth = f"st{tag}-{name}", f"v{tag}{i}"
            self._sh(["ip", "netns", "add", ns])
            self._sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            self._sh(["ip", "link", "set", veth, "master", self.bridge, "up"])
            self._sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            self._sh(["ip", "-n", ns, "addr", "add", f"{self.prefix}.{i}/24", "dev", "eth0"])
            self._sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
            home = self.root / name
            home.mkdir(mode=0o700)
            (self.stash / name).mkdir()
            self.hosts[name] = Host(name, f"{self.prefix}.{i}", UID_BASE + i, ns, home, self.stash / name)

    @staticmethod
    def _sh(argv: list[str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def give(self, host: str, src: Path, dest: str) -> Path:
        """Copy `src` (a file or folder) into the host's home as `dest`, 0700/0600."""
        target = self.hosts[host].home / dest
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy2(src, target)
        for path in [target, *(target.rglob("*") if target.is_dir() else [])]:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        return target

    def remove(self) -> None:
        for host in self.hosts.values():
            host.stop()
            host.kill_all()
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.stash, ignore_errors=True)


def wait_tcp(ip: str, port: int, timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((ip, port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
