"""The service catalog: where it lives, what each catalog service needs, and the catalog check.

A catalog is a directory of catalog services, one sub-directory each, holding a compose file and
whatever else the service needs. It is looked up in this order: `$SERVICE_PATH`,
`~/.local/opt/{sheet}.service`, `./service`. Pure code, except `install`, which runs the local `git`.

The catalog check (`service.catalog`, and `service.deploy` before any connection) reads the compose
file into compose.py's model and reports, each with file:line, the line itself and the fix:
  errors (exit 2): what cannot work under rootless Docker on an all_squash NFS export, or cannot be
    served by tinsnip: privileged, network_mode host, sysctls, cap_add of host-wide capabilities,
    devices, host ports below 1024 or more than the machine-env's ten, `${TIN_PORT_10}` and beyond,
    absolute host paths outside the machine-env, placeholder paths and images, a `build:` whose
    context is not shipped, a shipped `.env` (tinsnip writes it), an unquoted `user: 10:10`;
  warnings: `latest` or untagged images, a database's data directory on a NAS volume or bind,
    `container_name`, a missing `restart`.
What the generated override supplies (compose.OVERRIDE_SUPPLIES) is not required from the file: while
the override does not supply env files, each service must list them itself:
  env_file: [../../.machine/machine.env, .env]      (the machine's numbers, then the service's ports)
and while it does not map ports, each published port must be written as `${TIN_PORT_n}`.

`user:` is no rule. Under rootless Docker, container root is the machine-env's uid on the host and
`user: N` is a subordinate uid (subuid start + N - 1); on the NAS every write is squashed to the
machine-env's uid anyway, so no `user:` makes data owned by someone else, and forcing one breaks images
whose entrypoint starts as root (README: "What cannot work under rootless Docker on NAS storage").
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import compose as cmodel
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
MACHINE_PORTS = 10
PORT_REF = re.compile(r"\$\{?TIN_PORT_(\d+)(?![0-9])")
VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")

ENV_FILE_FIX = ["env_file:", f"  - {MACHINE_ENV_REF}", f"  - {ENV_NAME}"]
# Where a database's data directory goes instead of a NAS volume (README: "Where each kind of data lives").
DATABASE_FIX = ("keep the data directory off the NAS export (a database must own it, which all_squash refuses): "
                "tinsnip's database placement (README: \"Where each kind of data lives\") is where it goes; until "
                "a deploy provides it, a volume declared `external: true` (created by the machine-env's user with "
                "`docker volume create`) stays in the Docker host's own storage, not on the NAS: back it up with "
                "the app's own dump")


@dataclass(frozen=True)
class Finding:
    """One thing the catalog check found: where, what, and how to fix it."""

    level: str  # "error" or "warning"
    file: str
    line: int | None
    message: str
    fix: str
    source: str = ""  # the offending line as written
    fixed: tuple[str, ...] = ()  # the line(s) to write instead, indented like the offending line

    def render(self) -> str:
        """`file:line: message`, the line under a gutter, then the fix lined up under it."""
        where = f"{self.file}:{self.line}" if self.line else self.file
        out = [f"{where}: {self.message}"]
        gutter = f"{self.line:>5} | " if self.line else "      | "
        if self.source:
            out.append(gutter + self.source)
        out.append(f"  fix: {self.fix}")
        out += [" " * (len(gutter) - 2) + "| " + f for f in self.fixed]
        return "\n".join(out)

    def describe(self) -> dict:
        return {"level": self.level, "file": self.file, "line": self.line, "message": self.message,
                "fix": self.fix, "source": self.source, "fixed": list(self.fixed)}


@dataclass(frozen=True)
class CatalogService:
    """One catalog service as found on disk, with what a deploy needs to know about it."""

    name: str
    path: Path
    compose_file: Path | None
    compose: dict = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    port_indexes: tuple[int, ...] = ()
    volumes: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    model: cmodel.Compose | None = None

    @property
    def problems(self) -> tuple[str, ...]:
        """The errors, rendered: each breaks a deploy."""
        return tuple(f.render() for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(f.render() for f in self.findings if f.level == "warning")

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
            "warnings": list(self.warnings),
            "findings": [f.describe() for f in self.findings],
        }

    def require_rules(self) -> None:
        """Raise InputError (exit 2) listing every error, each with its file, line and fix."""
        if self.problems:
            lines = "\n".join("  - " + p.replace("\n", "\n    ") for p in self.problems)
            raise InputError(f"catalog service {self.name!r} cannot deploy as it is; change these lines:\n{lines}")


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


def load_dir(path: Path, supplies: frozenset | None = None) -> CatalogService:
    """Read and check one catalog service. `supplies`: what the override supplies (default: today's)."""
    supplies = cmodel.OVERRIDE_SUPPLIES if supplies is None else supplies
    name = path.name
    cfile = compose_file(path)
    if cfile is None:
        return CatalogService(name, path, None, findings=(Finding(
            "error", str(path), None, f"no compose file (one of {', '.join(COMPOSE_NAMES)})",
            "add the app's compose file"),))
    findings: list[Finding] = []
    if not smep.NAME_RE.match(name):
        findings.append(Finding("error", str(path), None, f"the directory name {name!r} is not a valid service name",
                                f"rename it: {smep.NAME_RULE}"))
    text = cfile.read_text(errors="replace")
    try:
        model = cmodel.parse(text, str(cfile))
    except cmodel.ComposeError as exc:
        line = exc.line
        src = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
        findings.append(Finding("error", str(cfile), line, str(exc), "make it a compose file docker compose reads",
                                source=src))
        return CatalogService(name, path, cfile, findings=tuple(findings))
    findings += check(model, path, supplies)
    indexes = {int(v.name[len("TIN_PORT_"):]) for v in model.variables
               if re.fullmatch(r"TIN_PORT_\d+", v.name)}
    if "ports" in supplies:
        indexes |= {s.index for s in cmodel.port_slots(model)}
    indexes = {i for i in indexes if i < MACHINE_PORTS}
    return CatalogService(
        name=name, path=path, compose_file=cfile, compose=model.raw, findings=tuple(findings),
        port_indexes=tuple(sorted(indexes)), volumes=model.named_volumes(), services=tuple(model.services),
        images=model.images(), model=model)


# Host-wide capabilities: a rootless container's capabilities reach only its own user namespace, so
# these do nothing useful there (loading modules, setting the clock, raw I/O, admin of the host).
HOST_CAPS = {"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_TIME", "SYS_BOOT", "MAC_ADMIN",
             "MAC_OVERRIDE", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_CONTROL", "LINUX_IMMUTABLE",
             "DAC_READ_SEARCH", "SYS_PTRACE", "PERFMON", "BPF"}
# Absolute host paths every Debian host has and any user may read: binding them read-only works.
READABLE_HOST_FILES = ("/etc/localtime", "/etc/timezone")
# The machine-env's own places, as a compose file names them.
MACHINE_PATH_VARS = ("TIN_MOUNT", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "HOME")
PLACEHOLDER = re.compile(r"/path/to/|<[^<>]*>|@[a-z_]+@")
DATABASES = {  # image name (last path part, without tag) → data directory inside the container
    "postgres": "/var/lib/postgresql", "postgis": "/var/lib/postgresql", "timescaledb": "/var/lib/postgresql",
    "pgvecto-rs": "/var/lib/postgresql", "mariadb": "/var/lib/mysql", "mysql": "/var/lib/mysql",
    "percona": "/var/lib/mysql", "mongo": "/data/db", "mongodb": "/data/db", "redis": "/data",
    "valkey": "/data", "keydb": "/data", "couchdb": "/opt/couchdb/data", "influxdb": "/var/lib/influxdb",
    "elasticsearch": "/usr/share/elasticsearch/data",
}
IMAGE_REF = re.compile(r"^(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
                       r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


def _resolve_defaults(value: str) -> str | None:
    """A value whose variables all have defaults, with the defaults put in; None if one has none."""
    out, pos = [], 0
    vars_ = cmodel.find_variables(value)
    if not vars_:
        return value.replace("$$", "$")
    for off, var in vars_:
        if off < pos:
            continue  # nested in a default already handled
        if var.op not in (":-", "-"):
            return None
        inner = _resolve_defaults(var.arg or "")
        if inner is None:
            return None
        out.append(value[pos:off] + inner)
        pos = off + len(var.text)
    out.append(value[pos:])
    return "".join(out)


def _image_name(image: str) -> tuple[str, str | None, bool]:
    """(name without registry and tag, tag or None, has a digest)."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return name, tag or None, bool(digest)


def check(c: cmodel.Compose, sdir: Path, supplies: frozenset = cmodel.OVERRIDE_SUPPLIES) -> list[Finding]:
    """Every error and warning of one compose file in catalog service directory `sdir`."""
    out: list[Finding] = []
    f = str(Path(c.path))

    def add(level: str, line: int | None, message: str, fix: str, fixed: tuple[str, ...] = ()) -> None:
        src = c.source_line(line) if line else ""
        indent = src[:len(src) - len(src.lstrip())]
        out.append(Finding(level, f, line, message, fix, src, tuple(indent + x for x in fixed)))

    shipped = {p.relative_to(sdir).as_posix() for p in sdir.rglob("*") if p.is_file()} if sdir.is_dir() else set()
    shipped_dirs = {p.relative_to(sdir).as_posix() for p in sdir.rglob("*") if p.is_dir()} if sdir.is_dir() else set()

    # files tinsnip writes
    if (sdir / ENV_NAME).exists():
        users = [e for s in c.services.values() for e in s.env_files if _norm(e.path) == ENV_NAME]
        where = f" (listed under env_file on line {users[0].line})" if users else ""
        out.append(Finding(
            "error", str(sdir / ENV_NAME), None,
            f"tinsnip writes .env at deploy (the service's ports); a shipped one would be overwritten{where}",
            f"rename it (e.g. {sdir.name}.env) and list that name under env_file in the compose file, so the "
            f"containers and compose interpolation see it; put secret values (passwords, keys) in the "
            f"machine-env's secrets, not in the catalog (README: Secrets)"))
    if (sdir / OVERRIDE_NAME).exists():
        out.append(Finding("error", str(sdir / OVERRIDE_NAME), None, "tinsnip writes this file at deploy",
                           "remove it from the catalog; put its settings in the compose file"))

    for v in c.variables:
        m = re.fullmatch(r"TIN_PORT_(\d+)", v.name)
        if m and int(m.group(1)) >= MACHINE_PORTS:
            add("error", v.line, f"{v.text}: a machine-env has ten ports, TIN_PORT_0 … TIN_PORT_9",
                "use one of TIN_PORT_0 … TIN_PORT_9, or split the app across machine-envs")

    out += _check_variables(c, sdir, shipped)
    slots = {(s.service, id(s.port), s.offset): s.index for s in cmodel.port_slots(c)}
    over = set()
    for sname, svc in c.services.items():
        where = f"service {sname!r}"
        out += _check_image(c, svc, sdir, shipped, shipped_dirs, add, where)
        if svc.privileged is not None and svc.privileged.value.lower() in ("true", "yes", "on"):
            add("error", svc.privileged.line, f"{where}: privileged cannot work under rootless Docker (the daemon "
                "has no host privileges to give)", "delete this line")
        if svc.network_mode is not None and svc.network_mode.value == "host":
            add("error", svc.network_mode.line, f"{where}: network_mode host shares the host's network, which a "
                "rootless daemon cannot do (and would bypass the machine-env's ports)",
                "delete this line; publish the app's ports under ports: instead")
        for sc in svc.sysctls:
            add("error", sc.line, f"{where}: sysctl {sc.value.split('=')[0]} cannot be set by a rootless daemon",
                "delete this line (set it on the Docker host, by its admin, if the app really needs it)")
        for cap in svc.cap_add:
            name = cap.value.upper().removeprefix("CAP_")
            if name in HOST_CAPS:
                add("error", cap.line, f"{where}: cap_add {cap.value} is host-wide; a rootless container's "
                    "capabilities reach only its own user namespace", "delete this line")
        for dev in svc.devices:
            add("error", dev.line, f"{where}: device {dev.value.split(':')[0]} belongs to the host; the "
                "machine-env's user cannot open it in a rootless container", "delete this line")
        if svc.user is not None:
            u = svc.user
            if not u.quoted and u.tag in ("int", "float") and ":" in u.value:
                add("error", u.line, f"{where}: unquoted user {u.value} is read by YAML 1.1 as a base-60 number "
                    f"({c.raw['services'][sname].get('user')})", "quote it", (f'user: "{u.value}"',))
            elif re.fullmatch(r"[A-Za-z]*(uid|UID)[A-Za-z]*(:[A-Za-z]*(gid|GID)[A-Za-z]*)?", u.value):
                add("error", u.line, f"{where}: user {u.value} is a placeholder",
                    "delete the line (the image's own user is kept; see the README on uids), or give numbers")
        for e in svc.env_files:
            p = _norm(e.path)
            if p not in (ENV_NAME, MACHINE_ENV_REF) and e.required and p not in shipped:
                add("error", e.line, f"{where}: env_file {e.path} is not in the catalog service",
                    f"ship {e.path} in {sdir.name}/, or drop it from env_file")
        if "env_files" not in supplies:
            entries = [_norm(e.path) for e in svc.env_files]
            if not (MACHINE_ENV_REF in entries and ENV_NAME in entries
                    and entries.index(MACHINE_ENV_REF) < entries.index(ENV_NAME)):
                line = svc.keys.get("env_file")
                msg = f"{where}: env_file must list {MACHINE_ENV_REF} then {ENV_NAME}"
                if line:
                    add("error", line, msg, "list them, in this order", tuple(ENV_FILE_FIX))
                else:
                    add("error", svc.line, msg, f"add under {sname}:", tuple("  " + x for x in ENV_FILE_FIX))
        for p in svc.ports:
            out += _check_port(svc, p, slots, supplies, add, where, over)
        for m in svc.volumes:
            _check_mount(c, svc, m, shipped, shipped_dirs, supplies, add, where)
        if svc.container_name is not None:
            add("warning", svc.container_name.line, f"{where}: container_name is global to the Docker daemon: "
                "a second deploy of this service (another machine-env on the same rootless daemon) clashes",
                "delete this line; compose names containers after the project")
        if svc.restart is None:
            add("warning", svc.line, f"{where}: no restart policy: the container stays down after a reboot",
                f"add under {sname}:", ("  restart: unless-stopped",))
    return out


# What tinsnip itself gives compose interpolation: machine.env's variables and .env's.
TINSNIP_VARS = {"TIN_SHEET", "TIN_SHEET_NUMBER", "TIN_MACHINE_NAME", "TIN_MACHINE_NUMBER", "TIN_SERVICE_NAME",
                "TIN_SERVICE_ENVIRONMENT", "TIN_ENV_NUMBER", "TIN_SERVICE_UID", "TIN_SERVICE_GID", "TIN_NAS_HOST",
                "TIN_NAS_PATH", "TIN_MOUNT", "DOCKER_HOST", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME",
                "TIN_CATALOG_SERVICE"} | {f"TIN_PORT_{i}" for i in range(MACHINE_PORTS)}


def _check_variables(c, sdir: Path, shipped: set) -> list[Finding]:
    """A variable the file needs (no default) that neither tinsnip nor a shipped env file sets: a warning
    here (its value may be one of the machine-env's secrets, known only at deploy), exit 2 at deploy."""
    from dotenv import dotenv_values

    known = set(TINSNIP_VARS)
    for svc in c.services.values():
        for e in svc.env_files:
            p = _norm(e.path)
            if p in shipped and p != ENV_NAME:
                known |= {k for k, v in dotenv_values(sdir / p).items() if v is not None}
    out, seen = [], set()
    for v in c.variables:
        if v.has_default or v.name in known or v.name in seen or re.fullmatch(r"TIN_PORT_\d+", v.name):
            continue  # (TIN_PORT_10 and beyond are errors of their own)
        seen.add(v.name)
        out.append(Finding("warning", c.path, v.line, f"${{{v.name}}} is set by no env file of the service",
                           f"set {v.name} in one of the service's own env files (listed under env_file), or as a "
                           f"secret of the machine-env (README: Secrets); unset, the deploy stops with exit 2",
                           c.source_line(v.line)))
    return out


def _norm(path: str) -> str:
    return path[2:] if path.startswith("./") else path


def _check_image(c, svc, sdir, shipped, shipped_dirs, add, where) -> list[Finding]:
    if svc.build is not None:
        ctx = svc.build.value
        rel = os.path.normpath(_norm(ctx)) if not ctx.startswith(("/", "http://", "https://", "git@")) else None
        dockerfile = svc.build_dockerfile or "Dockerfile"
        if rel is None or rel.startswith(".."):
            add("error", svc.build.line, f"{where}: build context {ctx} is outside the catalog service; tinsnip "
                "copies only the service's own directory to the Docker host",
                "use the app's published image (image: …) and delete build:, or ship the context in the service")
        elif (rel != "." and rel not in shipped_dirs) or os.path.normpath(os.path.join(rel, dockerfile)) not in shipped:
            add("error", svc.build.line, f"{where}: build context {ctx} (with {dockerfile}) is not shipped in the "
                "catalog service, so the Docker host cannot build it",
                "use the app's published image (image: …) and delete build:, or ship the Dockerfile and its context")
        return []
    if svc.image is None:
        add("error", svc.line, f"{where}: no image and no build", "add the app's published image: image: NAME:TAG")
        return []
    img = svc.image
    value = _resolve_defaults(img.value)
    if value is None:
        return []  # set by a variable: known at deploy
    if PLACEHOLDER.search(value) or not IMAGE_REF.match(value):
        add("error", img.line, f"{where}: image {value} is not an image reference (a placeholder?)",
            "write the image and tag to run, e.g. image: NAME:1.2.3")
        return []
    name, tag, digest = _image_name(value)
    if not digest and tag in (None, "latest"):
        add("warning", img.line, f"{where}: image {value} is {'untagged' if tag is None else 'latest'}: each deploy "
            "may run a different version, and a rollback has nothing to go back to", "pin a version tag",
            (f"image: {value.split(':')[0] if tag else value}:X.Y.Z",))
    return []


def _check_port(svc, p, slots, supplies, add, where, over) -> list[Finding]:
    for n in p.tin_port_indexes():
        if n >= MACHINE_PORTS:
            return []  # reported with the variables
    if "ports" in supplies:
        for off in range(p.size()):
            i = slots.get((svc.name, id(p), off))
            if i is not None and i >= MACHINE_PORTS and p.line not in over:
                over.add(p.line)
                add("error", p.line, f"{where}: the file publishes more ports than the machine-env's ten "
                    f"(this one would be TIN_PORT_{i})", "publish fewer ports (drop the ones no one connects to)")
        return []
    if p.tin_port_indexes():
        return []
    nums = p.published_numbers()
    low = [n for n in nums or [] if n < 1024]
    if low:
        add("error", p.line, f"{where}: host port {low[0]} is below 1024, which a rootless daemon cannot bind",
            "publish it on one of the machine-env's ports", (f'- "${{TIN_PORT_0}}:{p.target}"',))
    else:
        add("error", p.line, f"{where}: port {p.text} is not one of the machine-env's ports",
            "publish it on one of them", (f'- "${{TIN_PORT_0}}:{p.target}"',))
    return []


def _check_mount(c, svc, m, shipped, shipped_dirs, supplies, add, where) -> None:
    if m.type != "bind" or m.source is None:
        if m.is_named_volume and PLACEHOLDER.search(m.source):
            add("error", m.line, f"{where}: {m.source} is a placeholder path",
                "bind a path of the service instead: a named volume or ./name (tinsnip keeps both on the NAS)",
                (f"- {Path(m.target).name or 'data'}:{m.target}",) if not m.long else ())
            return
        if m.is_named_volume and "$" not in m.source and m.source not in c.volumes:
            add("error", m.line, f"{where}: volume {m.source} is not declared under the top-level volumes:",
                f"declare it (tinsnip binds it to the NAS): add `{m.source}:` under a top-level `volumes:`")
            return
        if m.is_named_volume and _is_database(svc, m.target):
            add("warning", m.line, f"{where}: a database's data directory ({m.target}) on a NAS volume: under "
                "all_squash its chown and chmod fail (Operation not permitted) and it will not start", DATABASE_FIX)
        return
    source = _resolve_defaults(m.source)
    if source is None:
        if _is_database(svc, m.target):
            add("warning", m.line, f"{where}: a database's data directory ({m.target}) on a bind set by "
                f"{m.source}: on the NAS, under all_squash, its chown and chmod fail", DATABASE_FIX)
        return
    if PLACEHOLDER.search(source):
        add("error", m.line, f"{where}: {source} is a placeholder path",
            "bind a path of the service instead: a named volume or ./name (tinsnip keeps both on the NAS)",
            (f"- {Path(m.target).name or 'data'}:{m.target}",) if not m.long else ())
        return
    if any(v in m.source for v in ("${" + x for x in MACHINE_PATH_VARS)) or any(
            m.source.startswith("$" + x) for x in MACHINE_PATH_VARS):
        return  # inside the machine-env (its NAS mount or home)
    if source.startswith("~"):
        add("error", m.line, f"{where}: {source} is in the Docker host's home directory, not on the NAS",
            "bind ./name instead (tinsnip keeps it on the NAS)")
        return
    if source.startswith("/"):
        if source in READABLE_HOST_FILES and m.read_only:
            return
        if source.rstrip("/").endswith("docker.sock"):
            add("error", m.line, f"{where}: {source} is the host's Docker socket; a machine-env has its own "
                "rootless daemon and no access to the host's", "delete this line")
            return
        add("error", m.line, f"{where}: {source} is a host path outside the machine-env (its user cannot be "
            "given it, and it would not move with the machine-env)",
            "bind ./name or a named volume instead (tinsnip keeps both on the NAS)",
            (f"- ./{Path(m.target).name or 'data'}:{m.target}",) if not m.long else ())
        return
    rel = os.path.normpath(_norm(source))
    if rel.startswith(".."):
        add("error", m.line, f"{where}: {source} is outside the catalog service", "bind ./name inside it instead")
        return
    if rel in shipped or rel in shipped_dirs:
        return  # shipped in the catalog: configuration, copied at deploy
    if _is_database(svc, m.target):
        add("warning", m.line, f"{where}: a database's data directory ({m.target}) on a NAS bind: under all_squash "
            "its chown and chmod fail (Operation not permitted) and it will not start", DATABASE_FIX)
    if "binds" not in supplies:
        add("error", m.line, f"{where}: {source} is not shipped in the catalog: it is runtime data, which a "
            "bind inside the service directory would not keep safe across deploys",
            "use a named volume (tinsnip binds it to the NAS)", (f"- {Path(rel).name}:{m.target}",))


def _is_database(svc, target: str) -> bool:
    if svc.image is None:
        return False
    value = _resolve_defaults(svc.image.value) or svc.image.value
    name = _image_name(value)[0]
    data = next((d for key, d in DATABASES.items() if name == key or name.startswith(key + "-")
                 or name.endswith("-" + key) or name.endswith("/" + key)), None)
    if data is None:
        return False
    t = target.rstrip("/")
    return t == data or t.startswith(data + "/") or data.startswith(t + "/")


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
