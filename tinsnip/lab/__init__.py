"""The tinsnip lab: a NAS and two Docker hosts, real ones, in network namespaces on this machine.

`up()` starts three hosts on a bridge of their own, each a set of namespaces over a private overlay of
this machine's / (see `lab-host` and `lab-host-init` beside this file):

    nas       198.18.K.10  sshd as PID 1; nfs-utils' real exportfs; /volume1 a real Btrfs filesystem (a
                           loop-mounted image file in the lab's disks); /var/lib/nfs on a real directory;
                           login as `admin`, who needs sudo with a password
    docker1   198.18.K.20  systemd as PID 1; rootful Docker on a real /var/lib/docker; rootless Docker
    docker2   198.18.K.21  prerequisites; Compose v2; a mount.nfs that enforces the NAS's export table
    (registry) 198.18.K.30 docker-registry over TLS: :5000 open (the lab's images, the Docker Hub
                           mirror), :5001 private (a login); see registry.py

Each host's disk (the upper layer of its overlay) is a tmpfs mounted on this machine under
<lab dir>/state/<host>/disk, so it outlives one boot: `reboot()` shuts a host down cleanly and boots it
again on the same disk, `rebuild()` gives it a fresh disk and a new SSH host key (a replaced machine).

K is the lab id, so several labs can run side by side. Everything a lab makes on the machine carries
the prefix `tlK` (network namespaces `tlK-nas`..., veths `tlKv-nas`..., cgroups `tlK-nas`...) or is
the bridge `tlbrK`; its files live in the lab dir. `down()` removes all of it.

The lab dir afterwards holds what tinsnip needs to use the lab: hosts.yaml (an inventory),
id_ed25519, known_hosts (the hosts' pinned keys, by address), tinsnip.env (the NAS sudo password and
the private registry's login, mode 0600, read by tinsnip beside the inventory), registry-ca.crt (the
lab registry's CA) and images/busybox.tar (`docker load`-able).
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
from . import registry as reg

HERE = Path(__file__).resolve().parent
MAX_LAB_ID = 7  # each lab takes a /19 of 198.19.0.0/16 for its Docker networks: 8 labs fit
IMAGE = "lab/busybox:1"
PRIVATE_IMAGE = "private/busybox:1"  # only in the private registry (:5001), behind its login
HUB_IMAGE = "library/busybox:latest"  # the Docker Hub name `busybox`, served by the lab's mirror
PRIVATE_APP_IMAGE = "lab/nginx:1.22"  # with tinsnip.lab.images: also pushed to the private registry
VOLUME_SIZE = "8G"  # the NAS's Btrfs image file (sparse: it holds only what is written)
DISK_SIZE = "8g"  # each host's disk, a tmpfs (memory is used only for what is written)
LOOP_NODES = 64  # /dev/loop0..63 in each Docker host (the machine's loop pool grows on demand)
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
    "docker-registry": "docker-registry", "skopeo": "skopeo", "openssl": "openssl",
    "mkfs.btrfs": "btrfs-progs", "losetup": "util-linux",
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

    @property
    def volume_image(self) -> Path:
        """The NAS's /volume1: a Btrfs filesystem in this image file, loop-mounted at disks/nas-volume1."""
        return self.disks / "nas-volume1.btrfs"

    @property
    def registry_dir(self) -> Path:
        return self.dir / "registry"

    @property
    def registry_ca(self) -> Path:
        return self.dir / reg.CA_FILE

    def disk(self, name: str) -> Path:
        """Where a host's disk (a tmpfs holding its overlay's upper layer) is mounted on this machine."""
        return self.host_dir(name) / "disk"

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
        "registry": {"address": reg.addr(lab.id), "netns": reg.netns(lab.id),
                     "running": bool(reg._pids(reg.netns(lab.id))) if Path("/run/netns", reg.netns(lab.id)).exists()
                     else False,
                     "open": f"https://{reg.open_registry(lab.id)}", "private": f"https://{reg.private_registry(lab.id)}",
                     "ca": str(lab.registry_ca) if lab.registry_ca.exists() else None},
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

    password = secrets.token_urlsafe(18)
    registry_password = secrets.token_urlsafe(18)
    images = _images_module()
    layout = None
    if images is not None:  # built once per machine, then cached (see tinsnip.lab.images)
        layout = images.ensure(log=lambda msg: print(f"lab images: {msg}", file=sys.stderr))
        lap("images_ensure")
    _prepare(lab)
    seed = _registry_seed(layout)
    if seed:
        for port in (reg.OPEN_PORT, reg.PRIVATE_PORT):
            shutil.copytree(seed / str(port), lab.disks / f"registry-{port}", symlinks=True)
    lap("prepare")

    _run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{lab.gateway}/24", "dev", lab.bridge])
    _run(["ip", "link", "set", lab.bridge, "up"])
    reg.start(lab.dir, lab.disks, lab.id, lab.bridge, registry_password)
    for h in HOSTS:
        _start_host(lab, h)
    lap("start")

    with concurrent.futures.ThreadPoolExecutor(len(HOSTS) + 1) as pool:
        waits = {h.name: pool.submit(_wait_ssh, lab, h) for h in HOSTS}
        waits["registry"] = pool.submit(reg.wait, lab.dir, lab.id)
        for name, f in waits.items():
            timings[f"ssh_{name}" if name != "registry" else name] = round(f.result(), 2)
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

    timings.update(_push_images(lab, registry_password, None if seed else layout))
    lap("push")
    if layout is not None and not seed:
        _save_registry_seed(lab, layout)

    _write_known_hosts(lab)
    _write_env(lab, password, registry_password)
    _write_inventory(lab)
    lap("write")


