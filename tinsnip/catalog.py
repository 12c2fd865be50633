"""The service catalog: where it lives, what each catalog service needs, and tinsnip's compose rules.

A catalog is a directory of catalog services, one sub-directory each, holding a compose file and
whatever else the service needs. It is looked up in this order: `$SERVICE_PATH`,
`~/.local/opt/{sheet}.service`, `./service`. Pure code, except `install`, which runs the local `git`.

The rules every service of a compose file follows, so that a deploy can wire it to its machine-env:
  env_file: [../../.machine/machine.env, .env]      (the machine's numbers, then the service's ports)
  user: "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"     (the machine-env's own uid inside the container)
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import smep
from .errors import InputError, TinsnipError

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAME = "docker-compose.override.yml"
ENV_NAME = ".env"
MACHINE_ENV_REF = "../../.machine/machine.env"
USER_RULE = "${TIN_SERVICE_UID}:${TIN_SERVICE_UID}"
USER_ACCEPTED = (USER_RULE, "${TIN_SERVICE_UID}:${TIN_SERVICE_GID}")
# Files tinsnip writes into a deployed service's directory: a catalog service must not ship them.
WRITTEN_BY_TINSNIP = (ENV_NAME, OVERRIDE_NAME)
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache"}
MAX_FILE_BYTES = 1_000_000
PORT_REF = re.compile(r"\$\{?TIN_PORT_(\d)(?![0-9])")
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")

ENV_FILE_FIX = f"env_file:\n      - {MACHINE_ENV_REF}\n      - {ENV_NAME}"
USER_FIX = f'user: "{USER_RULE}"'


@dataclass(frozen=True)
class CatalogService:
    """One catalog service as found on disk, with what a deploy needs to know about it."""

    name: str
    path: Path
    compose_file: Path | None
    compose: dict = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    port_indexes: tuple[int, ...] = ()
    volumes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    images: tuple[str, ...] = ()

    @property
    def ports_needed(self) -> int:
        """How many of the machine's ports it takes: TIN_PORT_0 … TIN_PORT_n, n the highest it uses."""
        return max(self.port_indexes) + 1 if self.port_indexes else 0

    @property
    def follows_rules(self) -> bool:
        return not self.problems

    def describe(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "compose_file": self.compose_file.name if self.compose_file else None,
            "ports": self.ports_needed,
            "port_variables": [f"TIN_PORT_{i}" for i in self.port_indexes],
            "services": list(self.services),
            "volumes": list(self.volumes),
            "images": list(self.images),
            "follows_rules": self.follows_rules,
            "problems": list(self.problems),
        }

    def require_rules(self) -> None:
        """Raise InputError (exit 2) listing every broken rule, each with its file and fix."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise InputError(f"catalog service {self.name!r} breaks tinsnip's compose rules:\n{lines}")


# -- where the catalog is ------------------------------------------------------------------------


def candidates(sheet: str, environ: dict | None = None, home: Path | None = None,
               cwd: Path | None = None) -> list[tuple[str, Path]]:
    """The catalog locations in lookup order, each with where it came from."""
    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    cwd = Path.cwd() if cwd is None else cwd
    found = []
    if environ.get("SERVICE_PATH"):
        found.append(("$SERVICE_PATH", Path(environ["SERVICE_PATH"]).expanduser()))
    found.append(("~/.local/opt/{sheet}.service", home / ".local" / "opt" / f"{sheet}.service"))
    found.append(("./service", cwd / "service"))
    return found


def find(sheet: str, environ: dict | None = None, home: Path | None = None, cwd: Path | None = None) -> Path:
    """The first catalog that exists. $SERVICE_PATH, when set, must exist: it is never skipped."""
    environ = os.environ if environ is None else environ
    places = candidates(sheet, environ, home, cwd)
    for source, path in places:
        if path.is_dir():
            return path
        if source == "$SERVICE_PATH":
            raise InputError(f"SERVICE_PATH={environ['SERVICE_PATH']} is not a directory: point it at a "
                             f"service catalog, or unset it to use {places[1][1]} or ./service")
    tried = ", ".join(str(p) for _, p in places)
    raise InputError(f"no service catalog found (tried {tried}): run `tin service.catalog-install`, "
                     f"or set SERVICE_PATH to a catalog directory")


def list_services(catalog: Path) -> list[CatalogService]:
    """Every catalog service in a catalog: each sub-directory with a compose file."""
    services = []
    for entry in sorted(catalog.iterdir()):
        if entry.is_dir() and entry.name not in SKIP_DIRS and not entry.name.startswith("."):
            if compose_file(entry) is not None:
                services.append(load_dir(entry))
    return services


def get(catalog: Path, name: str) -> CatalogService:
    """One catalog service by name; InputError naming the ones there are if it is missing."""
    smep.check_name(name, "catalog service")
    path = catalog / name
    if not path.is_dir() or compose_file(path) is None:
        known = ", ".join(s.name for s in list_services(catalog)) or "none"
        raise InputError(f"catalog {catalog} has no service {name!r} (a directory with a compose file); "
                         f"it has: {known}. Pass --catalog-service to pick one")
    return load_dir(path)


def compose_file(path: Path) -> Path | None:
    for name in COMPOSE_NAMES:
        if (path / name).is_file():
            return path / name
    return None


# -- one catalog service: parse and check --------------------------------------------------------


def load_dir(path: Path) -> CatalogService:
    name = path.name
    cfile = compose_file(path)
    if cfile is None:
        return CatalogService(name, path, None, problems=(f"{path}: no compose file (one of {', '.join(COMPOSE_NAMES)})",))
    problems: list[str] = []
    if not smep.NAME_RE.match(name):
        problems.append(f"{path}: the directory name {name!r} is not a valid service name: use {smep.NAME_RULE}")
    text = cfile.read_text(errors="replace")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return CatalogService(name, path, cfile, problems=(f"{cfile}: not valid YAML{where}",))
    compose = data if isinstance(data, dict) else {}
    problems += check_rules(compose, cfile)
    for written in WRITTEN_BY_TINSNIP:
        if (path / written).exists():
            problems.append(f"{path / written}: tinsnip writes this file at deploy; fix: remove it from the catalog")
    services = compose.get("services") if isinstance(compose.get("services"), dict) else {}
    return CatalogService(
        name=name,
        path=path,
        compose_file=cfile,
        compose=compose,
        problems=tuple(problems),
        port_indexes=tuple(sorted({int(n) for n in PORT_REF.findall(text)})),
        volumes=named_volumes(compose),
        services=tuple(services),
        images=tuple(sorted({s["image"] for s in services.values()
                             if isinstance(s, dict) and isinstance(s.get("image"), str)})),
    )


def _env_file_entries(value) -> list[str] | None:
    """env_file as a list of paths ('./x' and 'x' alike); None if it is not a list."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    paths = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("path")
        if not isinstance(item, str):
            return None
        paths.append(item[2:] if item.startswith("./") else item)
    return paths


