"""One docker compose file, parsed into a model whose every node knows its source line. Pure code.

`parse(text, path)` reads a compose file with PyYAML's composer (nodes carry their marks) and builds:

  Compose            path, text, lines; services {name: Service}; volumes, networks, secrets, configs
                     {name: Top}; variables [Var] (every interpolation, with its line); line_of(key path)
  Service            name, line; keys {key: line of the key}; raw (the plain value, as PyYAML builds it);
                     image, build, user, container_name, restart, network_mode, privileged (Scalar or
                     None); env_files [EnvFile]; environment [EnvVar]; ports [Port]; volumes [Mount];
                     cap_add, devices, sysctls [Scalar]
  Scalar             value (the text as written), line, column, tag (what PyYAML resolved it to:
                     "int", "str", "bool"...), quoted (True when written in quotes)
  Port               line, text (the short form, or "{...}" for a long one), long; host_ip, published,
                     target (strings as written, interpolation kept symbolic: "${TIN_PORT_0}" stays
                     "${TIN_PORT_0}"; published None for a container-only port), protocol ("tcp"
                     unless given), mode; published_numbers() / target_numbers() for literal ones
  Mount              line (of the source, in the long form), text, long; type ("volume", "bind", "tmpfs", "npipe", "cluster"), source
                     (None for an anonymous volume or tmpfs), target, read_only; is_relative_bind,
                     is_absolute_bind, is_symbolic (source starts with an interpolation)
  EnvFile            path (as written), line, required
  EnvVar             name, value (None when only named), line
  Top                name, line, spec (the plain mapping, {} when empty), external
  Var                name, line, column, op ("", ":-", "-", ":?", "?", ":+", "+"), arg (the default,
                     message or alternative, as written), text (the whole reference)

The text of a scalar is kept as written, not as PyYAML resolves it: docker compose reads YAML 1.2,
where an unquoted `8080:80` or `10:10` is a string, while PyYAML reads YAML 1.1, where it is a base-60
integer (`10:10` is 610). Scalar.tag tells which ones PyYAML would have misread.

Interpolation follows compose's own syntax: `$$` is a literal `$`; `$VAR`, `${VAR}`, `${VAR:-default}`,
`${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}`, defaults may nest
(`${A:-${B}}`). Only values are scanned (keys are not interpolated), so a commented-out line never
counts. Merge keys (`<<: *anchor`) are resolved; a merged node keeps the line of its anchor.

What tinsnip's generated override (plans/service.py, docker-compose.override.yml) supplies, so that a
catalog service need not say it (the catalog check in catalog.py relies on this):
  - env files: every service gets `../../.machine/machine.env` then `.env` (tinsnip's ports file);
  - ports: every published port (`ports:` entries, short or long, ranges one port each) is mapped onto
    one of the machine-env's TIN_PORT_n, as `port_slots()` assigns them: a port written as
    `${TIN_PORT_n}` keeps n, the others take the lowest free n in file order; the same published
    number for tcp and udp shares one n;
  - volumes: every named volume (not `external`) and every relative bind whose source the catalog
    service does not ship is bound into the machine-env's data tree on the NAS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

TAG_PREFIX = "tag:yaml.org,2002:"
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PORTS_IN_RANGE = 100  # beyond this a range is reported, not expanded


class ComposeError(ValueError):
    """The text is not a compose file the model can read; `line` is 1-based, or None."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scalar:
    value: str
    line: int
    column: int = 0
    tag: str = "str"
    quoted: bool = False

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Var:
    name: str
    line: int
    column: int
    op: str = ""
    arg: str | None = None
    text: str = ""

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-", ":+", "+")

    @property
    def required(self) -> bool:
        return self.op in (":?", "?")


@dataclass(frozen=True)
class Port:
    line: int
    text: str
    target: str
    published: str | None = None
    host_ip: str | None = None
    protocol: str = "tcp"
    mode: str | None = None
    long: bool = False

    @property
    def is_symbolic(self) -> bool:
        return "$" in (self.published or "") or "$" in self.target

    def published_numbers(self) -> list[int] | None:
        """The literal host ports ([] for a container-only port), None when interpolated or malformed."""
        if self.published is None:
            return []
        return _port_range(self.published)

    def target_numbers(self) -> list[int] | None:
        return _port_range(self.target)

    def tin_port_indexes(self) -> list[int]:
        """n of every `TIN_PORT_n` the published side names."""
        return [int(n) for n in re.findall(r"TIN_PORT_(\d+)", self.published or "")]

    def size(self) -> int:
        """How many host ports it publishes (a range counts each; an unknown range counts as its targets)."""
        for numbers in (self.published_numbers(), self.target_numbers()):
            if numbers:
                return len(numbers)
        return 1