def _binds(lab: Lab, name: str) -> list[str]:
    d = lab.disks
    return {
        "nas": [f"{d}/nas-volume1:/volume1", f"{d}/nas-nfs:/var/lib/nfs"],
        # The docker hosts see the NAS's real disks, for the mount.nfs stand-in only: the same Btrfs
        # filesystem as the NAS's /volume1, so subvolumes and snapshots show there live.
        "docker1": [f"{d}/docker1-docker:/var/lib/docker", f"{d}/nas-volume1:/.lab/nas-volume1",
                    f"{d}/nas-nfs:/.lab/nas-nfs:ro"],
        "docker2": [f"{d}/docker2-docker:/var/lib/docker", f"{d}/nas-volume1:/.lab/nas-volume1",
                    f"{d}/nas-nfs:/.lab/nas-nfs:ro"],
    }[name]


def _start_host(lab: Lab, h: Host) -> None:
    """Boot one host on its disk (a tmpfs on this machine, mounted here on first use)."""
    disk = lab.disk(h.name)
    disk.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(disk):
        _run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=755", f"{lab.netns(h.name)}-disk", str(disk)])
    units = DOCKER_UNITS if h.mode == "systemd" else ""
    _run(["bash", str(HERE / "lab-host"), "up", lab.prefix, lab.bridge, h.name, lab.addr(h.name), h.mode, units,
          str(lab.host_dir(h.name)), str(lab.state / "hosts"), *_binds(lab, h.name)])


def _wait_ssh(lab: Lab, h: Host) -> float:
    t0 = time.monotonic()

    def probe() -> bool:
        if init_pid(lab.id, h.name) is None and time.monotonic() - t0 > 5:
            log = (lab.host_dir(h.name) / "init.log").read_text(errors="replace")[-2000:]
            raise LabError(f"lab host {h.name} stopped while starting:\n{log}")
        return _ssh_banner(lab.addr(h.name), timeout=0.5)
    return _wait(f"sshd on {h.name} ({lab.addr(h.name)})", probe, timeout=60)


