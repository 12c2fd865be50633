"""Per machine-env secrets: values from the admin, kept owner-only on the NAS, masked wherever they go.

A secret's value comes from the admin, never from the catalog or hosts.yaml: `tin machine.secret-set
--service S --env E --name NAME` reads it from stdin (or from `TINSNIP_SECRET_<NAME>` when stdin is not
a terminal and gives nothing, as in CI). It is kept on the NAS in the machine-env's own tree:

    {tree}/.machine/secrets/            directory, 0700, the machine-env's uid:gid
    {tree}/.machine/secrets/NAME        one file per secret, 0600, its value (no trailing newline)
    {tree}/.machine/secrets/registry@HOST:PORT
                                        a registry login: {"username": ..., "password": ...}

It travels only inside the script tinsnip sends on stdin (an Upload step marked `secret`), never in a
command line, so `ps` on the NAS or a Docker host never shows it.

Masking travels with the value: every value read or set is wrapped in `Secret`, whose `str`/`repr`/
JSON form is `[secret]`, and whose construction registers the raw value so that the engine's output,
step output, `--json` and error messages replace it with `[secret]` (see `mask`). An `Upload` whose
content holds a secret is built with `secret=True`, so its diff shows only that it changed.

For planners that need the values (a service deploy's compose interpolation):

    facts:  secrets.secrets_fact(m.name, m.nas_path)   one NAS probe; add it to the NAS job's facts
    values: secrets.for_deploy(facts, m, environ=os.environ)
            → dict NAME → Secret: the NAS values, overridden by TINSNIP_SECRET_<NAME> variables of
              this run. Call `.reveal()` only where the value is written (an Upload with secret=True,
              or an env file uploaded with secret=True); never put it in a Run's argv or a desc.
    names:  secrets.names(facts, m)        the names set on the NAS (for "who sets ${X}?" messages)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
from collections.abc import Mapping

from .errors import InputError
from .script import Fact
from .smep import MachineEnv
from .steps import Noop, Run, Step, Upload

MASK = "[secret]"
ENV_PREFIX = "TINSNIP_SECRET_"
NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MIN_LENGTH = 8  # a shorter value cannot be masked in output without masking ordinary words
REGISTRY_PREFIX = "registry@"

_known: set[str] = set()
_lock = threading.Lock()


class Secret:
    """A secret value. Shown as `[secret]` everywhere; `.reveal()` gives the value to the one place
    that writes it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        object.__setattr__(self, "_value", value)
        register(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):
        raise TypeError("a Secret is not serialised")

    def __setattr__(self, name, value):
        raise AttributeError("a Secret is read-only")


def register(value: str) -> None:
    """Remember a raw value so that `mask` hides it from every text tinsnip prints."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def mask(text: str) -> str:
    """Replace every known secret value in `text` with `[secret]` (longest first, so a value that
    contains another is hidden whole). Also hides the base64 `user:password` form of logins."""
    with _lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def json_default(value):
    """`json.dumps(..., default=secrets.json_default)`: a Secret is `[secret]`, anything else its str."""
    return MASK if isinstance(value, Secret) else str(value)


# -- names and values ----------------------------------------------------------------------------

def check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"secret name {name!r}: use capitals, digits and _ (starting with a letter, at most 64), "
                         f"as a compose file names it: ${{DB_PASSWORD}} → --name DB_PASSWORD")
    return name


def check_value(value: str, what: str) -> Secret:
    if value.endswith("\n"):
        value = value[:-1]
    if value.endswith("\r"):
        value = value[:-1]
    if not value:
        raise InputError(f"{what} is empty: pipe the value on stdin (printf %s \"$VALUE\" | tin ...)")
    if "\n" in value or "\0" in value:
        raise InputError(f"{what} has more than one line: a secret is one line")
    if len(value) < MIN_LENGTH:
        raise InputError(f"{what} is shorter than {MIN_LENGTH} characters: tinsnip could not keep so short a "
                         f"value out of its output; choose a longer one")
    return Secret(value)


def read_value(stdin, environ: Mapping[str, str], env_key: str, what: str) -> Secret:
    """The value from stdin when it is piped (or typed at a terminal, unechoed), else from `env_key`."""
    if stdin is not None and stdin.isatty():
        import getpass

        return check_value(getpass.getpass(f"{what}: "), what)
    data = stdin.read() if stdin is not None else ""
    if data:
        return check_value(data, what)
    if environ.get(env_key):
        return check_value(environ[env_key], what)
    raise InputError(f"no value for {what}: pipe it on stdin, or set {env_key} in the environment")


def from_environment(environ: Mapping[str, str]) -> dict[str, Secret]:
    """TINSNIP_SECRET_<NAME> variables of this run, as secrets (names checked)."""
    out = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and value:
            name = key[len(ENV_PREFIX):]
            if NAME_RE.match(name):
                out[name] = Secret(value)
    return out


# -- registry logins ------------------------------------------------------------------------------

def login_name(registry: str) -> str:
    return REGISTRY_PREFIX + registry


def login_value(username: str, password: Secret) -> Secret:
    text = json.dumps({"username": username, "password": password.reveal()}, sort_keys=True)
    secret = Secret(text)
    import base64

    register(base64.b64encode(f"{username}:{password.reveal()}".encode()).decode())
    return secret


def parse_login(value: Secret) -> tuple[str, Secret] | None:
    try:
        data = json.loads(value.reveal())
        return str(data["username"]), Secret(str(data["password"]))
    except (ValueError, KeyError, TypeError):
        return None


# -- on the NAS -----------------------------------------------------------------------------------

def secrets_dir(m: MachineEnv) -> str:
    return tree_secrets_dir(m.nas_path)


def tree_secrets_dir(tree: str) -> str:
    return f"{tree}/.machine/secrets"


def secret_path(m: MachineEnv, name: str) -> str:
    return f"{secrets_dir(m)}/{name}"


def secrets_fact(name: str, tree: str, values: bool = True) -> Fact:
    """`secrets:{name}`: the secrets directory's owner and mode, and each file's owner, mode and (with
    `values`) value, base64 on stdout, for the machine-env `name` whose NAS tree is `tree`. Read as
    root on the NAS; the answer comes back on the SSH channel's stdout, never in a command line."""
    d = shlex.quote(tree_secrets_dir(tree))
    body = 'printf "%s|%s\\n" "$(stat -c %u:%g:%a "$f")" "$(basename "$f")"'
    if values:
        body += '; base64 -w0 <"$f"; echo'
    cmd = (f"d={d}; if [ ! -d \"$d\" ]; then echo absent; exit 0; fi; echo \"dir $(stat -c %u:%g:%a \"$d\")\"; "
           f"for f in \"$d\"/*; do [ -f \"$f\" ] || continue; {body}; done; true")
    return Fact(f"secrets:{name}", cmd, _parse(values))