@dataclass(frozen=True)
class Mount:
    line: int
    text: str
    target: str
    type: str = "volume"
    source: str | None = None
    read_only: bool = False
    long: bool = False

    @property
    def is_symbolic(self) -> bool:
        return self.source is not None and self.source.startswith("$")

    @property
    def is_relative_bind(self) -> bool:
        """A bind of a path relative to the compose file (`./data`, or `data` in the long form)."""
        return self.type == "bind" and self.source is not None and not self.source.startswith(("/", "~", "$"))

    @property
    def is_absolute_bind(self) -> bool:
        return self.type == "bind" and self.source is not None and self.source.startswith("/")

    @property
    def is_named_volume(self) -> bool:
        return self.type == "volume" and self.source is not None


@dataclass(frozen=True)
class EnvFile:
    path: str
    line: int
    required: bool = True


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None
    line: int


@dataclass(frozen=True)
class Top:
    name: str
    line: int
    spec: dict = field(default_factory=dict)

    @property
    def external(self) -> bool:
        return bool(self.spec.get("external"))


@dataclass(frozen=True)
class Service:
    name: str
    line: int
    keys: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    image: Scalar | None = None
    build: Scalar | None = None  # the context as written ("." for a mapping without one), line of `build:`
    build_dockerfile: str | None = None
    user: Scalar | None = None
    container_name: Scalar | None = None
    restart: Scalar | None = None
    network_mode: Scalar | None = None
    privileged: Scalar | None = None
    env_files: tuple[EnvFile, ...] = ()
    environment: tuple[EnvVar, ...] = ()
    ports: tuple[Port, ...] = ()
    volumes: tuple[Mount, ...] = ()
    cap_add: tuple[Scalar, ...] = ()
    devices: tuple[Scalar, ...] = ()
    sysctls: tuple[Scalar, ...] = ()

    def key_line(self, key: str) -> int:
        return self.keys.get(key, self.line)


@dataclass(frozen=True)
class Compose:
    path: str
    text: str
    raw: dict
    services: dict  # name → Service, in file order
    volumes: dict = field(default_factory=dict)  # name → Top
    networks: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    configs: dict = field(default_factory=dict)
    variables: tuple[Var, ...] = ()
    keys: dict = field(default_factory=dict)  # top-level key → line

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def source_line(self, line: int) -> str:
        """The text of a 1-based line ("" past the end)."""
        lines = self.lines
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def named_volumes(self) -> tuple[str, ...]:
        """The top-level named volumes tinsnip binds to the NAS (external ones belong to someone else)."""
        return tuple(n for n, t in self.volumes.items() if not t.external)

    def variable_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v.name for v in self.variables))

    def images(self) -> tuple[str, ...]:
        return tuple(sorted({s.image.value for s in self.services.values() if s.image is not None}))


# -- interpolation -------------------------------------------------------------------------------


def find_variables(value: str) -> list[tuple[int, Var]]:
    """Every interpolation in one string: (offset, Var with line 0), `$$` skipped, nested defaults too."""
    found: list[tuple[int, Var]] = []
    i = 0
    while True:
        i = value.find("$", i)
        if i < 0 or i + 1 >= len(value):
            return found
        nxt = value[i + 1]
        if nxt == "$":
            i += 2
            continue
        if nxt == "{":
            end = _closing_brace(value, i + 2)
            body = value[i + 2:end] if end >= 0 else value[i + 2:]
            m = VAR_NAME.match(body)
            if m:
                rest = body[m.end():]
                op = next((o for o in (":-", ":?", ":+", "-", "?", "+") if rest.startswith(o)), "")
                arg = rest[len(op):] if op else None
                text = value[i:end + 1] if end >= 0 else value[i:]
                found.append((i, Var(m.group(0), 0, 0, op, arg, text)))
                if arg:
                    found += [(i + 2 + m.end() + len(op) + off, v) for off, v in find_variables(arg)]
            i = end + 1 if end >= 0 else len(value)
            continue
        m = VAR_NAME.match(value, i + 1)
        if m:
            found.append((i, Var(m.group(0), 0, 0, "", None, "$" + m.group(0))))
            i = m.end()
        else:
            i += 1