def _prepare(lab: Lab) -> None:
    """Fresh disks and per-host files; the client key and host keys are kept across runs."""
    _release_disks(lab)
    for p in (lab.state, lab.disks, lab.dir / "images", lab.registry_dir):
        shutil.rmtree(p, ignore_errors=True)
    lab.state.mkdir(parents=True)
    (lab.dir / "images").mkdir()
    for disk in ("docker1-docker", "docker2-docker"):
        (lab.disks / disk).mkdir(parents=True)
    _make_volume(lab)
    # The NAS's nfs-utils state starts as a fresh install's.
    shutil.copytree("/var/lib/nfs", lab.disks / "nas-nfs", symlinks=True)
    (lab.disks / "nas-nfs" / "etab").write_text("")

    reg.make_certs(lab.registry_dir, lab.id)
    shutil.copyfile(lab.registry_dir / "ca.crt", lab.registry_ca)

    if not lab.key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tinsnip-lab-{lab.id}", "-f", str(lab.key)])

    hosts_lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                   f"{lab.gateway}\ttinsnip-lab-gateway"]
    hosts_lines += [f"{lab.addr(h.name)}\t{h.name}" for h in HOSTS]
    hosts_lines.append(reg.hosts_line(lab.id))
    (lab.state / "hosts").write_text("\n".join(hosts_lines) + "\n")
    (lab.state / "hosts").chmod(0o644)

    for h in HOSTS:
        _host_files(lab, h)


def _make_volume(lab: Lab) -> None:
    """The NAS's /volume1: a sparse Btrfs image, on a loop device from the machine's shared pool
    (`losetup -f`: other labs use it too), mounted at disks/nas-volume1 and bound into the hosts."""
    img, mnt = lab.volume_image, lab.disks / "nas-volume1"
    mnt.mkdir(parents=True)
    _run(["truncate", "-s", VOLUME_SIZE, str(img)])
    _run(["mkfs.btrfs", "-q", "-f", "-L", "volume1", str(img)])
    loop = _run(["losetup", "-f", "--show", str(img)]).stdout.decode().strip()
    try:
        _run(["mount", "-o", "noatime", loop, str(mnt)])
    except LabError:
        _run(["losetup", "-d", loop], check=False)
        raise


def _host_files(lab: Lab, h: Host, *, new_key: bool = False) -> None:
    """What a host's first boot copies onto its fresh disk: its identity (host key), root's
    authorized_keys, the sshd and Docker configuration, the lab registry's CA."""
    keys = lab.dir / "hostkeys"
    keys.mkdir(exist_ok=True)
    hostkey = keys / f"{h.name}_ed25519"
    if new_key:
        hostkey.unlink(missing_ok=True)
        (keys / f"{h.name}_ed25519.pub").unlink(missing_ok=True)
    if not hostkey.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f", str(hostkey)])
    pub = (lab.dir / "id_ed25519.pub").read_text()
    files = lab.host_dir(h.name) / "files"
    shutil.rmtree(files, ignore_errors=True)
    _put(files / "etc/ssh/ssh_host_ed25519_key", hostkey.read_bytes(), 0o600)
    _put(files / "etc/ssh/ssh_host_ed25519_key.pub", (keys / f"{h.name}_ed25519.pub").read_bytes(), 0o644)
    _put(files / "root/.ssh/authorized_keys", pub, 0o600, dir_mode=0o700)
    root_login = "no" if h.name == "nas" else "prohibit-password"  # DSM refuses root over SSH
    _put(files / "etc/ssh/sshd_config.d/tinsnip-lab.conf",
         "# tinsnip lab host\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
         f"PermitRootLogin {root_login}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
         "MaxSessions 100\nMaxStartups 100:30:200\n", 0o644)
    if h.mode == "systemd":
        daemon = {**lab.daemon_json(h.name), "registry-mirrors": [f"https://{reg.open_registry(lab.id)}"]}
        _put(files / "etc/docker/daemon.json", json.dumps(daemon, indent=2) + "\n", 0o644)
        for r in (reg.open_registry(lab.id), reg.private_registry(lab.id)):
            _put(files / f"etc/docker/certs.d/{r}/ca.crt", lab.registry_ca.read_bytes(), 0o644)
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
    _boot_nas(lab)


