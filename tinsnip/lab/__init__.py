"""The tinsnip lab: a NAS and two Docker hosts, real ones, in network namespaces on this machine.

`up()` starts three hosts on a bridge of their own, each a set of namespaces over a private overlay of
this machine's / (see `lab-host` and `lab-host-init` beside this file):

    nas       198.18.K.10  sshd as PID 1; nfs-utils' real exportfs; /volume1 and /var/lib/nfs on real
                           directories of the lab dir; login as `admin`, who needs sudo with a password
    docker1   198.18.K.20  systemd as PID 1; rootful Docker on a real /var/lib/docker; rootless Docker
    docker2   198.18.K.21  prerequisites; Compose v2; a mount.nfs that enforces the NAS's export table

K is the lab id, so several labs can run side by side. Everything a lab makes on the machine carries
the prefix `tlK` (network namespaces `tlK-nas`..., veths `tlKv-nas`..., cgroups `tlK-nas`...) or is
the bridge `tlbrK`; its files live in the lab dir. `down()` removes all of it.

The lab dir afterwards holds what tinsnip needs to use the lab: hosts.yaml (an inventory),
id_ed25519, known_hosts (the hosts' pinned keys, by address), tinsnip.env (the NAS sudo password,
mode 0600, read by tinsnip beside the inventory) and images/busybox.tar (`docker load`-able).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import TinsnipError

HERE = Path(__file__).resolve().parent
MAX_LAB_ID = 7  # each lab takes a /19 of 198.19.0.0/16 for its Docker networks: 8 labs fit
IMAGE = "lab/busybox:1"
IMAGE_ARCHIVE = "images/busybox.tar"
SUDO_PASSWORD_VAR = "TINSNIP_NAS_SUDO_PASSWORD"
ENV_FILE = "tinsnip.env"
DOCKER_UNITS = "containerd.service docker.socket docker.service"

# Commands the lab needs on this machine; each comes from a package scripts/install-deps.sh installs.
REQUIRED = {
    "ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "setpriv": "util-linux",
    "sshd": "openssh-server", "ssh-keygen": "openssh-client", "exportfs": "nfs-kernel-server",
    "dockerd": "docker.io", "rootlesskit": "rootlesskit", "slirp4netns": "slirp4netns",
    "newuidmap": "uidmap", "fuse-overlayfs": "fuse-overlayfs", "bindfs": "bindfs", "sudo": "sudo",
    "dockerd-rootless-setuptool.sh": "docker.io (symlinked by install-deps.sh)",
}
REQUIRED_FILES = {
    "/lib/systemd/systemd": "systemd",
    "/bin/busybox": "busybox-static",
    "/usr/libexec/docker/cli-plugins/docker-compose": "Compose v2 (install-deps.sh)",
    "/usr/share/dbus-1/services/org.freedesktop.systemd1.service": "dbus-user-session",
    "/usr/bin/python3": "python3",
}


class LabError(TinsnipError):
    """The lab failed to start or stop: exit 1."""

    code = 1


class LabUnavailable(TinsnipError):
    """This machine cannot host the lab (not root, not Linux, packages missing): exit 2."""

    code = 2


@dataclass(frozen=True)
class Host:
    name: str
    octet: int
    mode: str  # "sshd" or "systemd"
    user: str  # who tinsnip logs in as


HOSTS = (
    Host("nas", 10, "sshd", "admin"),
    Host("docker1", 20, "systemd", "root"),
    Host("docker2", 21, "systemd", "root"),
)
DOCKER_HOSTS = tuple(h for h in HOSTS if h.mode == "systemd")
MACHINES = {"station-prod": "docker1", "gazette-prod": "docker1", "gazette-test": "docker1",
            "lldap-prod": "docker2"}


# --- names and addresses -------------------------------------------------------------------------


@dataclass(frozen=True)
class Lab:
    """Names, addresses and paths of one lab instance."""

    dir: Path
    id: int

    @property
    def prefix(self) -> str:
        return f"tl{self.id}"

    @property
    def bridge(self) -> str:
        return f"tlbr{self.id}"

    @property
    def gateway(self) -> str:
        return f"198.18.{self.id}.1"

    def addr(self, name: str) -> str:
        return f"198.18.{self.id}.{_host(name).octet}"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def docker_block(self, name: str) -> int:
        """Third octet of the /20 of 198.19.0.0/16 this host's Docker engines draw from."""
        index = [h.name for h in DOCKER_HOSTS].index(name)
        return 32 * self.id + 16 * index

    def daemon_json(self, name: str) -> dict:
        """Rootful engine: docker0 on the block's first /24, its networks from the next /22."""
        b = self.docker_block(name)
        return {"bip": f"198.19.{b}.1/24",
                "default-address-pools": [{"base": f"198.19.{b + 4}.0/22", "size": 24}]}

    def rootless_pool(self, name: str) -> str:
        """Rootless engines (tinsnip's service users): the block's upper /21, apart from the rootful."""
        return f"198.19.{self.docker_block(name) + 8}.0/21"

    # paths
    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def disks(self) -> Path:
        return self.dir / "disks"

    @property
    def inventory(self) -> Path:
        return self.dir / "hosts.yaml"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def env_file(self) -> Path:
        return self.dir / ENV_FILE

    @property
    def image_archive(self) -> Path:
        return self.dir / IMAGE_ARCHIVE

    def host_dir(self, name: str) -> Path:
        return self.state / name