def _closing_brace(value: str, start: int) -> int:
    depth = 1
    j = start
    while j < len(value):
        if value.startswith("$$", j):
            j += 2
            continue
        if value.startswith("${", j):
            depth += 1
            j += 2
            continue
        if value[j] == "}":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


# -- reading nodes -------------------------------------------------------------------------------


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _tag(node: Node) -> str:
    return node.tag[len(TAG_PREFIX):] if node.tag.startswith(TAG_PREFIX) else node.tag


def _scalar(node: Node) -> Scalar | None:
    if not isinstance(node, ScalarNode):
        return None
    return Scalar(node.value, _line(node), node.start_mark.column, _tag(node), node.style in ("'", '"'))


def _items(node: Node) -> list[tuple[ScalarNode, Node]]:
    """A mapping's (key, value) pairs whose keys are scalars."""
    if not isinstance(node, MappingNode):
        return []
    return [(k, v) for k, v in node.value if isinstance(k, ScalarNode)]


def _get(node: Node, key: str) -> Node | None:
    for k, v in _items(node):
        if k.value == key:
            return v
    return None


def _text(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and _tag(node) != "null" else None


def _seq(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def _plain(node: Node):
    """The plain Python value of a node, as PyYAML's safe loader builds it."""
    return SafeConstructor().construct_document(node)


# -- ports ---------------------------------------------------------------------------------------


def _port_range(text: str) -> list[int] | None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text.strip())
    if not m:
        return None
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if hi < lo or hi - lo >= MAX_PORTS_IN_RANGE:
        return None
    return list(range(lo, hi + 1))


def _split_short_port(text: str) -> tuple[str | None, str | None, str, str]:
    """`[[host_ip:]published:]target[/protocol]` → (host_ip, published, target, protocol).

    Interpolations may hold colons (`${P:-8080}`), so the split is on colons outside `${...}`;
    an IPv6 host address is written in brackets (`[::1]:8080:80`)."""
    body, protocol = text, "tcp"
    slash = _outside_braces(text, "/")
    if slash:
        body, protocol = text[:slash[-1]], text[slash[-1] + 1:]
    host_ip = None
    if body.startswith("["):
        close = body.find("]")
        if close > 0 and body[close + 1:close + 2] == ":":
            host_ip, body = body[1:close], body[close + 2:]
    colons = _outside_braces(body, ":")
    if not colons:
        return host_ip, None, body, protocol
    if len(colons) == 1:
        return host_ip, body[:colons[0]], body[colons[0] + 1:], protocol
    return body[:colons[-2]], body[colons[-2] + 1:colons[-1]], body[colons[-1] + 1:], protocol


def _outside_braces(text: str, ch: str) -> list[int]:
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}" and depth:
            depth -= 1
        elif text[i] == ch and not depth:
            out.append(i)
        i += 1
    return out


def _ports(node: Node | None) -> tuple[Port, ...]:
    ports = []
    for item in _seq(node):
        if isinstance(item, ScalarNode):
            host_ip, published, target, protocol = _split_short_port(item.value)
            ports.append(Port(_line(item), item.value, target, published or None, host_ip or None, protocol))
        elif isinstance(item, MappingNode):
            spec = {k.value: _text(v) for k, v in _items(item)}
            ports.append(Port(_line(item), "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}",
                              spec.get("target") or "", spec.get("published") or None, spec.get("host_ip") or None,
                              spec.get("protocol") or "tcp", spec.get("mode"), long=True))
    return tuple(ports)


# -- volumes -------------------------------------------------------------------------------------


def _short_mount(text: str) -> tuple[str | None, str, str]:
    """`[source:]target[:mode]` → (source, target, mode). A source may hold `${A:-x}`, kept whole."""
    colons = _outside_braces(text, ":")
    if not colons:
        return None, text, ""
    if len(colons) == 1:
        return text[:colons[0]], text[colons[0] + 1:], ""
    return text[:colons[0]], text[colons[0] + 1:colons[1]], text[colons[1] + 1:]


def _source_type(source: str) -> str:
    """A short-form source is a bind when it is a path (compose: starts with `.`, `/` or `~`)."""
    if source.startswith((".", "/", "~")):
        return "bind"
    if source.startswith("$"):  # an interpolation: its value decides; most are paths
        return "bind"
    return "volume"


