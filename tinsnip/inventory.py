"""hosts.yaml → validated, frozen objects. Every problem is reported at once, each with its key path.

No secrets live here: a key that looks like one is refused with the place secrets belong instead.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import smep
from .errors import InputError

SECRET_WORDS = ("password", "passwd", "secret", "token")


@dataclass(frozen=True)
class Host:
    """A host tinsnip reaches over SSH: the NAS or a Docker host."""

    name: str
    address: str
    user: str
    port: int = 22
    role: str = "docker"  # "nas" or "docker"

    @property
    def is_root(self) -> bool:
        return self.user == "root"

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class Nas(Host):
    volume: str = "/volume1"


@dataclass(frozen=True)
class DockerHost(Host):
    nfs_client: str = ""
    address_pools: tuple[tuple[str, int], ...] = ()
    images: tuple[tuple[str, Path], ...] = ()
    registry_mirrors: tuple[str, ...] = ()  # https URLs, for Docker Hub names
    registry_cas: tuple[tuple[str, str], ...] = ()  # (HOST:PORT, PEM text) trusted by every rootless daemon


@dataclass(frozen=True)
class Inventory:
    path: Path
    sheet: str
    nas: Nas
    docker_hosts: dict[str, DockerHost]
    machines: dict[str, str]  # "gazette-prod" → docker host name
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    extra: dict = field(default_factory=dict)

    def host(self, name: str) -> Host:
        if name == self.nas.name:
            return self.nas
        if name not in self.docker_hosts:
            known = ", ".join(sorted(self.docker_hosts)) or "none"
            raise InputError(f"unknown host {name!r}: the inventory {self.path} has Docker hosts {known}")
        return self.docker_hosts[name]

    def all_hosts(self) -> list[Host]:
        return [self.nas, *self.docker_hosts.values()]

    def placement(self, machine: str, env: str, override: str | None = None) -> DockerHost:
        """The Docker host a machine-env lives on: `--host`, else the inventory's `machines:`."""
        if override:
            host = self.host(override)
            if not isinstance(host, DockerHost):
                raise InputError(f"--host {override!r} is the NAS; name a Docker host")
            return host
        key = f"{machine}-{env}"
        if key in self.machines:
            return self.docker_hosts[self.machines[key]]
        if len(self.docker_hosts) == 1:
            return next(iter(self.docker_hosts.values()))
        known = ", ".join(sorted(self.docker_hosts))
        raise InputError(
            f"{key} has no Docker host: add '{key}: <host>' under machines: in {self.path}, "
            f"or pass --host (one of {known})"
        )