def _host(name: str) -> Host:
    for h in HOSTS:
        if h.name == name:
            return h
    raise KeyError(name)


def _lab(lab_dir: Path | str, lab_id: int) -> Lab:
    if not isinstance(lab_id, int) or not 0 <= lab_id <= MAX_LAB_ID:
        raise LabUnavailable(f"lab id must be a number from 0 to {MAX_LAB_ID}, not {lab_id!r}")
    return Lab(Path(lab_dir).absolute(), lab_id)


# --- preflight -------------------------------------------------------------------------------------


def check_machine() -> None:
    """Raise LabUnavailable, saying why and what to do, if this machine cannot host the lab."""
    if not sys.platform.startswith("linux"):
        raise LabUnavailable(f"the lab needs Linux (network namespaces); this is {sys.platform}")
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (it makes network namespaces, mounts and cgroups); "
                             "run it with sudo, or as root")
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if not shutil.which(cmd, path=path)}
                     | {pkg for f, pkg in REQUIRED_FILES.items() if not os.path.exists(f)})
    if missing:
        raise LabUnavailable("the lab needs packages that are not installed: " + ", ".join(missing)
                             + ". Run `sudo scripts/install-deps.sh` first (before any lab is up).")
    if not Path("/sys/fs/cgroup").is_dir() or not Path("/proc/self/ns/net").exists():
        raise LabUnavailable("this kernel lacks cgroups or network namespaces, which the lab needs")


# --- small helpers ---------------------------------------------------------------------------------