def _mounts(node: Node | None) -> tuple[Mount, ...]:
    mounts = []
    for item in _seq(node):
        if isinstance(item, ScalarNode):
            source, target, mode = _short_mount(item.value)
            kind = _source_type(source) if source else "volume"
            ro = "ro" in mode.split(",")
            mounts.append(Mount(_line(item), item.value, target, kind, source or None, ro))
        elif isinstance(item, MappingNode):
            spec = {k.value: v for k, v in _items(item)}
            ro = _text(spec.get("read_only")) in ("true", "True", "yes")
            src = spec.get("source")  # a message points at the source line, the one to change
            mounts.append(Mount(_line(src) if src is not None else _line(item), "{...}", _text(spec.get("target")) or "",
                                _text(spec.get("type")) or "volume", _text(spec.get("source")) or None, ro,
                                long=True))
    return tuple(mounts)


# -- env files and environment -------------------------------------------------------------------


def _env_files(node: Node | None) -> tuple[EnvFile, ...]:
    if isinstance(node, ScalarNode):
        return (EnvFile(node.value, _line(node)),) if _text(node) is not None else ()
    files = []
    for item in _seq(node):
        if isinstance(item, ScalarNode):
            files.append(EnvFile(item.value, _line(item)))
        elif isinstance(item, MappingNode):
            path = _text(_get(item, "path"))
            req = _text(_get(item, "required"))
            if path is not None:
                files.append(EnvFile(path, _line(item), req not in ("false", "False", "no")))
    return tuple(files)


def _environment(node: Node | None) -> tuple[EnvVar, ...]:
    out = []
    if isinstance(node, MappingNode):
        for k, v in _items(node):
            out.append(EnvVar(k.value, _text(v), _line(k)))
    for item in _seq(node):
        if isinstance(item, ScalarNode):
            name, eq, value = item.value.partition("=")
            out.append(EnvVar(name, value if eq else None, _line(item)))
    return tuple(out)


def _scalars(node: Node | None) -> tuple[Scalar, ...]:
    """A list of scalars, or a mapping's entries as `key=value` scalars (sysctls take both forms)."""
    if isinstance(node, MappingNode):
        return tuple(Scalar(f"{k.value}={_text(v) or ''}", _line(k), k.start_mark.column) for k, v in _items(node))
    return tuple(s for s in (_scalar(i) for i in _seq(node)) if s is not None)


# -- a service -----------------------------------------------------------------------------------


def _service(name: str, key: ScalarNode, node: Node) -> Service:
    keys = {k.value: _line(k) for k, _ in _items(node)}
    build_node = _get(node, "build")
    build = dockerfile = None
    if build_node is not None and _tag(build_node) != "null":
        if isinstance(build_node, ScalarNode):
            build = Scalar(build_node.value, keys["build"])
        else:
            build = Scalar(_text(_get(build_node, "context")) or ".", keys["build"])
            dockerfile = _text(_get(build_node, "dockerfile"))

    def scalar(k: str) -> Scalar | None:
        n = _get(node, k)
        return _scalar(n) if n is not None and _tag(n) != "null" else None

    return Service(
        name=name, line=_line(key), keys=keys, raw=_plain(node) if isinstance(node, MappingNode) else {},
        image=scalar("image"), build=build, build_dockerfile=dockerfile, user=scalar("user"),
        container_name=scalar("container_name"), restart=scalar("restart"), network_mode=scalar("network_mode"),
        privileged=scalar("privileged"), env_files=_env_files(_get(node, "env_file")),
        environment=_environment(_get(node, "environment")), ports=_ports(_get(node, "ports")),
        volumes=_mounts(_get(node, "volumes")), cap_add=_scalars(_get(node, "cap_add")),
        devices=_scalars(_get(node, "devices")), sysctls=_scalars(_get(node, "sysctls")))


def _tops(node: Node | None) -> dict:
    tops = {}
    for k, v in _items(node):
        spec = _plain(v) if isinstance(v, MappingNode) else {}
        tops[k.value] = Top(k.value, _line(k), spec if isinstance(spec, dict) else {})
    return tops


def _variables(root: Node, lines: list[str]) -> tuple[Var, ...]:
    """Every interpolation in the values of the file, each with the line it is written on."""
    out: list[Var] = []
    seen_nodes: set[int] = set()

    def walk(node: Node) -> None:
        if id(node) in seen_nodes:  # an alias: its anchor was scanned already
            return
        seen_nodes.add(id(node))
        if isinstance(node, ScalarNode):
            for _, var in find_variables(node.value):
                out.append(_place(var, node, lines))
        elif isinstance(node, SequenceNode):
            for item in node.value:
                walk(item)
        elif isinstance(node, MappingNode):
            for _, v in node.value:
                walk(v)

    walk(root)
    return tuple(out)