def _boot_nas(lab: Lab) -> None:
    """What the NAS does at every boot, after sshd is up (on DSM: its services' start scripts).

    The kernel's export table does not survive a reboot: it starts empty and is rebuilt from
    /etc/exports, as nfs-server.service's `exportfs -r` does."""
    host_exec(lab.id, "nas", ["sh", "-c", ": > /var/lib/nfs/etab; exportfs -ra"])


def _stop_nas(lab: Lab) -> None:
    """What the NAS's NFS service does on a clean shutdown (`exportfs -au`): no client may mount it
    while it is down. (Mounts the Docker hosts already hold keep working: the lab's NFS stand-in has
    no server to lose.)"""
    host_exec(lab.id, "nas", ["sh", "-c", "exportfs -au; : > /var/lib/nfs/etab"], check=False, timeout=20)


# Run inside a Docker host before it goes down: the loop devices it attached (a database's image file)
# belong to the whole machine, and dying with the host would leave them attached. `losetup -d` of one
# in use only marks it: the kernel detaches it as the host's last mount of it goes. Only devices whose
# backing file this host sees (same inode and device) are touched: other labs share the loop pool.
_RELEASE_LOOPS = r"""
import json, os, subprocess
out = subprocess.run(["losetup", "-l", "-J", "-O", "NAME,BACK-FILE,BACK-INO,BACK-MAJ:MIN"],
                     capture_output=True, text=True).stdout
for d in (json.loads(out).get("loopdevices", []) if out.strip() else []):
    f = (d.get("back-file") or "").removesuffix(" (deleted)")
    try:
        st = os.stat(f)
        maj, mi = (int(x) for x in str(d["back-maj:min"]).split(":"))
    except (OSError, ValueError, KeyError):
        continue
    if st.st_ino == int(d["back-ino"]) and (os.major(st.st_dev), os.minor(st.st_dev)) == (maj, mi):
        subprocess.run(["losetup", "-d", d["name"]])
        print(d["name"], f)
"""


def _release_loops(lab: Lab, name: str) -> list[str]:
    if _host(name).mode != "systemd" or init_pid(lab.id, name) is None:
        return []
    r = host_exec(lab.id, name, ["python3", "-c", _RELEASE_LOOPS], check=False, timeout=30)
    return r.stdout.decode(errors="replace").splitlines()


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


def _push_images(lab: Lab, password: str, layout: Path | None) -> dict[str, float]:
    """Fill the lab registry: busybox as lab/busybox:1 and as Docker Hub's busybox (for the mirror) on
    :5000, and as private/busybox:1 on :5001 only; with an image layout (tinsnip.lab.images), also
    the application images under their lab and Docker Hub names (lab/postgres:15,
    library/postgres:15, ...) and a private copy of one of them on :5001."""
    certs = str(lab.registry_dir / "certs")
    src = f"docker-archive:{lab.image_archive}"
    open_, private = reg.open_registry(lab.id), reg.private_registry(lab.id)
    auth = lab.registry_dir / "auth.json"
    reg.write_authfile(auth, lab.id, password)
    jobs = []

    def public() -> None:
        reg.skopeo("copy", "-q", "--dest-cert-dir", certs, src, f"docker://{open_}/{IMAGE}")
        reg.skopeo("copy", "-q", "--src-cert-dir", certs, "--dest-cert-dir", certs,
                   f"docker://{open_}/{IMAGE}", f"docker://{open_}/{HUB_IMAGE}")
    jobs.append(public)
    jobs.append(lambda: reg.skopeo("copy", "-q", "--dest-cert-dir", certs, "--dest-authfile", str(auth), src,
                                   f"docker://{private}/{PRIVATE_IMAGE}"))
    if layout is not None:
        images = _images_module()
        for image in images.IMAGES:
            jobs.append(lambda name=image.name: images.push(layout, open_, certs, names=[name]))
        jobs.append(lambda: images.push(layout, private, certs, names=[PRIVATE_APP_IMAGE], authfile=auth))

    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(job) for job in jobs]:
                f.result()
    finally:
        auth.unlink(missing_ok=True)
    return {"push_images": round(time.monotonic() - t0, 2)}