def _run(argv: list[str], *, input: bytes | str | None = None, check: bool = True, timeout: float = 120,
         stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    if isinstance(input, str):
        input = input.encode()
    # A session of its own: a Ctrl-C at the terminal reaches tinsnip, which decides (a teardown
    # must not lose its helpers half-way).
    r = subprocess.run(argv, input=input, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                       start_new_session=True)
    if check and r.returncode != 0:
        err = r.stderr.decode(errors="replace").strip()
        raise LabError(f"`{' '.join(argv[:6])}` failed (exit {r.returncode}): {err}")
    return r


@contextmanager
def _locked(lab: Lab):
    """One lab.up / lab.down at a time per lab dir."""
    lab.dir.mkdir(parents=True, exist_ok=True)
    with open(lab.dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextmanager
def _no_interrupt():
    """Hold Ctrl-C (and SIGTERM) until a teardown is finished: half a teardown leaves hosts behind."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def _netns_pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def init_pid(lab_id: int, name: str) -> int | None:
    """PID (on this machine) of a lab host's init: the process that is PID 1 in its own namespace."""
    ns = f"tl{lab_id}-{name}"
    if not Path("/run/netns", ns).exists():
        return None
    for pid in _netns_pids(ns):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("NSpid:") and line.split()[-1] == "1":
                    return pid
        except OSError:
            continue
    return None


def _owner_dir(lab_id: int) -> Path | None:
    """The lab dir whose hosts hold lab id `lab_id` now (read from their launcher's command line)."""
    for h in HOSTS:
        for pid in _netns_pids(f"tl{lab_id}-{h.name}"):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for i, a in enumerate(argv):
                if a.endswith(b"/lab-host-init") and i + 2 < len(argv):
                    return Path(argv[i + 2].decode()).parent.parent  # HOSTDIR = <lab dir>/state/<name>
    return None


def _ssh_banner(addr: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((addr, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def host_exec(lab_id: int, name: str, argv: list[str], *, input: bytes | str | None = None,
              check: bool = True, timeout: float = 120, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run argv as root inside a lab host, from this machine, without SSH (nsenter into its init)."""
    pid = init_pid(lab_id, name)
    if pid is None:
        raise LabError(f"lab host {name} (lab {lab_id}) is not running")
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
    return _run(["nsenter", "-t", str(pid), "-a", "-r", "-w", *env, *argv], input=input, check=check,
                timeout=timeout, stdout=stdout)


def _wait(what: str, probe, timeout: float, interval: float = 0.05) -> float:
    t0 = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- status ----------------------------------------------------------------------------------------


def status(lab_dir: Path | str, lab_id: int = 0) -> dict:
    """Per host: up or down, address, SSH reachable. `up` is true when all three hosts are up."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    hosts = {}
    for h in HOSTS:
        pid = init_pid(lab.id, h.name)
        addr = lab.addr(h.name)
        reachable = pid is not None and _ssh_banner(addr)
        hosts[h.name] = {"state": "up" if pid and reachable else ("starting" if pid else "down"),
                         "address": addr, "ssh": reachable, "user": h.user, "mode": h.mode,
                         "netns": lab.netns(h.name)}
    owner = _owner_dir(lab.id)
    return {
        "lab_dir": str(lab.dir), "lab_id": lab.id, "subnet": f"198.18.{lab.id}.0/24",
        "bridge": lab.bridge if Path(f"/sys/class/net/{lab.bridge}").exists() else None,
        "owner": str(owner) if owner else None,
        "inventory": str(lab.inventory) if lab.inventory.exists() else None,
        "up": all(v["state"] == "up" for v in hosts.values()) and lab.inventory.exists()
        and (owner is None or owner == lab.dir),
        "hosts": hosts,
    }


# --- up --------------------------------------------------------------------------------------------


def up(lab_dir: Path | str, lab_id: int = 0) -> dict:
    """Start the lab (a no-op if it is already up; after a crashed run, clean up first)."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    t0 = time.monotonic()
    with _locked(lab):
        owner = _owner_dir(lab.id)
        if owner is not None and owner != lab.dir:
            raise LabUnavailable(f"lab id {lab.id} is in use by the lab in {owner}; take that one down "
                                 f"(TINSNIP_LAB_DIR={owner} inv lab.down) or choose another TINSNIP_LAB_ID")
        st = status(lab.dir, lab.id)
        if st["up"]:
            return {**st, "already_up": True, "timings": {"total": round(time.monotonic() - t0, 2)}}
        with _no_interrupt():
            _down(lab)  # whatever a crashed or half-finished run left behind
        timings: dict[str, float] = {}
        try:
            _up(lab, timings)
        except BaseException:
            with _no_interrupt():
                _down(lab)
            raise
        timings["total"] = round(time.monotonic() - t0, 2)
        return {**status(lab.dir, lab.id), "already_up": False, "timings": timings}


def _up(lab: Lab, timings: dict[str, float]) -> None:
    t = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t
        now = time.monotonic()
        timings[name] = round(now - t, 2)
        t = now

    _prepare(lab)
    password = secrets.token_urlsafe(18)
    lap("prepare")

    _run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{lab.gateway}/24", "dev", lab.bridge])
    _run(["ip", "link", "set", lab.bridge, "up"])
    d = lab.disks
    binds = {
        "nas": [f"{d}/nas-volume1:/volume1", f"{d}/nas-nfs:/var/lib/nfs"],
        # The docker hosts see the NAS's real disks, for the mount.nfs stand-in only.
        "docker1": [f"{d}/docker1-docker:/var/lib/docker", f"{d}/nas-volume1:/.lab/nas-volume1",
                    f"{d}/nas-nfs:/.lab/nas-nfs:ro"],
        "docker2": [f"{d}/docker2-docker:/var/lib/docker", f"{d}/nas-volume1:/.lab/nas-volume1",
                    f"{d}/nas-nfs:/.lab/nas-nfs:ro"],
    }
    for h in HOSTS:
        units = DOCKER_UNITS if h.mode == "systemd" else ""
        _run(["bash", str(HERE / "lab-host"), "up", lab.prefix, lab.bridge, h.name, lab.addr(h.name), h.mode, units,
              str(lab.host_dir(h.name)), str(lab.state / "hosts"), *binds[h.name]])
    lap("start")

    def wait_ssh(h: Host) -> float:
        def probe() -> bool:
            if init_pid(lab.id, h.name) is None and time.monotonic() - t > 5:
                log = (lab.host_dir(h.name) / "init.log").read_text(errors="replace")[-2000:]
                raise LabError(f"lab host {h.name} stopped while starting:\n{log}")
            return _ssh_banner(lab.addr(h.name), timeout=0.5)
        return _wait(f"sshd on {h.name} ({lab.addr(h.name)})", probe, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
        waits = {h.name: pool.submit(wait_ssh, h) for h in HOSTS}
        for name, f in waits.items():
            timings[f"ssh_{name}"] = round(f.result(), 2)
    lap("boot")

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        nas = pool.submit(_setup_nas, lab, password)
        dockers = {h.name: pool.submit(_wait_docker, lab, h.name) for h in DOCKER_HOSTS}
        nas.result()
        for f in dockers.values():
            f.result()
    lap("configure")

    _make_image(lab)
    lap("image")

    _write_known_hosts(lab)
    _write_env(lab, password)
    _write_inventory(lab)
    lap("write")


def _prepare(lab: Lab) -> None:
    """Fresh disks and per-host files; the client key and host keys are kept across runs."""
    for p in (lab.state, lab.disks, lab.dir / "images"):
        shutil.rmtree(p, ignore_errors=True)
    lab.state.mkdir(parents=True)
    (lab.dir / "images").mkdir()
    for disk in ("nas-volume1", "docker1-docker", "docker2-docker"):
        (lab.disks / disk).mkdir(parents=True)
    # The NAS's nfs-utils state starts as a fresh install's.
    shutil.copytree("/var/lib/nfs", lab.disks / "nas-nfs", symlinks=True)
    (lab.disks / "nas-nfs" / "etab").write_text("")

    if not lab.key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tinsnip-lab-{lab.id}", "-f", str(lab.key)])
    pub = (lab.dir / "id_ed25519.pub").read_text()

    keys = lab.dir / "hostkeys"
    keys.mkdir(exist_ok=True)
    hosts_lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                   f"{lab.gateway}\ttinsnip-lab-gateway"]
    hosts_lines += [f"{lab.addr(h.name)}\t{h.name}" for h in HOSTS]
    (lab.state / "hosts").write_text("\n".join(hosts_lines) + "\n")
    (lab.state / "hosts").chmod(0o644)

    for h in HOSTS:
        hostkey = keys / f"{h.name}_ed25519"
        if not hostkey.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f", str(hostkey)])
        files = lab.host_dir(h.name) / "files"
        _put(files / "etc/ssh/ssh_host_ed25519_key", hostkey.read_bytes(), 0o600)
        _put(files / "etc/ssh/ssh_host_ed25519_key.pub", (keys / f"{h.name}_ed25519.pub").read_bytes(), 0o644)
        _put(files / "root/.ssh/authorized_keys", pub, 0o600, dir_mode=0o700)
        root_login = "no" if h.name == "nas" else "prohibit-password"  # DSM refuses root over SSH
        _put(files / "etc/ssh/sshd_config.d/tinsnip-lab.conf",
             "# tinsnip lab host\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
             f"PermitRootLogin {root_login}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
             "MaxSessions 100\nMaxStartups 100:30:200\n", 0o644)
        if h.mode == "systemd":
            _put(files / "etc/docker/daemon.json", json.dumps(lab.daemon_json(h.name), indent=2) + "\n", 0o644)
            _put(files / "usr/sbin/mount.nfs", (HERE / "mount.nfs-shim").read_bytes(), 0o755)
            os.symlink("mount.nfs", files / "usr/sbin/mount.nfs4")
            _put(files / ".lab/nas-address", lab.addr("nas") + "\n", 0o644)
        else:
            # Synology-like sudo: the admin always gives a password, and sees no lecture.
            _put(files / "etc/sudoers.d/zz-tinsnip-lab",
                 "# tinsnip lab: the NAS admin uses sudo with a password, as on DSM\n"
                 "Defaults lecture=never\nadmin ALL=(ALL:ALL) ALL\n", 0o440)


def _put(path: Path, content: bytes | str, mode: int, dir_mode: int = 0o755) -> None:
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir()
            parent.chmod(dir_mode if parent == path.parent else 0o755)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    path.chmod(mode)


def _setup_nas(lab: Lab, password: str) -> None:
    """The admin user: key login, member of sudo, password set through stdin (never in argv)."""
    x = lambda *argv, **kw: host_exec(lab.id, "nas", list(argv), **kw)  # noqa: E731
    x("useradd", "-m", "-s", "/bin/bash", "-G", "sudo", "admin")
    x("chpasswd", input=f"admin:{password}\n")
    x("install", "-d", "-m", "700", "-o", "admin", "-g", "admin", "/home/admin/.ssh")
    x("install", "-m", "600", "-o", "admin", "-g", "admin", "/root/.ssh/authorized_keys",
      "/home/admin/.ssh/authorized_keys")
    x("chmod", "755", "/volume1")


def _wait_docker(lab: Lab, name: str) -> float:
    def probe() -> bool:
        r = host_exec(lab.id, name, ["docker", "version", "--format", "{{.Server.Version}}"], check=False,
                      timeout=10)
        return r.returncode == 0
    return _wait(f"Docker on {name}", probe, timeout=90, interval=0.2)


def _busybox_rootfs() -> bytes:
    """A busybox root filesystem as a tar: one static binary and RELATIVE links to it (absolute links
    would point outside the image's root once Docker unpacks it)."""
    import io

    applets = _run(["/bin/busybox", "--list"]).stdout.decode().split()
    buf = io.BytesIO()

    def add(name: str, *, type=tarfile.DIRTYPE, mode=0o755, data: bytes = b"", link: str = "") -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime, ti.size, ti.linkname = type, mode, 0, len(data), link
        tf.addfile(ti, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", "var/www", "home"):
            add(d, mode=0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", type=tarfile.REGTYPE, data=Path("/bin/busybox").read_bytes())
        for a in applets:
            if a != "busybox":
                add(f"bin/{a}", type=tarfile.SYMTYPE, mode=0o777, link="busybox")
        add("etc/passwd", type=tarfile.REGTYPE, mode=0o644,
            data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", type=tarfile.REGTYPE, mode=0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def _make_image(lab: Lab) -> None:
    """Import the busybox image on docker1, save it as the lab's image archive, load it on docker2."""
    host_exec(lab.id, "docker1", ["docker", "import", "-c", "ENV PATH=/bin", "-c", 'CMD ["sh"]', "-", IMAGE],
              input=_busybox_rootfs())
    with open(lab.image_archive, "wb") as out:
        host_exec(lab.id, "docker1", ["docker", "save", IMAGE], stdout=out)
    for h in DOCKER_HOSTS[1:]:
        host_exec(lab.id, h.name, ["docker", "load", "-q"], input=lab.image_archive.read_bytes())


def _write_known_hosts(lab: Lab) -> None:
    lines = []
    for h in HOSTS:
        keytype, key, *_ = (lab.dir / "hostkeys" / f"{h.name}_ed25519.pub").read_text().split()
        lines.append(f"{lab.addr(h.name)} {keytype} {key}")
    lab.known_hosts.write_text("\n".join(lines) + "\n")


def _write_env(lab: Lab, password: str) -> None:
    fd = os.open(lab.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write("# tinsnip lab secrets, written by `inv lab.up` (do not edit: lab.up rewrites it)\n"
                f"{SUDO_PASSWORD_VAR}={password}\n")


def inventory_text(lab_dir: Path | str, lab_id: int = 0) -> str:
    """The lab's hosts.yaml."""
    lab = _lab(lab_dir, lab_id)
    out = [
        "# tinsnip lab inventory, written by `inv lab.up` (do not edit: lab.up rewrites it)",
        "sheet: dynamicalsystem",
        "ssh:",
        "  key: id_ed25519",
        "  known_hosts: known_hosts",
        "nas:",
        f"  address: {lab.addr('nas')}",
        "  user: admin",
        "  port: 22",
        "  volume: /volume1",
        "docker_hosts:",
    ]
    for h in DOCKER_HOSTS:
        out += [
            f"  {h.name}:",
            f"    address: {lab.addr(h.name)}",
            f"    user: {h.user}",
            "    port: 22",
            f"    nfs_client: {lab.addr(h.name)}",
            "    address_pools:",
            f"      - {{base: {lab.rootless_pool(h.name)}, size: 24}}",
            "    images:",
            f"      {IMAGE}: {IMAGE_ARCHIVE}",
        ]
    out.append("machines:")
    out += [f"  {m}: {host}" for m, host in MACHINES.items()]
    return "\n".join(out) + "\n"


def _write_inventory(lab: Lab) -> None:
    lab.inventory.write_text(inventory_text(lab.dir, lab.id))


# --- down ------------------------------------------------------------------------------------------


def down(lab_dir: Path | str, lab_id: int = 0) -> dict:
    """Stop the lab: no namespace, mount, cgroup, bridge, veth or process of it is left."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    t0 = time.monotonic()
    with _locked(lab):
        owner = _owner_dir(lab.id)
        if owner is not None and owner != lab.dir:
            raise LabUnavailable(f"lab id {lab.id} belongs to the lab in {owner}, not {lab.dir}; "
                                 f"run lab.down with TINSNIP_LAB_DIR={owner}")
        was_up = [h.name for h in HOSTS if init_pid(lab.id, h.name) is not None]
        with _no_interrupt():
            _down(lab)
    return {"lab_dir": str(lab.dir), "lab_id": lab.id, "stopped": was_up,
            "timings": {"total": round(time.monotonic() - t0, 2)}}


def _down(lab: Lab) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
        jobs = [pool.submit(_run, ["bash", str(HERE / "lab-host"), "down", lab.prefix, h.name], timeout=60)
                for h in HOSTS]
        errors = [str(e) for f in jobs if (e := f.exception())]
    if Path(f"/sys/class/net/{lab.bridge}").exists():
        _run(["ip", "link", "del", lab.bridge])
    for p in (lab.state, lab.disks, lab.dir / "images", lab.inventory, lab.known_hosts, lab.env_file):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if errors:
        raise LabError("lab.down did not finish cleanly: " + "; ".join(errors))
