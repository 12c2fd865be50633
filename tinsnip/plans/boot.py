"""What a Docker host does at boot for its machine-envs: storage first, then the user's daemon. Pure code.

A machine-env's rootless daemon and its containers run under the user's systemd manager
(`user@{uid}.service`, started at boot because of linger). If that manager started before the NFS
mount was up, the daemon's binds below /mnt/{name} would find the gate's empty mount point, and a
container with a restart policy would come back writing to the Docker host's own disk, or fail.

So each Docker host gets:

- `tinsnip-storage@.service`, one template unit: instance `{name}` mounts
  `/var/lib/tinsnip/mounts/{name}/nas` from its /etc/fstab line, retrying every few seconds until it
  is up (a NAS that is still booting, or down, is waited for: the host itself boots as usual, only
  this machine-env's services wait). It never gives up and never times out.
- a drop-in for `user@{uid}.service` that wants that instance and is ordered after it: the user's
  manager, and with it the rootless daemon and every container, start only once the storage is there.

The fstab line keeps `nofail`, so a NAS that is down never stops the host from booting.
"""

from __future__ import annotations

import shlex

from ..script import Fact
from ..smep import MachineEnv
from ..steps import Noop, Run, Step, Upload, sha256

UNIT_DIR = "/etc/systemd/system"
STORAGE_UNIT = "tinsnip-storage@.service"
RETRY_SECONDS = 3

OK, MISSING, DRIFTED = "ok", "missing", "drifted"


def storage_unit_path() -> str:
    return f"{UNIT_DIR}/{STORAGE_UNIT}"


def storage_instance(m: MachineEnv) -> str:
    return f"tinsnip-storage@{m.name}.service"


def manager_dropin_path(m: MachineEnv) -> str:
    return f"{UNIT_DIR}/user@{m.uid}.service.d/tinsnip-storage.conf"


def storage_unit() -> str:
    # %i is the machine-env's name: checked by tinsnip's name rules, so it needs no quoting here.
    mount = "/var/lib/tinsnip/mounts/%i/nas"
    return (
        "# Written by tinsnip: a machine-env's NAS storage, mounted before its user's services start.\n"
        "# Retries until the NAS answers; the host's boot does not wait for it.\n"
        "[Unit]\n"
        "Description=tinsnip: NAS storage of machine-env %i\n"
        "After=network-online.target remote-fs-pre.target\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        "TimeoutStartSec=infinity\n"
        f"ExecStart=/bin/sh -c 'until mountpoint -q {mount}; do mount {mount} || sleep {RETRY_SECONDS}; done'\n"
    )


def manager_dropin(m: MachineEnv) -> str:
    unit = storage_instance(m)
    return (
        f"# Written by tinsnip: {m.user}'s services start only once {m.mount} is mounted.\n"
        "[Unit]\n"
        f"Wants={unit}\n"
        f"After={unit}\n"
    )


def facts(machine_envs: list[MachineEnv]) -> list[Fact]:
    def b64_file(path: str) -> str:
        p = shlex.quote(path)
        return f"if [ -f {p} ]; then base64 -w0 <{p}; else printf -; fi"

    out = [Fact("boot:unit", b64_file(storage_unit_path()), _b64)]
    out += [Fact(f"boot:{m.name}", b64_file(manager_dropin_path(m)), _b64) for m in machine_envs]
    return out


def _b64(rc: int, out: str) -> str | None:
    import base64

    out = out.strip()
    if rc != 0 or out in ("", "-"):
        return None
    return base64.b64decode(out).decode()


def assess(machine_envs: list[MachineEnv], facts: dict) -> tuple[Step, dict[str, tuple[str, str, list[Step]]]]:
    """The shared template unit's step, and per machine-env (state, detail, steps) of its drop-in.

    The template is written once per host; a `systemctl daemon-reload` follows any change."""
    have_unit = facts.get("boot:unit")
    want_unit = storage_unit()
    unit_step: Step
    if have_unit == want_unit:
        unit_step = Noop(f"{storage_unit_path()} in place")
    else:
        unit_step = Upload(storage_unit_path(), want_unit, "boot: mount each machine-env's storage before its services",
                           owner="0:0", old=have_unit, expect=sha256(have_unit))
    parts = {}
    for m in machine_envs:
        have = facts.get(f"boot:{m.name}")
        want = manager_dropin(m)
        if have == want and have_unit == want_unit:
            parts[m.name] = (OK, f"user@{m.uid} starts after {storage_instance(m)}", [])
            continue
        steps: list[Step] = []
        if have != want:
            steps.append(Run(("mkdir", "-p", manager_dropin_path(m).rsplit("/", 1)[0]),
                             f"{m.name}: drop-in directory of user@{m.uid}.service"))
            steps.append(Upload(manager_dropin_path(m), want, f"{m.name}: user@{m.uid} waits for its storage at boot",
                                owner="0:0", old=have, expect=sha256(have)))
        state = MISSING if have is None else DRIFTED
        detail = "storage ordering at boot " + ("missing" if have is None else "differs")
        if have == want:
            state, detail = DRIFTED, f"{storage_unit_path()} " + ("missing" if have_unit is None else "differs")
        parts[m.name] = (state, detail, steps)
    return unit_step, parts


def reload_step(changed: bool) -> Step:
    if not changed:
        return Noop("systemd units unchanged")
    return Run(("systemctl", "daemon-reload"), "boot: systemd reads the new units")


def remove_steps(m: MachineEnv, facts: dict) -> list[Step]:
    """Taking a machine-env off its host: its drop-in goes (the shared template stays: it is inert)."""
    if facts.get(f"boot:{m.name}") is None:
        return []
    path = manager_dropin_path(m)
    return [Run(("rm", "-f", path), f"{m.name}: remove {path}"),
            Run(("systemctl", "daemon-reload"), f"{m.name}: systemd forgets the drop-in")]