def _registry_seed(layout: Path | None) -> Path | None:
    """The registry storage a first lab.up with this image layout left in the image cache: copying it
    (0.2 s) gives the next labs a registry that already holds the application images, where pushing
    them takes ~10 s. The registry's storage names no address, so any lab id may use it."""
    if layout is None:
        return None
    seed = layout.parent / f"registry-{_layout_key(layout)}"
    return seed if (seed / "complete").exists() else None


def _save_registry_seed(lab: Lab, layout: Path) -> None:
    seed = layout.parent / f"registry-{_layout_key(layout)}"
    if seed.exists():
        return
    tmp = layout.parent / f".registry-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for port in (reg.OPEN_PORT, reg.PRIVATE_PORT):
            shutil.copytree(lab.disks / f"registry-{port}", tmp / str(port), symlinks=True)
        (tmp / "complete").write_text("")
        os.rename(tmp, seed)
    except OSError:
        pass  # another lab saved it first, or the cache is read-only: the next lab.up pushes again
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _layout_key(layout: Path) -> str:
    """What identifies the layout's content: its index (the digests of every image in it)."""
    import hashlib

    return hashlib.sha256((layout / "index.json").read_bytes()).hexdigest()[:16]


def _images_module():
    try:
        from . import images
    except ImportError:
        return None
    return images


def _write_known_hosts(lab: Lab) -> None:
    lines = []
    for h in HOSTS:
        keytype, key, *_ = (lab.dir / "hostkeys" / f"{h.name}_ed25519.pub").read_text().split()
        lines.append(f"{lab.addr(h.name)} {keytype} {key}")
    lab.known_hosts.write_text("\n".join(lines) + "\n")


def _write_env(lab: Lab, password: str, registry_password: str) -> None:
    fd = os.open(lab.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write("# tinsnip lab secrets, written by `inv lab.up` (do not edit: lab.up rewrites it)\n"
                f"{SUDO_PASSWORD_VAR}={password}\n"
                f"# the login of the lab's private registry, https://{reg.private_registry(lab.id)}\n"
                f"{reg.USER_VAR}={reg.USER}\n{reg.PASSWORD_VAR}={registry_password}\n")


def _inventory_knows_registries(ca: Path | None = None) -> bool:
    """Whether this tinsnip's inventory accepts `registry_mirrors` and `registry_cas` per Docker host
    (an older one refuses unknown keys, so the lab leaves them out there). Asked by loading a lab
    inventory that has them."""
    import tempfile

    from .. import inventory

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "hosts.yaml"
        probe.write_text(inventory_text(d, 0, registries=True))
        (Path(d) / reg.CA_FILE).write_bytes(ca.read_bytes() if ca and ca.exists() else b"")
        try:
            inventory.load(probe)
        except TinsnipError:
            return False
    return True


def inventory_text(lab_dir: Path | str, lab_id: int = 0, *, registries: bool | None = None) -> str:
    """The lab's hosts.yaml. `registries`: write each Docker host's registry mirror and CAs (default:
    when this tinsnip's inventory knows these keys)."""
    lab = _lab(lab_dir, lab_id)
    if registries is None:
        registries = _inventory_knows_registries(lab.registry_ca)
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
        ]
        if registries:
            out += [
                f"    registry_mirrors: [https://{reg.open_registry(lab.id)}]",
                "    registry_cas:",
                f'      "{reg.open_registry(lab.id)}": {reg.CA_FILE}',
                f'      "{reg.private_registry(lab.id)}": {reg.CA_FILE}',
            ]
        if not registries or h.name != DOCKER_HOSTS[0].name:
            # With the registry known to tinsnip, docker1's machine-envs pull (lab/busybox:1 through
            # the mirror: `make demo` and the service tests); docker2 keeps the archive, for the hosts
            # that cannot pull.
            out += [
                "    images:",
                f"      {IMAGE}: {IMAGE_ARCHIVE}",
            ]
    out.append("machines:")
    out += [f"  {m}: {host}" for m, host in MACHINES.items()]
    return "\n".join(out) + "\n"


