"""Registry access of a machine-env's rootless daemon: mirrors, trusted CAs and logins. Pure code.

Per Docker host the inventory names `registry_mirrors` (https URLs) and `registry_cas` (HOST:PORT → a
PEM file). Per machine-env the NAS holds its registry logins (see tinsnip.secrets). On the host:

* `~/.config/docker/daemon.json` gets `registry-mirrors` beside the address pools. A change of the
  mirrors alone needs `systemctl --user reload docker` (SIGHUP: dockerd re-reads them), not a restart;
  `mirror_change_only` tells the docker part which of the two to plan.
* each CA goes to `~/.config/docker/certs.d/HOST:PORT/ca.crt`, owned by the user. The rootless daemon
  reads that directory live on every connection, so a new CA needs no reload. It does NOT read
  /etc/docker/certs.d (that is the rootful daemon's).
* the logins go into `~/.docker/config.json` (0600, `auths` with base64 user:password), so the user's
  `docker compose pull` authenticates. tinsnip owns `auths` there: entries that are not logins on the
  NAS are removed (`machine.logout` removes one); other keys of the file are kept. Its diff is masked.

A CA file in certs.d that the inventory no longer names is left alone (reported, not removed).
"""

from __future__ import annotations

import base64
import json

from ..inventory import DockerHost
from ..secrets import Secret, register
from ..smep import MachineEnv
from ..steps import Step, Upload

OK, MISSING, DRIFTED = "ok", "missing", "drifted"
NOTHING = "no registry settings"  # a host without mirrors, CAs or logins: the plan shows no step for it


def certs_dir(m: MachineEnv) -> str:
    return f"{m.home}/.config/docker/certs.d"


def ca_path(m: MachineEnv, registry: str) -> str:
    return f"{certs_dir(m)}/{registry}/ca.crt"


def docker_config_path(m: MachineEnv) -> str:
    return f"{m.home}/.docker/config.json"


# -- daemon.json ---------------------------------------------------------------------------------

def daemon_entries(host: DockerHost) -> dict:
    """What this concern adds to the rootless daemon's daemon.json."""
    return {"registry-mirrors": list(host.registry_mirrors)} if host.registry_mirrors else {}


def mirror_change_only(old: str | None, new: str | None) -> bool:
    """True when two daemon.json texts differ in `registry-mirrors` alone: a reload (SIGHUP) applies it."""
    try:
        a, b = json.loads(old or ""), json.loads(new or "")
    except ValueError:
        return False
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    a.pop("registry-mirrors", None)
    b.pop("registry-mirrors", None)
    return a == b


# -- facts (lines of the machine-env probe in plans/machine.py) --------------------------------------

def fact_lines(home_var: str = "$h") -> str:
    """Shell lines (inside the machine-env probe, where tf prints a file base64 or '-') that report every
    CA in certs.d and the user's docker config.json."""
    return (f'for f in "{home_var}"/.config/docker/certs.d/*/ca.crt; do [ -f "$f" ] || continue; '
            f'd=${{f%/ca.crt}}; echo "ca:${{d##*/}}=$(tf "$f")"; done\n'
            f'echo "dockercfg=$(tf "{home_var}/.docker/config.json")"')


def parse_fact(kv: dict) -> dict:
    """Turn the raw `ca:*` and `dockercfg` lines into texts; config.json becomes a Secret."""
    from .machine import _b64

    cas = {k[3:]: _b64(v) for k, v in kv.items() if k.startswith("ca:")}
    cfg = _b64(kv.get("dockercfg", "-"))
    return {"cas": cas, "dockercfg": Secret(cfg) if cfg else None}


# -- config.json ---------------------------------------------------------------------------------

def auth(username: str, password: Secret) -> str:
    """The base64 user:password of config.json; registered with the masking like the password itself."""
    value = base64.b64encode(f"{username}:{password.reveal()}".encode()).decode()
    register(value)
    return value


def docker_config(old: str | None, logins: dict[str, tuple[str, Secret]]) -> str | None:
    """config.json with `auths` exactly the logins (other keys kept); None when there is nothing to write."""
    try:
        data = json.loads(old) if old else {}
        if not isinstance(data, dict):
            data = {}
    except ValueError:
        data = {}
    if logins:
        data["auths"] = {reg: {"auth": auth(user, pw)} for reg, (user, pw) in sorted(logins.items())}
    else:
        data.pop("auths", None)
        if old is None:
            return None
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# -- the part ------------------------------------------------------------------------------------

def access_part(m: MachineEnv, host: DockerHost, access: dict, logins: dict[str, tuple[str, Secret]] | None):
    """CAs and logins of one machine-env (the mirrors live in daemon.json, in the docker part).

    `logins` None: the NAS's logins were not read (a planner that does not own them); config.json is
    then left as it is."""
    from .machine import Part, as_user  # the machine planner imports this module at its top

    steps: list[Step] = []
    problems: list[str] = []
    states: list[str] = []
    have_cas = access.get("cas") or {}
    new_dirs = []
    uploads: list[Step] = []
    for ca in host.registry_cas:
        have = have_cas.get(ca.registry)
        if have == ca.pem:
            continue
        states.append(MISSING if have is None else DRIFTED)
        problems.append(f"CA for {ca.registry} " + ("missing" if have is None else "differs"))
        new_dirs.append(f"{certs_dir(m)}/{ca.registry}")
        uploads.append(Upload(ca_path(m, ca.registry), ca.pem, f"{m.name}: trust {ca.registry} ({ca.path.name})",
                              mode=0o644, as_user=m.user, old=have))
    if new_dirs:
        steps.append(as_user(m, ("mkdir", "-p", *new_dirs), f"{m.name}: certs.d of the rootless daemon"))
        steps.extend(uploads)
    wanted = {ca.registry for ca in host.registry_cas}
    foreign = sorted(set(have_cas) - wanted)
    old_cfg = access.get("dockercfg")
    old_text = old_cfg.reveal() if isinstance(old_cfg, Secret) else None
    if logins is not None:
        want = docker_config(old_text, logins)
        if want is not None and want != old_text:
            states.append(MISSING if old_text is None else DRIFTED)
            problems.append("registry logins in ~/.docker/config.json " + ("missing" if old_text is None else "differ"))
            Secret(want)  # known to the masking from here on
            steps.append(as_user(m, ("install", "-d", "-m", "0700", f"{m.home}/.docker"), f"{m.name}: ~/.docker"))
            steps.append(Upload(docker_config_path(m), want,
                                f"{m.name}: registry logins ({', '.join(sorted(logins)) or 'none'}) in ~/.docker/config.json",
                                mode=0o600, as_user=m.user, old=old_text, secret=True))
    if not steps:
        bits = []
        if host.registry_cas:
            bits.append("trusts " + ", ".join(sorted(wanted)))
        if host.registry_mirrors:
            bits.append("mirrors " + ", ".join(host.registry_mirrors))
        if logins:
            bits.append("logged in to " + ", ".join(sorted(logins)))
        if foreign:
            bits.append("also trusts (not in the inventory) " + ", ".join(foreign))
        return Part("registry", OK, "; ".join(bits) or NOTHING)
    state = MISSING if all(s == MISSING for s in states) else DRIFTED
    return Part("registry", state, "; ".join(problems), steps)

