"""The `lab` fixture: tinsnip's lab (a NAS and two Docker hosts), up once per test session.

The lab id comes from TINSNIP_TEST_LAB_ID; without it the first free id from 1 up is taken, so a
developer's `make lab` (id 0) and other test sessions on the same machine are left alone. The lab dir
is .lab-test/<id> in the repository (or TINSNIP_TEST_LAB_DIR). The lab is always taken down at the end,
on failures and on Ctrl-C too. The suite is skipped, saying why, only where the machine cannot host a
lab (not root, not Linux, packages missing).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tinsnip import lab as labmod

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """What a command on a lab host gave back; unpacks as (rc, stdout, stderr)."""

    rc: int
    stdout: str
    stderr: str

    @property
    def returncode(self) -> int:
        return self.rc

    def __iter__(self):
        return iter((self.rc, self.stdout, self.stderr))


@dataclass
class LabHandle:
    dir: Path
    id: int
    addr: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    up_info: dict = field(default_factory=dict)  # what lab.up reported (timings, hosts)

    @property
    def layout(self) -> labmod.Lab:
        """The lab's own names and paths (inventory, key, known_hosts), as lab.up wrote them."""
        return labmod.Lab(self.dir, self.id)

    @property
    def inventory(self) -> Path:
        return self.layout.inventory

    @property
    def key(self) -> Path:
        return self.layout.key

    @property
    def known_hosts(self) -> Path:
        return self.layout.known_hosts

    @property
    def sudo_password(self) -> str:
        return self.env[labmod.SUDO_PASSWORD_VAR]

    def ssh_argv(self, name: str, user: str, known_hosts: Path | None = None) -> list[str]:
        """OpenSSH as tinsnip's users run it: the lab key, the pinned host keys and nothing else."""
        return [
            "ssh", "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            # sntrup761 key exchange costs ~0.3 s of CPU per connection on this kind of machine
            "-o", "KexAlgorithms=curve25519-sha256",
            f"{user}@{self.addr[name]}",
        ]

    def ssh(self, name: str, command: str, user: str | None = None, input: str | None = None,
            timeout: float = 120, known_hosts: Path | None = None) -> Result:
        """Run a shell command on a lab host. Without `user`: as root, over SSH with the lab key; on the
        NAS, which refuses root logins as DSM does, through nsenter into the host instead."""
        if user is None and name == "nas":
            return self.root(name, command, input=input, timeout=timeout)
        argv = [*self.ssh_argv(name, user or "root", known_hosts), command]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        return Result(r.returncode, r.stdout, r.stderr)

    modules: int = 0  # test modules that have used this lab so far

    def start(self) -> None:
        """Bring the lab up (fresh disks) and read what it wrote: addresses, inventory, sudo password."""
        info = labmod.up(self.dir, self.id)
        self.addr = {name: h["address"] for name, h in info["hosts"].items()}
        self.env = {
            "TINSNIP_INVENTORY": str(self.inventory),
            "TINSNIP_LAB_DIR": str(self.dir),
            "TINSNIP_LAB_ID": str(self.id),
            **_read_env_file(self.dir / labmod.ENV_FILE),
        }
        self.up_info = info

    def reset(self) -> None:
        """A fresh lab for the next test module: hosts restarted on empty disks (a few seconds)."""
        labmod.down(self.dir, self.id)
        self.start()

    def root(self, name: str, command: str, input: str | None = None, timeout: float = 120) -> Result:
        """Run a shell command as root inside a lab host without SSH (nsenter into its init)."""
        r = labmod.host_exec(self.id, name, ["bash", "-c", command], input=input, check=False, timeout=timeout)
        return Result(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))

    def tin(self, *args: str, check: bool = False, input: str | None = None, timeout: float = 600) -> Result:
        """Run the tinsnip CLI against the lab, as a user would (`python -m tinsnip ...`)."""
        r = subprocess.run([sys.executable, "-m", "tinsnip", *args], cwd=REPO, env={**os.environ, **self.env},
                           input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"tin {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return Result(r.returncode, r.stdout, r.stderr)

    def tin_checked(self, *args: str, code: int = 0) -> Result:
        """`tin` that must exit with `code` and must never show the sudo password."""
        r = self.tin(*args)
        assert r.rc == code, f"tin {' '.join(args)} exited {r.rc}, expected {code}:\n{r.stdout}\n{r.stderr}"
        assert self.sudo_password not in r.stdout + r.stderr
        return r

    def tin_json(self, *args: str, code: int = 0) -> dict:
        return json.loads(self.tin_checked(*args, "--json", code=code).stdout)


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def _claim_lab_id(base: Path | None):
    """Pick a lab id and dir and hold a lock on it for the session, so that concurrent sessions on
    this machine never share a lab."""
    wanted = os.environ.get("TINSNIP_TEST_LAB_ID")
    candidates = [int(wanted)] if wanted else list(range(1, labmod.MAX_LAB_ID + 1))
    for lab_id in candidates:
        lab_dir = (base or REPO / ".lab-test") / str(lab_id)
        lab_dir.mkdir(parents=True, exist_ok=True)
        lock = open(lab_dir / ".session.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wanted else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.close()
            continue
        owner = labmod.status(lab_dir, lab_id)["owner"]
        if owner and Path(owner) != lab_dir.absolute():
            lock.close()
            if wanted:
                pytest.skip(f"lab id {lab_id} is in use by the lab in {owner}; set another TINSNIP_TEST_LAB_ID")
            continue
        return lab_id, lab_dir, lock
    pytest.skip("no free lab id (1-7) for the lab tests: every one is held by another session")


@pytest.fixture(scope="session")
def lab():
    """A running lab, shared by the whole session; always taken down afterwards."""
    try:
        labmod.check_machine()
    except labmod.LabUnavailable as exc:
        pytest.skip(f"this machine cannot host the tinsnip lab: {exc}")
    base = os.environ.get("TINSNIP_TEST_LAB_DIR")
    lab_id, lab_dir, lock = _claim_lab_id(Path(base) if base else None)

    done = []

    def teardown():
        # lab.down holds a Ctrl-C until it has finished, then lets it through.
        try:
            labmod.down(lab_dir, lab_id)
        finally:
            done.append(True)
            lock.close()

    def last_resort():
        # If the session dies before the fixture's own teardown runs (the hosts outlive us: setsid).
        if not done:
            teardown()

    atexit.register(last_resort)
    try:
        handle = LabHandle(dir=lab_dir.absolute(), id=lab_id, addr={})
        handle.start()
        yield handle
    finally:
        teardown()


@pytest.fixture(scope="module", autouse=True)
def fresh_lab_per_module(request):
    """Each lab test module starts from a fresh lab, so modules never see each other's machines,
    registry entries or exports (the first module gets the lab as the session brought it up)."""
    if "lab" not in request.fixturenames:
        yield
        return
    handle = request.getfixturevalue("lab")
    if handle.modules:
        handle.reset()
    handle.modules += 1
    yield