def _write_inventory(lab: Lab) -> None:
    lab.inventory.write_text(inventory_text(lab.dir, lab.id,
                                            registries=_inventory_knows_registries(lab.registry_ca)))


# --- down ------------------------------------------------------------------------------------------


def down(lab_dir: Path | str, lab_id: int = 0) -> dict:
    """Stop the lab: no namespace, mount, loop device, cgroup, bridge, veth or process of it is left."""
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


def _stop_host(lab: Lab, name: str) -> None:
    """A clean shutdown (systemd's poweroff; on the NAS its NFS service's stop first), then nothing of
    the host runs. Its disk stays mounted on this machine."""
    if init_pid(lab.id, name) is not None:
        if name == "nas":
            _stop_nas(lab)
        _release_loops(lab, name)
    _run(["bash", str(HERE / "lab-host"), "down", lab.prefix, name], timeout=60)


def _down(lab: Lab) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
        jobs = [pool.submit(_stop_host, lab, h.name) for h in HOSTS]
        errors = [str(e) for f in jobs if (e := f.exception())]
    try:
        reg.stop(lab.id)
    except LabError as exc:
        errors.append(str(exc))
    # The bridge last: the hosts' and the registry's veths hang on it.
    if Path(f"/sys/class/net/{lab.bridge}").exists():
        _run(["ip", "link", "del", lab.bridge])
    try:
        _release_disks(lab)
    except LabError as exc:
        errors.append(str(exc))
    for p in (lab.state, lab.disks, lab.dir / "images", lab.registry_dir, lab.registry_ca, lab.inventory,
              lab.known_hosts, lab.env_file):
        if p.is_dir():
            if not _mounts_below(p):  # never delete through a mount that did not go
                shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if errors:
        raise LabError("lab.down did not finish cleanly: " + "; ".join(errors))


def _mounts_below(path: Path) -> list[str]:
    """Mount points on this machine at or below path, deepest first."""
    root = str(path.absolute())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].encode().decode("unicode_escape")  # \040 and friends
        if target == root or target.startswith(root + "/"):
            found.append(target)
    return sorted(set(found), key=lambda t: t.count("/"), reverse=True)


def _release_disks(lab: Lab) -> None:
    """Unmount the lab's disks on this machine (the hosts' tmpfs disks, the NAS's Btrfs volume) and
    detach the volume's loop device: a stopped host leaves both behind."""
    for target in _mounts_below(lab.dir):
        r = _run(["umount", target], check=False)
        if r.returncode != 0:
            _run(["umount", "-l", target])
    img = lab.volume_image
    if img.exists():
        r = _run(["losetup", "-n", "-O", "NAME", "-j", str(img)], check=False)
        for dev in r.stdout.decode().split():
            _run(["losetup", "-d", dev])


# --- reboot, rebuild, trust ------------------------------------------------------------------------


def _known_host(name: str) -> Host:
    try:
        return _host(name)
    except KeyError:
        raise LabUnavailable(f"no lab host {name!r}; the lab's hosts are "
                             + ", ".join(h.name for h in HOSTS)) from None


def _require_up(lab: Lab) -> None:
    st = status(lab.dir, lab.id)
    if not st["up"]:
        raise LabUnavailable(f"lab {lab.id} is not up in {lab.dir}; start it first "
                             f"(TINSNIP_LAB_ID={lab.id} TINSNIP_LAB_DIR={lab.dir} inv lab.up)")


def _boot(lab: Lab, h: Host, timings: dict[str, float]) -> None:
    t0 = time.monotonic()
    _start_host(lab, h)
    timings["ssh"] = round(_wait_ssh(lab, h) + time.monotonic() - t0, 2)
    if h.mode == "systemd":
        timings["docker"] = round(_wait_docker(lab, h.name), 2)
    else:
        _boot_nas(lab)
    timings["boot"] = round(time.monotonic() - t0, 2)


def fingerprint(pub: Path) -> str:
    """SHA256:... of an SSH public key file, as ssh-keygen -l shows it."""
    return _run(["ssh-keygen", "-l", "-f", str(pub)]).stdout.decode().split()[1]


