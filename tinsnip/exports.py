"""/etc/exports as tinsnip sees it: its own marked lines, and everyone else's kept byte for byte. Pure.

DSM owns /etc/exports too, so tinsnip only ever touches the lines it manages. Each managed line is
preceded by a marker comment naming its machine-env:

    # tinsnip: dynamicalsystem/gazette-prod
    /volume1/dynamicalsystem/gazette/prod 198.18.0.20(rw,sync,no_subtree_check,all_squash,anonuid=10100,anongid=10100)

A whole-line comment is accepted by every exportfs (checked with nfs-utils' real `exportfs -ra`), and
it leaves the export line itself exactly as DSM or an admin would write it. An unmarked line with
exactly a machine-env's path and client (say, after DSM rewrote the file and dropped the comments) is
adopted rather than duplicated. A marker whose line has gone (deleted by hand) is drift: the line is
"missing", and the next setup puts it back in the same place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .render import render

MARKER_PREFIX = "# tinsnip:"
MARKER_RE = re.compile(r"^#\s*tinsnip:\s*([a-z][a-z0-9-]*)/([a-z][a-z0-9-]*)\s*$")
OPTIONS = "rw,sync,no_subtree_check,all_squash,anonuid={uid},anongid={gid}"


def key_of(sheet: str, machine: str, env: str) -> str:
    """The name a managed line is filed under: 'sheet/machine-env'."""
    return f"{sheet}/{machine}-{env}"


def marker(key: str) -> str:
    return f"{MARKER_PREFIX} {key}\n"


def render_line(path: str, client: str, uid: int, gid: int | None = None) -> str:
    """One export line for a machine-env and one client Docker host (never '*', never no_root_squash)."""
    if not client or client == "*" or any(ch.isspace() or ch in "()#" for ch in client):
        raise ValueError(f"invalid NFS client {client!r}: name one Docker host's address")
    gid = uid if gid is None else gid
    return render("exports.j2", path=path, client=client, uid=uid, gid=gid).rstrip("\n") + "\n"


def _unescape(token: str) -> str:
    """Paths in exports may be double-quoted and may use \\040-style octal escapes (DSM does both)."""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        token = token[1:-1]
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), token)


def _tokens(text: str) -> list[str]:
    """Split an export line into whitespace-separated tokens, honouring double quotes; stop at '#'."""
    out: list[str] = []
    cur = ""
    quoted = False
    started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            cur += ch
            started = True
        elif not quoted and ch == "#" and not started:
            break
        elif not quoted and ch.isspace():
            if started:
                out.append(cur)
            cur, started = "", False
        else:
            cur += ch
            started = True
    if started:
        out.append(cur)
    return out


@dataclass(frozen=True)
class ExportLine:
    """What an export line says: its path and, per client, the option string (None: no options)."""

    path: str
    clients: tuple[tuple[str, str | None], ...]

    @property
    def client_names(self) -> list[str]:
        return [c for c, _ in self.clients]


def parse_line(text: str) -> ExportLine | None:
    """Parse one logical export line; None for blanks, comments and anything that is not an export."""
    stripped = text.replace("\\\n", " ").strip()
    if not stripped or stripped.startswith("#"):
        return None
    tokens = _tokens(stripped)
    if not tokens or not tokens[0].strip('"').startswith("/"):
        return None
    clients = []
    for tok in tokens[1:]:
        if tok.startswith("-"):  # default options ("-ro"), not a client
            continue
        name, paren, rest = tok.partition("(")
        clients.append((name, rest.rstrip(")") if paren else None))
    return ExportLine(_unescape(tokens[0]), tuple(clients))


@dataclass
class Item:
    """A piece of the file. kind: 'raw' (kept byte for byte), 'managed' (marker + line) or 'orphan'
    (a marker whose line is gone)."""

    kind: str
    text: str  # the exact bytes of the whole item (marker and line for 'managed')
    key: str | None = None
    line: str | None = None  # the export line of a managed item
    parsed: ExportLine | None = None


@dataclass
class Exports:
    items: list[Item] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(i.text for i in self.items)

    def managed(self, key: str | None = None) -> list[Item]:
        return [i for i in self.items if i.kind in ("managed", "orphan") and (key is None or i.key == key)]

    def foreign(self) -> list[Item]:
        """Lines tinsnip does not manage (comments and blank lines included)."""
        return [i for i in self.items if i.kind == "raw"]

    def keys(self) -> list[str]:
        seen: list[str] = []
        for i in self.managed():
            if i.key not in seen:
                seen.append(i.key)
        return seen


def _logical_lines(text: str) -> list[str]:
    """Physical lines joined across backslash continuations, each keeping its exact bytes."""
    out: list[str] = []
    buf = ""
    for line in text.splitlines(keepends=True):
        buf += line
        if line.endswith("\\\n") and not line.lstrip().startswith("#"):
            continue
        out.append(buf)
        buf = ""
    if buf:
        out.append(buf)
    return out


def parse(text: str | None) -> Exports:
    """Split /etc/exports into items; `parse(t).text == t` for every input."""
    doc = Exports()
    lines = _logical_lines(text or "")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = MARKER_RE.match(line.rstrip("\r\n"))
        if m:
            key = f"{m.group(1)}/{m.group(2)}"
            nxt = lines[i + 1] if i + 1 < len(lines) else None
            parsed = parse_line(nxt) if nxt is not None else None
            if parsed is not None:
                doc.items.append(Item("managed", line + nxt, key, nxt, parsed))
                i += 2
                continue
            doc.items.append(Item("orphan", line, key))
            i += 1
            continue
        doc.items.append(Item("raw", line, parsed=parse_line(line)))
        i += 1
    return doc


def _adoptable(item: Item, path: str, clients: list[str]) -> bool:
    """An unmarked line with exactly this path and one of these clients (and nothing else) is ours."""
    p = item.parsed
    return (item.kind == "raw" and p is not None and p.path == path and len(p.clients) == 1
            and p.clients[0][0] in clients)


def merge(text: str | None, key: str, path: str, lines: list[str], adopt_clients: list[str] | None = None) -> str:
    """The file with `key`'s managed lines replaced by `lines` (each a rendered export line).

    Every other byte stays. The new lines go where the first old one was (or the first adoptable
    unmarked line), else at the end. `lines=[]` removes the machine-env's lines (and unmarked lines
    with its path and one of `adopt_clients`).
    """
    doc = parse(text)
    wanted_clients = [c for ln in lines for c in (parse_line(ln).client_names if parse_line(ln) else [])]
    adopt = list(adopt_clients or []) + wanted_clients
    block = "".join(marker(key) + ln for ln in lines)
    out: list[str] = []
    placed = False
    for item in doc.items:
        ours = (item.kind in ("managed", "orphan") and item.key == key) or _adoptable(item, path, adopt)
        if not ours:
            out.append(item.text)
            continue
        if not placed:
            out.append(block)
            placed = True
    if not placed and block:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(block)
    return "".join(out)


@dataclass(frozen=True)
class Drift:
    """How one machine-env's lines in the file compare with what they should be."""

    key: str
    missing: tuple[str, ...] = ()  # clients with no line at all
    changed: tuple[tuple[str, str, str], ...] = ()  # (client, found line, expected line)
    extra: tuple[str, ...] = ()  # managed lines for clients no longer wanted
    unmarked: tuple[str, ...] = ()  # clients whose line is there but has lost its marker
    orphans: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.extra or self.unmarked or self.orphans)

    def describe(self) -> list[str]:
        out = [f"export for {c} missing" for c in self.missing]
        out += [f"export for {c} changed: found {found.strip()!r}, expected {exp.strip()!r}"
                for c, found, exp in self.changed]
        out += [f"export for {c} is no longer wanted (not this machine-env's Docker host)" for c in self.extra]
        out += [f"export for {c} has lost its '# tinsnip:' marker" for c in self.unmarked]
        if self.orphans:
            out.append(f"{self.orphans} marker line(s) without their export line (line deleted by hand?)")
        return out