def _place(var: Var, node: ScalarNode, lines: list[str]) -> Var:
    """The line and column a variable of a (possibly multi-line) scalar is written on."""
    first, last = node.start_mark.line, max(node.end_mark.line, node.start_mark.line)
    for ln in range(first, min(last, len(lines) - 1) + 1):
        text = lines[ln]
        col = text.find(var.text, node.start_mark.column if ln == first else 0)
        if col >= 0 and not text.lstrip().startswith("#"):
            return Var(var.name, ln + 1, col, var.op, var.arg, var.text)
    return Var(var.name, first + 1, node.start_mark.column, var.op, var.arg, var.text)


# -- parsing -------------------------------------------------------------------------------------


def parse(text: str, path: str = "docker-compose.yml") -> Compose:
    """The model of one compose file. ComposeError (with a line where known) when it is not one."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            raw = loader.construct_document(root)  # also resolves merge keys in the nodes
        else:
            raw = None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ComposeError(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    if root is None or not isinstance(root, MappingNode) or not isinstance(raw, dict):
        raise ComposeError("empty or not a mapping; a compose file with a `services:` mapping is needed", 1)
    services_node = _get(root, "services")
    if not isinstance(services_node, MappingNode) or not services_node.value:
        line = next((_line(k) for k, _ in _items(root) if k.value == "services"), 1)
        raise ComposeError("no `services:` mapping", line)
    services = {}
    for k, v in _items(services_node):
        if not isinstance(v, MappingNode):
            raise ComposeError(f"service {k.value!r} is not a mapping", _line(k))
        services[k.value] = _service(k.value, k, v)
    return Compose(
        path=path, text=text, raw=raw, services=services,
        volumes=_tops(_get(root, "volumes")), networks=_tops(_get(root, "networks")),
        secrets=_tops(_get(root, "secrets")), configs=_tops(_get(root, "configs")),
        variables=_variables(root, text.splitlines()),
        keys={k.value: _line(k) for k, _ in _items(root)})


# -- what the override maps ----------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One host port a service publishes, and the TIN_PORT_n the override maps it onto."""

    service: str
    port: Port
    offset: int  # which port of a range (0 for a single port)
    index: int  # n of TIN_PORT_n
    target: str  # the container port of this one ("80", or the n-th of a target range)


def port_slots(c: Compose) -> list[Slot]:
    """Every published port of the file with the TIN_PORT_n it gets (see the module's docstring).

    A port written as `${TIN_PORT_n}` keeps n; the others, in file order, take the lowest n that no
    port of the file names. The same service publishing the same host port (or, container-only, the
    same container port) for several protocols shares one n. n may reach 10 and beyond: the catalog
    check refuses that (a machine-env has ten ports)."""
    fixed: list[tuple[str, Port, int, int, str]] = []
    free: list[tuple[str, Port, int, str, tuple]] = []
    for sname, svc in c.services.items():
        for p in svc.ports:
            targets = p.target_numbers()
            named = p.tin_port_indexes()
            if named:
                fixed.append((sname, p, 0, named[0], p.target))
                continue
            published = p.published_numbers()
            count = p.size()
            for off in range(count):
                target = str(targets[off]) if targets and off < len(targets) else p.target
                if published:
                    key = (sname, "host", p.host_ip or "", published[off])
                elif p.published is None:
                    key = (sname, "container", target)
                else:  # interpolated host port, e.g. ${WEB_PORT:-8080}
                    key = (sname, "var", p.published, off)
                free.append((sname, p, off, target, key))
    used = {i for *_, i, _ in fixed}
    slots = [Slot(s, p, off, i, t) for s, p, off, i, t in fixed]
    by_key: dict[tuple, int] = {}
    n = 0
    for sname, p, off, target, key in free:
        if key not in by_key:
            while n in used:
                n += 1
            by_key[key] = n
            used.add(n)
        slots.append(Slot(sname, p, off, by_key[key], target))
    return slots


# What the generated override supplies today (plans/service_override.py):
# "volumes" named volumes onto the NAS; "env_files" machine.env and .env for every service; "ports" every
# published port onto a TIN_PORT_n (port_slots); "binds" relative binds not shipped in the catalog onto
# the NAS. The catalog check requires from a compose file only what is not in this set.
OVERRIDE_SUPPLIES = frozenset({"volumes", "env_files", "ports", "binds"})
ALL_SUPPLIES = frozenset({"volumes", "env_files", "ports", "binds"})