def reboot(lab_dir: Path | str, lab_id: int, host: str) -> dict:
    """A clean shutdown of one host (systemd's poweroff; on the NAS, its NFS service's stop) and a fresh
    boot on the same disk: /etc, /home, /var/lib (docker, linger), users and fstab stay; mounts, /run,
    /tmp, processes and the NAS's kernel export table do not (the NAS rebuilds it from /etc/exports)."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    h = _known_host(host)
    with _locked(lab):
        _require_up(lab)
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        with _no_interrupt():
            _stop_host(lab, h.name)
        timings["shutdown"] = round(time.monotonic() - t0, 2)
        _boot(lab, h, timings)
        timings["total"] = round(time.monotonic() - t0, 2)
    return {"lab_dir": str(lab.dir), "lab_id": lab.id, "host": h.name, "address": lab.addr(h.name),
            "disk": "kept", "timings": timings}


def rebuild(lab_dir: Path | str, lab_id: int, host: str, *, trust: bool = False) -> dict:
    """The host is replaced: the same address, a fresh disk (no users of tinsnip's, an empty
    /var/lib/docker) and a NEW SSH host key, which the lab's known_hosts does not hold until the user
    trusts it (`trust`, or `rebuild(..., trust=True)`): until then tinsnip refuses the host."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    h = _known_host(host)
    if h.mode != "systemd":
        raise LabUnavailable(f"{h.name} holds the lab's data: rebuilding the NAS is not modelled "
                             "(lab.down and lab.up give a fresh lab)")
    with _locked(lab):
        _require_up(lab)
        pub = lab.dir / "hostkeys" / f"{h.name}_ed25519.pub"
        old = fingerprint(pub)
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        with _no_interrupt():
            _stop_host(lab, h.name)
            for target in _mounts_below(lab.host_dir(h.name)):
                _run(["umount", target])
            docker = lab.disks / f"{h.name}-docker"
            shutil.rmtree(docker)
            docker.mkdir()
            _host_files(lab, h, new_key=True)
        timings["shutdown"] = round(time.monotonic() - t0, 2)
        _boot(lab, h, timings)
        if trust:
            _trust(lab, h)
        timings["total"] = round(time.monotonic() - t0, 2)
    new = fingerprint(pub)
    return {"lab_dir": str(lab.dir), "lab_id": lab.id, "host": h.name, "address": lab.addr(h.name),
            "disk": "fresh", "old_fingerprint": old, "new_fingerprint": new, "trusted": trust,
            "known_hosts": str(lab.known_hosts), "timings": timings}


def trust(lab_dir: Path | str, lab_id: int, host: str) -> dict:
    """Put the host's current SSH key into the lab's known_hosts (in place of the old one)."""
    check_machine()
    lab = _lab(lab_dir, lab_id)
    h = _known_host(host)
    with _locked(lab):
        if not lab.known_hosts.exists():
            raise LabUnavailable(f"lab {lab.id} has no known_hosts in {lab.dir}; run lab.up first")
        changed = _trust(lab, h)
    return {"lab_dir": str(lab.dir), "lab_id": lab.id, "host": h.name, "address": lab.addr(h.name),
            "fingerprint": fingerprint(lab.dir / "hostkeys" / f"{h.name}_ed25519.pub"), "changed": changed,
            "known_hosts": str(lab.known_hosts)}


def _trust(lab: Lab, h: Host) -> bool:
    keytype, key, *_ = (lab.dir / "hostkeys" / f"{h.name}_ed25519.pub").read_text().split()
    line = f"{lab.addr(h.name)} {keytype} {key}"
    old = lab.known_hosts.read_text().splitlines()
    new = [x for x in old if not x.startswith(lab.addr(h.name) + " ")] + [line]
    if sorted(new) == sorted(old):
        return False
    tmp = lab.known_hosts.with_suffix(".tmp")
    tmp.write_text("\n".join(new) + "\n")
    tmp.replace(lab.known_hosts)
    return True