def check_rules(compose: dict, cfile: Path | str) -> list[str]:
    """Every broken rule of a parsed compose file, each naming the file, the service and the fix."""
    if not compose:
        return [f"{cfile}: empty or not a mapping; a compose file with a `services:` mapping is needed"]
    services = compose.get("services")
    if not isinstance(services, dict) or not services:
        return [f"{cfile}: no `services:` mapping"]
    problems = []
    for sname, svc in services.items():
        if not isinstance(svc, dict):
            problems.append(f"{cfile}: service {sname!r} is not a mapping")
            continue
        entries = _env_file_entries(svc.get("env_file"))
        ok = (entries is not None and MACHINE_ENV_REF in entries and ENV_NAME in entries
              and entries.index(MACHINE_ENV_REF) < entries.index(ENV_NAME))
        if not ok:
            problems.append(f"{cfile}: service {sname!r}: env_file must list {MACHINE_ENV_REF} then {ENV_NAME}; "
                            f"fix: under services.{sname}, set\n    {ENV_FILE_FIX}")
        user = svc.get("user")
        if user not in USER_ACCEPTED:
            got = "missing" if user is None else f"is {user!r}"
            problems.append(f"{cfile}: service {sname!r}: user {got}; fix: under services.{sname}, set\n    {USER_FIX}")
    return problems


def named_volumes(compose: dict) -> tuple[str, ...]:
    """The top-level named volumes tinsnip binds to the NAS (external ones belong to someone else)."""
    vols = compose.get("volumes")
    if not isinstance(vols, dict):
        return ()
    return tuple(name for name, spec in vols.items()
                 if not (isinstance(spec, dict) and spec.get("external")))


