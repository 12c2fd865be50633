"""How a machine-env's rootless daemon reaches registries: the inventory's CAs for each Docker host. Pure code.

A rootless daemon reads its trusted registry CAs from `~/.config/docker/certs.d/HOST:PORT/ca.crt` of
its user (never from /etc/docker/certs.d, which only the rootful daemon reads), live, with no restart.
The mirrors for Docker Hub names go into the daemon's own daemon.json (plans/machine.py writes it);
a change of mirrors alone needs only a reload (SIGHUP), not a restart.
"""

from __future__ import annotations

import base64
import json
import shlex

from ..inventory import DockerHost
from ..script import Fact
from ..smep import MachineEnv
from ..steps import Run, Step, Upload, sha256

OK, MISSING, DRIFTED = "ok", "missing", "drifted"


def ca_path(m: MachineEnv, registry: str) -> str:
    return f"{m.home}/.config/docker/certs.d/{registry}/ca.crt"


def facts(host: DockerHost, machine_envs: list[MachineEnv]) -> list[Fact]:
    if not host.registry_cas:
        return []
    out = []
    for m in machine_envs:
        reads = " ".join(shlex.quote(ca_path(m, reg)) for reg, _ in host.registry_cas)
        cmd = f'for f in {reads}; do if [ -f "$f" ]; then base64 -w0 <"$f"; else printf -; fi; echo; done'
        out.append(Fact(f"cas:{m.name}", cmd, _files))
    return out


def _files(rc: int, out: str) -> list[str | None]:
    return [None if line in ("", "-") else base64.b64decode(line).decode() for line in out.splitlines()]


def assess(host: DockerHost, m: MachineEnv, facts: dict) -> tuple[str, str, list[Step]]:
    """(state, detail, steps) of the CA files of one machine-env's daemon."""
    if not host.registry_cas:
        return OK, "no registry CAs in the inventory", []
    have = facts.get(f"cas:{m.name}") or [None] * len(host.registry_cas)
    steps: list[Step] = []
    problems = []
    for (reg, pem), old in zip(host.registry_cas, have, strict=False):
        if old == pem:
            continue
        problems.append(f"CA of {reg} " + ("missing" if old is None else "differs"))
        path = ca_path(m, reg)
        steps.append(Run(("mkdir", "-p", path.rsplit("/", 1)[0]), f"{m.name}: trust store of {reg}", as_user=m.user))
        steps.append(Upload(path, pem, f"{m.name}: trust {reg}'s CA (the rootless daemon reads it live)",
                            mode=0o644, as_user=m.user, old=old, expect=sha256(old)))
    if not problems:
        return OK, "trusts " + ", ".join(reg for reg, _ in host.registry_cas), []
    return (MISSING if all(h is None for h in have) else DRIFTED), "; ".join(problems), steps


def only_mirrors_differ(old: str | None, new: str | None) -> bool:
    """True when two daemon.json texts differ in `registry-mirrors` alone: a reload is enough then."""
    try:
        a, b = json.loads(old or "{}"), json.loads(new or "{}")
    except ValueError:
        return False
    a.pop("registry-mirrors", None)
    b.pop("registry-mirrors", None)
    return a == b and old is not None
