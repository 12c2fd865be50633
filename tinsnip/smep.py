"""SMEP numbers (sheet, machine, environment, port) and the names they belong to. Pure code.

base = S*10000 + MM*100 + E*10; uid = gid = base; ports base+0 … base+9.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import InputError

NAME_RULE = "lowercase letters, digits and single inner hyphens, starting with a letter"
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_USER_LEN = 32

ENVS: dict[str, int] = {
    "prod": 0,
    "test": 1,
    "dev": 2,
    "staging": 3,
    "demo": 4,
    "qa": 5,
    "uat": 6,
    "preview": 7,
    "canary": 8,
    "local": 9,
}

RESERVED_MACHINES: dict[str, int] = {"station": 0, "gazette": 1, "lldap": 2, "gateway": 3}
FIRST_FREE_MACHINE = 4
MAX_MACHINE = 99
MAX_SHEET = 5
DEFAULT_SHEET = "dynamicalsystem"
SUBID_BASE = 1_000_000_000
SUBID_COUNT = 65536
GATES = "/var/lib/tinsnip/mounts"  # root:root 0755; one gate per machine-env below it


def check_name(value: object, what: str) -> str:
    """Return `value` if it is a valid sheet/machine/service name, else raise InputError naming the rule."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise InputError(f"invalid {what} name {shown}: use {NAME_RULE} (e.g. 'gazette', 'home-lab')")
    if len(value) > MAX_USER_LEN:
        raise InputError(f"invalid {what} name {value!r}: at most {MAX_USER_LEN} characters")
    return value


def check_env(value: object) -> str:
    if not isinstance(value, str) or value not in ENVS:
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        known = ", ".join(f"{k} ({v})" for k, v in ENVS.items())
        raise InputError(f"unknown environment {shown}: use one of {known}")
    return value


