"""lab.*: the embedded lab, a NAS and two Docker hosts in network namespaces on this machine.

The lab dir comes from TINSNIP_LAB_DIR (default: .lab under the current directory), the lab id from
TINSNIP_LAB_ID (default 0; lab k uses 198.18.k.0/24, so several labs can run at once).
"""

from __future__ import annotations

import json as jsonlib
import os
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit


def _where() -> tuple[Path, int]:
    lab_dir = Path(os.environ.get("TINSNIP_LAB_DIR") or ".lab")
    raw = os.environ.get("TINSNIP_LAB_ID") or "0"
    try:
        lab_id = int(raw)
    except ValueError:
        raise Exit(f"TINSNIP_LAB_ID must be a number from 0 to 7, not {raw!r}", 2) from None
    return lab_dir, lab_id


def _call(fn_name: str, *args, **kwargs):
    from .. import lab
    from ..errors import TinsnipError

    try:
        return getattr(lab, fn_name)(*args, **kwargs)
    except TinsnipError as exc:
        raise Exit(f"lab: {exc}", exc.code) from None


def _print_hosts(info: dict) -> None:
    for name, h in info["hosts"].items():
        ssh = "ssh ok" if h["ssh"] else "no ssh"
        print(f"  {name:8} {h['state']:8} {h['address']:13} {ssh:7} login {h['user']}")
    r = info.get("registry")
    if r:
        state = "up" if r["running"] else "down"
        print(f"  {'registry':8} {state:8} {r['address']:13} {r['open']} (open, mirror), {r['private']} (login)")


@task(help={"json": "print one JSON object instead of text"})
def up(c, json=False):
    """Start the lab: a NAS and two Docker hosts (a no-op when up)."""
    lab_dir, lab_id = _where()
    info = _call("up", lab_dir, lab_id)
    if json:
        print(jsonlib.dumps(info, indent=2))
        return
    t = info["timings"]
    if info["already_up"]:
        print(f"lab {lab_id} is already up in {info['lab_dir']}")
    else:
        print(f"lab {lab_id} up in {t['total']:.1f} s (hosts booted in {t.get('boot', 0):.1f} s)")
    _print_hosts(info)
    print(f"inventory: {info['inventory']}")
    print(f"try: ssh -i {lab_dir}/id_ed25519 -o UserKnownHostsFile={lab_dir}/known_hosts "
          f"root@{info['hosts']['docker1']['address']} docker info")


@task(help={"json": "print one JSON object instead of text"})
def down(c, json=False):
    """Stop the lab and remove all it made."""
    lab_dir, lab_id = _where()
    info = _call("down", lab_dir, lab_id)
    if json:
        print(jsonlib.dumps(info, indent=2))
        return
    stopped = ", ".join(info["stopped"]) or "nothing was running"
    print(f"lab {lab_id} down in {info['timings']['total']:.1f} s ({stopped})")


@task(help={"json": "print one JSON object instead of text"})
def status(c, json=False):
    """Show the lab's hosts: state, address, SSH."""
    lab_dir, lab_id = _where()
    info = _call("status", lab_dir, lab_id)
    if json:
        print(jsonlib.dumps(info, indent=2))
    else:
        print(f"lab {lab_id} in {info['lab_dir']}: {'up' if info['up'] else 'not up'}")
        _print_hosts(info)
        if info["owner"] and info["owner"] != info["lab_dir"]:
            print(f"  (lab id {lab_id} is held by the lab in {info['owner']})")


def _need_host(host) -> str:
    if not host:
        raise Exit("lab: --host is required (nas, docker1 or docker2)", 2)
    return host


@task(help={"host": "the lab host to reboot: nas, docker1 or docker2",
            "json": "print one JSON object instead of text"})
def reboot(c, host=None, json=False):
    """Reboot one lab host: a clean shutdown, then a fresh boot on the same disk."""
    lab_dir, lab_id = _where()
    info = _call("reboot", lab_dir, lab_id, _need_host(host))
    if json:
        print(jsonlib.dumps(info, indent=2))
        return
    t = info["timings"]
    print(f"{info['host']} ({info['address']}) rebooted in {t['total']:.1f} s "
          f"(shutdown {t['shutdown']:.1f} s, boot {t['boot']:.1f} s); its disk was kept")


@task(help={"host": "the Docker host to replace: docker1 or docker2 (the NAS holds the data: refused)",
            "trust": "also put the new host key into the lab's known_hosts (after checking its fingerprint)",
            "json": "print one JSON object instead of text"})
def rebuild(c, host=None, trust=False, json=False):
    """Replace one Docker host: same address, a fresh disk and a new SSH host key."""
    lab_dir, lab_id = _where()
    info = _call("rebuild", lab_dir, lab_id, _need_host(host), trust=trust)
    if json:
        print(jsonlib.dumps(info, indent=2))
        return
    print(f"{info['host']} ({info['address']}) rebuilt in {info['timings']['total']:.1f} s on a fresh disk")
    print(f"  old host key {info['old_fingerprint']}")
    print(f"  new host key {info['new_fingerprint']}")
    if info["trusted"]:
        print(f"  the new key is trusted in {info['known_hosts']}")
    else:
        print(f"  tinsnip refuses {info['host']} until you trust the new key: compare the fingerprint with "
              f"`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on its console, then run "
              f"`inv lab.trust --host={info['host']}`")


@task(help={"host": "the lab host whose current key to trust", "json": "print one JSON object instead of text"})
def trust(c, host=None, json=False):
    """Trust a lab host's current SSH host key (after lab.rebuild): rewrite its known_hosts line."""
    lab_dir, lab_id = _where()
    info = _call("trust", lab_dir, lab_id, _need_host(host))
    if json:
        print(jsonlib.dumps(info, indent=2))
        return
    what = "now trusted" if info["changed"] else "already trusted"
    print(f"{info['host']} ({info['address']}) host key {info['fingerprint']} {what} in {info['known_hosts']}")