def drift(text: str | None, key: str, path: str, expected: dict[str, str]) -> Drift:
    """Compare the file with `expected` ({client: rendered line})."""
    doc = parse(text)
    found: dict[str, str] = {}
    unmarked: list[str] = []
    orphans = 0
    extra: list[str] = []
    for item in doc.items:
        if item.kind == "orphan" and item.key == key:
            orphans += 1
        elif item.kind == "managed" and item.key == key:
            for client in item.parsed.client_names:
                if client in expected and client not in found:
                    found[client] = item.line
                else:
                    extra.append(client)
        elif _adoptable(item, path, list(expected)):
            client = item.parsed.clients[0][0]
            if client not in found:
                found[client] = item.text
                unmarked.append(client)
    missing = [c for c in expected if c not in found]
    changed = [(c, found[c], expected[c]) for c in expected
               if c in found and found[c].rstrip("\r\n") != expected[c].rstrip("\n")]
    return Drift(key, tuple(missing), tuple(changed), tuple(extra), tuple(unmarked), orphans)


def parse_active(text: str) -> set[tuple[str, str]]:
    """(path, client) pairs from `exportfs -v` (path and client on one line, or on two)."""
    pairs: set[tuple[str, str]] = set()
    path = None
    for tok in text.split():
        if tok.startswith("/"):
            path = _unescape(tok)
        elif path is not None and "(" in tok:
            pairs.add((path, tok.split("(", 1)[0]))
        elif path is not None and tok and not tok.startswith("("):
            pairs.add((path, tok))
    return pairs
