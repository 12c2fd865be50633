"""A machine-env's registry logins on its Docker host: the user's `~/.docker/config.json`. Pure code.

The logins themselves are secrets kept per machine-env on the NAS (`machine.login`, see
tinsnip.secrets); the NAS phase of machine.create/machine.apply reads them, and this planner writes
them into `~/.docker/config.json` (0600, owned by the user, `auths` with base64 user:password), so the
user's `docker compose pull` authenticates and a rebuilt host gets them back on the next apply.
tinsnip owns `auths` in that file: an entry that is not a login on the NAS is removed
(`machine.logout`); other keys of the file are kept. The file's diff is never shown (it holds secrets).
"""

from __future__ import annotations

import base64
import json

from ..secrets import Secret, register
from ..smep import MachineEnv
from ..steps import Step, Upload, sha256

OK, MISSING, DRIFTED = "ok", "missing", "drifted"
NOTHING = "no registry logins"  # nothing on the NAS and no file: the plan shows no step for it


def config_path(m: MachineEnv) -> str:
    return f"{m.home}/.docker/config.json"


def fact_line(home_var: str = "$h") -> str:
    """A line of the machine-env probe (plans/machine.py, where tf prints a file base64 or '-')."""
    return f'echo "dockercfg=$(tf "{home_var}/.docker/config.json")"'


def parse(text: str | None) -> Secret | None:
    """The decoded config.json, as a Secret (it holds auths)."""
    return Secret(text) if text else None


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
        if old is None or not data.get("auths"):
            return old  # an empty `auths` (the docker CLI writes one) is no login
        data.pop("auths")
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def assess(m: MachineEnv, have: Secret | None, logins: dict[str, tuple[str, Secret]] | None,
           user_step) -> tuple[str, str, list[Step]]:
    """(state, detail, steps) of the user's config.json. `logins` None: the NAS's logins were not read
    (a planner that does not own them), so the file is left as it is. `user_step(m, argv, desc)` makes
    a Run as the machine user."""
    if logins is None:
        return OK, NOTHING, []
    old = have.reveal() if isinstance(have, Secret) else None
    want = docker_config(old, logins)
    if want == old:
        return OK, ("logged in to " + ", ".join(sorted(logins))) if logins else NOTHING, []
    register(want)
    steps = [user_step(m, ("mkdir", "-p", "-m", "0700", f"{m.home}/.docker"), f"{m.name}: ~/.docker of {m.user}"),
             Upload(config_path(m), want, f"{m.name}: registry logins in ~/.docker/config.json ("
                    + (", ".join(sorted(logins)) or "none left") + ")",
                    mode=0o600, as_user=m.user, old=old, expect=sha256(old), secret=True)]
    detail = "registry logins in ~/.docker/config.json " + ("missing" if old is None else "differ")
    return (MISSING if old is None else DRIFTED), detail, steps