class _Checker:
    """Collects problems with their key paths, so a broken file is reported in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value, path: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, not {type(value).__name__}")
            return {}
        for key in value:
            sub = f"{path}.{key}" if path else str(key)
            if any(word in str(key).lower() for word in SECRET_WORDS):
                self.add(sub, "secrets never go in hosts.yaml: set TINSNIP_NAS_SUDO_PASSWORD (or "
                         "TINSNIP_SUDO_PASSWORD) in the environment or in tinsnip.env beside it")
            elif key not in allowed:
                hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                self.add(sub, "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else
                                               f"; known keys: {', '.join(sorted(allowed))}"))
        for key in sorted(required):
            if value.get(key) in (None, ""):
                self.add(f"{path}.{key}" if path else key, "required")
        return value

    def text(self, value, path: str, default: str | None = None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"must be a non-empty string, not {value!r}")
            return default
        if any(ch.isspace() or ord(ch) < 32 for ch in value):
            self.add(path, f"must not contain spaces or control characters: {value!r}")
            return default
        return value

    def address(self, value, path: str) -> str | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not all(part and (part.isalnum() or "-" in part) and part.isascii() for part in text.split(".")) \
                    or text.startswith("-"):
                self.add(path, f"not an IP address or host name: {text!r}")
                return None
        return text

    def port(self, value, path: str) -> int:
        if value is None:
            return 22
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.add(path, f"must be a port number 1–65535, not {value!r}")
            return 22
        return value

    def name(self, value, path: str, what: str) -> str | None:
        try:
            return smep.check_name(value, what)
        except InputError as exc:
            self.add(path, str(exc))
            return None


def load(path: str | Path) -> Inventory:
    """Read and validate an inventory file; raise InputError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(
            f"inventory {path} not found: pass --inventory, set TINSNIP_INVENTORY, "
            f"or start the lab with `inv lab.up` (then use --inventory .lab/hosts.yaml)"
        ) from None
    except OSError as exc:
        raise InputError(f"inventory {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"inventory {path} is not valid YAML{where}: {problem}") from None
    return parse(data, path)


def parse(data, path: Path) -> Inventory:
    c = _Checker()
    base = path.parent
    top = c.mapping(data, "", {"sheet", "ssh", "nas", "docker_hosts", "machines"}, {"nas", "docker_hosts"})

    sheet = smep.DEFAULT_SHEET
    if top.get("sheet") is not None:
        sheet = c.name(top.get("sheet"), "sheet", "sheet") or sheet

    ssh = c.mapping(top.get("ssh"), "ssh", {"key", "known_hosts"})
    ssh_key = c.text(ssh.get("key"), "ssh.key")
    known = c.text(ssh.get("known_hosts"), "ssh.known_hosts")

    nas_raw = c.mapping(top.get("nas"), "nas", {"address", "user", "port", "volume"}, {"address", "user"})
    volume = c.text(nas_raw.get("volume"), "nas.volume", "/volume1")
    if volume and (not volume.startswith("/") or ".." in volume.split("/") or volume == "/"):
        c.add("nas.volume", f"must be an absolute path below / such as /volume1, not {volume!r}")
    nas = Nas(
        name="nas",
        address=c.address(nas_raw.get("address"), "nas.address") or "",
        user=c.text(nas_raw.get("user"), "nas.user") or "",
        port=c.port(nas_raw.get("port"), "nas.port"),
        role="nas",
        volume=volume or "/volume1",
    )

    hosts: dict[str, DockerHost] = {}
    raw_hosts = top.get("docker_hosts")
    if isinstance(raw_hosts, dict) and not raw_hosts:
        c.add("docker_hosts", "name at least one Docker host")
    for hname, raw in c.mapping(raw_hosts, "docker_hosts", set(raw_hosts or {}) if isinstance(raw_hosts, dict) else set()).items():
        p = f"docker_hosts.{hname}"
        if c.name(hname, p, "Docker host") is None:
            continue
        if hname == "nas":
            c.add(p, "the name 'nas' belongs to the NAS")
        h = c.mapping(raw, p, {"address", "user", "port", "nfs_client", "address_pools", "images",
                                 "registry_mirrors", "registry_cas"}, {"address"})
        address = c.address(h.get("address"), f"{p}.address") or ""
        pools = []
        raw_pools = h.get("address_pools") or []
        if not isinstance(raw_pools, list):
            c.add(f"{p}.address_pools", "must be a list of {base: CIDR, size: N}")
            raw_pools = []
        for i, pool in enumerate(raw_pools):
            pp = f"{p}.address_pools[{i}]"
            pool = c.mapping(pool, pp, {"base", "size"}, {"base", "size"})
            try:
                net = ipaddress.ip_network(str(pool.get("base")), strict=True)
                size = pool.get("size")
                if isinstance(size, bool) or not isinstance(size, int) or not net.prefixlen <= size <= 30:
                    c.add(f"{pp}.size", f"must be a prefix length from {net.prefixlen} to 30, not {size!r}")
                else:
                    pools.append((str(net), size))
            except ValueError:
                if pool.get("base") is not None:
                    c.add(f"{pp}.base", f"not a network in CIDR form: {pool.get('base')!r}")
        images = []
        raw_images = h.get("images") or {}
        if not isinstance(raw_images, dict):
            c.add(f"{p}.images", "must map an image name to a local archive (docker save format)")
            raw_images = {}
        for iname, archive in raw_images.items():
            if c.text(iname, f"{p}.images") and c.text(archive, f"{p}.images.{iname}"):
                images.append((iname, (base / Path(archive).expanduser()).resolve()))
        mirrors = []
        raw_mirrors = h.get("registry_mirrors") or []
        if not isinstance(raw_mirrors, list):
            c.add(f"{p}.registry_mirrors", "must be a list of https URLs, e.g. [https://registry.lan:5000]")
            raw_mirrors = []
        for i, url in enumerate(raw_mirrors):
            if not (isinstance(url, str) and re.fullmatch(r"https://[A-Za-z0-9.\-\[\]:]+(:[0-9]+)?/?", url)):
                c.add(f"{p}.registry_mirrors[{i}]", f"must be an https URL of a registry (https://HOST[:PORT]), not {url!r}")
            else:
                mirrors.append(url.rstrip("/"))
        cas = []
        raw_cas = h.get("registry_cas") or {}
        if not isinstance(raw_cas, dict):
            c.add(f"{p}.registry_cas", "must map HOST:PORT of a registry to a CA certificate file (PEM)")
            raw_cas = {}
        for reg, pem_path in raw_cas.items():
            rp = f"{p}.registry_cas.{reg}"
            if not (isinstance(reg, str) and re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]{1,5}", reg)):
                c.add(rp, f"the key must be a registry's HOST:PORT (as in an image name), not {reg!r}")
                continue
            if not c.text(pem_path, rp):
                continue
            f = (base / Path(pem_path).expanduser()).resolve()
            try:
                pem = f.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                c.add(rp, f"cannot read the CA certificate {f}: {getattr(exc, 'strerror', None) or exc}")
                continue
            if "-----BEGIN CERTIFICATE-----" not in pem or "PRIVATE KEY" in pem:
                c.add(rp, f"{f} is not a PEM CA certificate (and must hold no private key)")
                continue
            cas.append((reg, pem))
        hosts[hname] = DockerHost(
            name=hname,
            address=address,
            user=c.text(h.get("user"), f"{p}.user", "root") or "root",
            port=c.port(h.get("port"), f"{p}.port"),
            role="docker",
            nfs_client=c.address(h.get("nfs_client"), f"{p}.nfs_client") or address,
            address_pools=tuple(pools),
            images=tuple(images),
            registry_mirrors=tuple(mirrors),
            registry_cas=tuple(sorted(cas)),
        )

    machines: dict[str, str] = {}
    raw_machines = top.get("machines") or {}
    for key, hname in c.mapping(raw_machines, "machines", set(raw_machines) if isinstance(raw_machines, dict) else set()).items():
        p = f"machines.{key}"
        try:
            machine, env = smep.parse_machine_env(key)
            smep.user_name(machine, env)
        except InputError as exc:
            c.add(p, str(exc))
            continue
        if hname not in hosts:
            if isinstance(raw_hosts, dict) and hname in raw_hosts:
                continue  # that host's own problems are already listed
            known = ", ".join(sorted(hosts)) or "none defined"
            c.add(p, f"unknown Docker host {hname!r} (docker_hosts: {known})")
            continue
        machines[key] = hname

    if c.problems:
        lines = "\n".join(f"  {problem}" for problem in c.problems)
        raise InputError(f"inventory {path} has {len(c.problems)} problem(s):\n{lines}")
    return Inventory(
        path=path,
        sheet=sheet,
        nas=nas,
        docker_hosts=hosts,
        machines=machines,
        ssh_key=(base / Path(ssh_key).expanduser()).resolve() if ssh_key else None,
        known_hosts=(base / Path(known).expanduser()).resolve() if known else None,
    )