def parse_number(value: object, what: str, low: int, high: int) -> int:
    """Parse a number given on the command line ('7', '07', 7) and check its range."""
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise InputError(f"invalid {what} {value!r}: a whole number from {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        raise InputError(f"{what} {number} is out of range: a whole number from {low} to {high}")
    return number


def check_machine_number(value: object) -> int:
    return parse_number(value, "machine number", 0, MAX_MACHINE)


def check_sheet_number(value: object) -> int:
    n = parse_number(value, "sheet number", 1, 9)
    if n > MAX_SHEET:
        raise InputError(f"sheet number {n} is out of range: 1 to {MAX_SHEET} (sheet 6 would put ports past 65535)")
    return n


def user_name(machine: str, env: str) -> str:
    name = f"{machine}-{env}"
    if len(name) > MAX_USER_LEN:
        raise InputError(
            f"user name {name!r} is {len(name)} characters: machine and env together "
            f"('{{machine}}-{{env}}') must be at most {MAX_USER_LEN}"
        )
    return name


def preferred_sheet_number(sheet: str) -> int:
    """The design documents' hash rule: md5 of the name and a newline, first hex digit, mod 9, plus 1.

    The result may be over 5: the sheet registry then gives the lowest free number instead.
    """
    digest = hashlib.md5((sheet + "\n").encode()).hexdigest()
    return int(digest[0], 16) % 9 + 1


def offline_sheet_number(sheet: str) -> int:
    """The number a sheet gets when the registry is out of reach: its preferred one if 1–5, else
    the lowest free in an empty registry (1 is the default sheet's; see allocate_sheet_number)."""
    return allocate_sheet_number(sheet, {DEFAULT_SHEET: preferred_sheet_number(DEFAULT_SHEET)})


def allocate_sheet_number(sheet: str, taken: dict[str, int], pinned: int | None = None) -> int:
    """Number for `sheet` given the registry `taken` (name → number). Keeps an existing number."""
    if sheet in taken:
        if pinned is not None and pinned != taken[sheet]:
            raise InputError(f"sheet {sheet!r} already has number {taken[sheet]}; a sheet's number never changes")
        return taken[sheet]
    holders = {n: name for name, n in taken.items()}
    if pinned is not None:
        if pinned in holders:
            raise InputError(f"sheet number {pinned} is taken by sheet {holders[pinned]!r}")
        return pinned
    preferred = preferred_sheet_number(sheet)
    if preferred <= MAX_SHEET and preferred not in holders:
        return preferred
    for n in range(1, MAX_SHEET + 1):
        if n not in holders:
            return n
    raise InputError(f"no free sheet number for {sheet!r}: all of 1–{MAX_SHEET} are taken ({taken})")


def allocate_machine_number(machine: str, taken: dict[str, int], pinned: int | None = None) -> int:
    """Number for `machine` given the sheet's registry (name → number). Reserved names keep theirs."""
    holders = {n: name for name, n in taken.items()}
    for name, n in RESERVED_MACHINES.items():
        holders.setdefault(n, name)
    if machine in RESERVED_MACHINES:
        number = RESERVED_MACHINES[machine]
        if pinned is not None and pinned != number:
            raise InputError(f"machine {machine!r} is reserved with number {number:02d}")
        return number
    if machine in taken:
        if pinned is not None and pinned != taken[machine]:
            raise InputError(
                f"machine {machine!r} already has number {taken[machine]:02d}; "
                f"remove it first (registry.remove) to give it another"
            )
        return taken[machine]
    if pinned is not None:
        if pinned in holders:
            raise InputError(f"machine number {pinned:02d} is taken by {holders[pinned]!r}")
        return pinned
    for n in range(FIRST_FREE_MACHINE, MAX_MACHINE + 1):
        if n not in holders:
            return n
    raise InputError(f"no free machine number for {machine!r}: 04–{MAX_MACHINE} are all taken")


def base_number(sheet_number: int, machine_number: int, env_number: int) -> int:
    if not 1 <= sheet_number <= MAX_SHEET:
        raise InputError(f"sheet number {sheet_number} is out of range 1–{MAX_SHEET}")
    if not 0 <= machine_number <= MAX_MACHINE:
        raise InputError(f"machine number {machine_number} is out of range 0–{MAX_MACHINE}")
    return sheet_number * 10000 + machine_number * 100 + env_number * 10


@dataclass(frozen=True)
class MachineEnv:
    """One service in one environment, with every number and path derived from SMEP."""

    sheet: str
    sheet_number: int
    machine: str
    machine_number: int
    env: str
    volume: str = "/volume1"

    def __post_init__(self) -> None:
        check_name(self.sheet, "sheet")
        check_name(self.machine, "machine")
        check_env(self.env)
        user_name(self.machine, self.env)
        base_number(self.sheet_number, self.machine_number, ENVS[self.env])

    @property
    def env_number(self) -> int:
        return ENVS[self.env]

    @property
    def name(self) -> str:
        return f"{self.machine}-{self.env}"

    @property
    def uid(self) -> int:
        return base_number(self.sheet_number, self.machine_number, self.env_number)

    gid = uid

    @property
    def ports(self) -> list[int]:
        return [self.uid + p for p in range(10)]

    @property
    def user(self) -> str:
        return self.name

    @property
    def home(self) -> str:
        return f"/home/{self.name}"

    @property
    def nas_path(self) -> str:
        return f"{self.volume.rstrip('/')}/{self.sheet}/{self.machine}/{self.env}"

    @property
    def mount(self) -> str:
        """The path people, services and links use: a symlink to `mount_point`, behind the gate."""
        return f"/mnt/{self.name}"

    @property
    def gate(self) -> str:
        """A local directory owned by the machine user, mode 0700: only that user and root pass it, so
        no other account on the Docker host reaches the all_squash mount below it."""
        return f"{GATES}/{self.name}"

    @property
    def mount_point(self) -> str:
        """Where the NFS export is really mounted (the /etc/fstab mount point)."""
        return f"{self.gate}/nas"

    @property
    def docker_host(self) -> str:
        return f"unix:///run/user/{self.uid}/docker.sock"

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    @property
    def subid_start(self) -> int:
        return SUBID_BASE + (self.uid - 10000) * SUBID_COUNT

    def info(self) -> dict:
        """The machine-env as `machine.info --json` prints it."""
        return {
            "sheet": self.sheet,
            "sheet_number": self.sheet_number,
            "machine": self.machine,
            "machine_number": self.machine_number,
            "env": self.env,
            "env_number": self.env_number,
            "uid": self.uid,
            "gid": self.gid,
            "ports": self.ports,
            "user": self.user,
            "home": self.home,
            "nas_path": self.nas_path,
            "mount": self.mount,
            "mount_point": self.mount_point,
            "docker_host": self.docker_host,
            "subuid": f"{self.subid_start}:{SUBID_COUNT}",
        }


def parse_machine_env(value: str) -> tuple[str, str]:
    """'gazette-prod' → ('gazette', 'prod'); the env is the last hyphen-separated part."""
    if not isinstance(value, str) or "-" not in value:
        raise InputError(f"invalid machine-env {value!r}: write it as {{machine}}-{{env}}, e.g. gazette-prod")
    machine, env = value.rsplit("-", 1)
    return check_name(machine, "machine"), check_env(env)