def _parse(values: bool):
    def parse(rc: int, out: str) -> dict:
        import base64

        lines = out.splitlines()
        if not lines or lines[0] == "absent":
            return {"dir": None, "files": {}}
        result = {"dir": lines[0].split(" ", 1)[1] if " " in lines[0] else None, "files": {}}
        i = 1
        while i < len(lines):
            stat, _, name = lines[i].partition("|")
            entry = {"stat": stat}
            if values:
                i += 1
                try:
                    entry["value"] = Secret(base64.b64decode(lines[i] if i < len(lines) else "").decode())
                except (ValueError, UnicodeDecodeError):
                    entry["value"] = None
            result["files"][name] = entry
            i += 1
        return result
    return parse


def names(facts: dict, m: MachineEnv) -> list[str]:
    """The app secrets set for a machine-env on the NAS (not the registry logins)."""
    files = (facts.get(f"secrets:{m.name}") or {}).get("files", {})
    return sorted(n for n in files if NAME_RE.match(n))


def logins(facts: dict, m: MachineEnv) -> dict[str, tuple[str, Secret]]:
    """HOST:PORT → (username, password) of the machine-env's registry logins on the NAS."""
    files = (facts.get(f"secrets:{m.name}") or {}).get("files", {})
    out = {}
    for name, entry in files.items():
        if name.startswith(REGISTRY_PREFIX) and entry.get("value") is not None:
            parsed = parse_login(entry["value"])
            if parsed:
                out[name[len(REGISTRY_PREFIX):]] = parsed
    return out


def for_deploy(facts: dict, m: MachineEnv, environ: Mapping[str, str] | None = None) -> dict[str, Secret]:
    """NAME → Secret for compose interpolation: the NAS's secrets, overridden by this run's
    TINSNIP_SECRET_<NAME> variables."""
    files = (facts.get(f"secrets:{m.name}") or {}).get("files", {})
    out = {n: e["value"] for n, e in files.items() if NAME_RE.match(n) and e.get("value") is not None}
    out.update(from_environment(os.environ if environ is None else environ))
    return dict(sorted(out.items()))


def plan_set(facts: dict, m: MachineEnv, name: str, value: Secret, host: str = "nas") -> list[Step]:
    """The steps that store one secret (dir 0700, file 0600, both the machine-env's uid:gid)."""
    state = facts.get(f"secrets:{m.name}") or {"dir": None, "files": {}}
    owner = f"{m.uid}:{m.gid}"
    steps: list[Step] = []
    d = secrets_dir(m)
    if state["dir"] != f"{owner}:700":
        steps.append(Run(("install", "-d", "-m", "0700", "-o", str(m.uid), "-g", str(m.gid), d),
                         f"{m.name}: secrets directory {d} (0700, {owner})"))
    entry = state["files"].get(name)
    label = "registry login for " + name[len(REGISTRY_PREFIX):] if name.startswith(REGISTRY_PREFIX) else f"secret {name}"
    if entry and entry.get("value") == value and entry["stat"] == f"{owner}:600":
        steps.append(Noop(f"{m.name}: {label} unchanged"))
    else:
        steps.append(Upload(secret_path(m, name), value.reveal(), f"{m.name}: {label} "
                            + ("set" if entry is None else "changed"),
                            mode=0o600, owner=owner, old=None, secret=True))
    return steps


def plan_unset(facts: dict, m: MachineEnv, name: str) -> list[Step]:
    files = (facts.get(f"secrets:{m.name}") or {}).get("files", {})
    label = "registry login for " + name[len(REGISTRY_PREFIX):] if name.startswith(REGISTRY_PREFIX) else f"secret {name}"
    if name not in files:
        return [Noop(f"{m.name}: no {label}")]
    return [Run(("rm", "-f", "--", secret_path(m, name)), f"{m.name}: remove {label}")]