def service_files(svc: CatalogService) -> dict[str, tuple[str, int]]:
    """The files a deploy copies: relative path → (text, mode 0644 or 0755). Text files only."""
    files: dict[str, tuple[str, int]] = {}
    for root, dirs, names in os.walk(svc.path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for fname in sorted(names):
            full = Path(root) / fname
            rel = full.relative_to(svc.path).as_posix()
            if rel in WRITTEN_BY_TINSNIP:
                continue
            if full.is_symlink() or not full.is_file():
                raise InputError(f"{full}: a catalog service holds regular files only (no symlinks or devices)")
            if full.stat().st_size > MAX_FILE_BYTES:
                raise InputError(f"{full}: over {MAX_FILE_BYTES} bytes; keep big data out of the catalog "
                                 f"(put it in a named volume)")
            try:
                text = full.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{full}: not a UTF-8 text file; a catalog service holds text files only") from None
            if any(ch in rel for ch in "\n\r\\"):
                raise InputError(f"{full}: file names with newlines or backslashes are not supported")
            mode = 0o755 if full.stat().st_mode & 0o100 else 0o644
            files[rel] = (text, mode)
    return files


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, $VAR with known values (unknown ones become empty)."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in values and values[name] != "":
            return values[name]
        return m.group(2) or ""

    return VAR_REF.sub(sub, text.replace("$$", "\0")).replace("\0", "$")


# -- installing a catalog with git ---------------------------------------------------------------


def checkout_root() -> Path:
    """The tinsnip checkout this code runs from."""
    return Path(__file__).resolve().parent.parent


def infer_repo_url(origin: str) -> str:
    """The catalog's URL from tinsnip's own origin: its last `tinsnip` becomes `service`."""
    origin = origin.strip()
    i = origin.rfind("tinsnip")
    if i < 0:
        raise InputError(f"cannot infer the catalog URL from origin {origin!r} (no 'tinsnip' in it): "
                         f"set SERVICE_REPO_URL or pass --url")
    return origin[:i] + "service" + origin[i + len("tinsnip"):]


def _git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    except FileNotFoundError:
        raise InputError("git is not installed: install git to use service.catalog-install") from None
    except subprocess.TimeoutExpired:
        raise TinsnipError(f"git {' '.join(args)} took longer than 300 s") from None


def origin_url(checkout: Path) -> str:
    r = _git("remote", "get-url", "origin", cwd=checkout)
    if r.returncode != 0:
        raise InputError(f"{checkout} has no git remote 'origin' to infer the catalog URL from: "
                         f"set SERVICE_REPO_URL or pass --url")
    return r.stdout.strip()


def repo_url(flag: str | None, environ: dict | None = None, checkout: Path | None = None) -> tuple[str, str]:
    """(url, where it came from): --url, then $SERVICE_REPO_URL, then the checkout's origin."""
    environ = os.environ if environ is None else environ
    if flag:
        return flag, "--url"
    if environ.get("SERVICE_REPO_URL"):
        return environ["SERVICE_REPO_URL"], "$SERVICE_REPO_URL"
    checkout = checkout or checkout_root()
    return infer_repo_url(origin_url(checkout)), f"origin of {checkout} with tinsnip → service"


def install_action(dest: Path) -> str:
    """'clone' into a new directory, 'update' an existing clone; refuse anything else."""
    if not dest.exists():
        return "clone"
    if (dest / ".git").exists():
        return "update"
    if dest.is_dir() and not any(dest.iterdir()):
        return "clone"
    raise InputError(f"--dest {dest} exists and is not a git clone: move it away, or pass --dest for another place")


def check_origin(dest: Path, url: str, action: str) -> None:
    """An existing clone must be of `url` (read locally, before any fetch)."""
    if action == "clone":
        return
    current = _git("remote", "get-url", "origin", cwd=dest).stdout.strip()
    if current and current != url:
        raise InputError(f"--dest {dest} is a clone of {current}, not {url}: remove it, or pass another --dest")


def install(url: str, dest: Path) -> tuple[str, str]:
    """Clone `url` into `dest`, or fast-forward an existing clone. Returns (action, git's output)."""
    action = install_action(dest)
    if action == "clone":
        dest.parent.mkdir(parents=True, exist_ok=True)
        r = _git("clone", "--quiet", "--", url, str(dest))
    else:
        check_origin(dest, url, action)
        before = _git("rev-parse", "HEAD", cwd=dest).stdout.strip()
        r = _git("pull", "--ff-only", "--quiet", cwd=dest)
        if r.returncode == 0 and _git("rev-parse", "HEAD", cwd=dest).stdout.strip() == before:
            action = "unchanged"
    if r.returncode != 0:
        raise TinsnipError(f"git {'clone' if action == 'clone' else 'pull --ff-only'} of {url} failed: "
                           f"{(r.stderr or r.stdout).strip()}")
    return action, (r.stdout + r.stderr).strip()
