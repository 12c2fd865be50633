"""The Docker-host side of a machine-env: facts, what each part's state is, and the steps. Pure code.

One machine-env on its Docker host is: a locked user and group `{machine}-{env}` with uid = gid = the
SMEP uid and no admin groups; its own subordinate id range; linger, so its systemd user manager runs
without a login; rootless Docker run by that manager, configured with the host's address pools and
with an environment free of the NFS-backed XDG paths; the NFS mount from one `/etc/fstab` line; and the
XDG links in its home that point into the mount.

The mount sits behind a gate. The export is all_squash to the machine-env's uid, so on the Docker host
every account that reaches the mount acts as its owner there. It is therefore mounted at
`/var/lib/tinsnip/mounts/{name}/nas`, below the gate `/var/lib/tinsnip/mounts/{name}`: a local directory
owned by the machine user, mode 0700, that only that user and root can pass. `/mnt/{name}` is a symlink
to the mount, so every path people and services use stays `/mnt/{name}/...`. A host with the old layout
(the export mounted on the directory `/mnt/{name}` itself) is converged to the gate.

Every part is read by a fact and judged by `assess_host`, which gives each part a state (ok, missing,
drifted), a detail, and the steps that repair it. `plan_host` orders those steps into a HostPlan
(a done machine-env plans only Noops), `machine.status` prints the states. Files shared by several
machine-envs (/etc/subuid, /etc/subgid, /etc/fstab) are written once per host with compare-and-swap.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import TinsnipError
from ..inventory import DockerHost
from ..script import CLEAN_PATH, Fact
from ..smep import GATES, SUBID_COUNT, MachineEnv
from ..steps import HostPlan, Noop, Run, Step, Upload, sha256
from . import boot, registry_access, registry_login

SETUPTOOL = "dockerd-rootless-setuptool.sh"
ADMIN_GROUPS = ("sudo", "wheel", "admin", "docker")  # docker: its socket is root on the host
XDG_VARS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
FSTAB_OPTIONS = "rw,hard,noatime,_netdev,nofail"
NFS_TYPES = ("nfs", "nfs4", "fuse.nfs4", "fuse.nfs")
DOCKER_WAIT_SECONDS = 60
MANAGER_WAIT_SECONDS = 30
FACT_TIMEOUT = 20  # seconds for any one probe that asks a daemon (docker info, systemctl --user)

OK, MISSING, DRIFTED = "ok", "missing", "drifted"


# -- paths -------------------------------------------------------------------------------------

def dropin_path(m: MachineEnv) -> str:
    return f"{m.home}/.config/systemd/user/docker.service.d/tinsnip.conf"


def daemon_json_path(m: MachineEnv) -> str:
    return f"{m.home}/.config/docker/daemon.json"


def unit_path(m: MachineEnv) -> str:
    return f"{m.home}/.config/systemd/user/docker.service"


def links(m: MachineEnv) -> list[tuple[str, str]]:
    """(link in the user's home, target in the mount): the XDG links and ~/service (SPEC §7)."""
    return [
        (f"{m.home}/.local/share/{m.sheet}/@{m.machine}", f"{m.mount}/data"),
        (f"{m.home}/.config/{m.sheet}/@{m.machine}", f"{m.mount}/config"),
        (f"{m.home}/.local/state/{m.sheet}/@{m.machine}", f"{m.mount}/state"),
        (f"{m.home}/service", f"{m.mount}/service"),
    ]


def user_env(m: MachineEnv) -> tuple[tuple[str, str], ...]:
    """The environment a command run as the machine user needs to reach its systemd manager and daemon.

    Deliberately without XDG_DATA_HOME/XDG_CONFIG_HOME/XDG_STATE_HOME: a rootless daemon that saw them
    would keep its images and state on the NFS mount.
    """
    return (
        ("HOME", m.home),
        ("USER", m.user),
        ("LOGNAME", m.user),
        ("XDG_RUNTIME_DIR", m.runtime_dir),
        ("DBUS_SESSION_BUS_ADDRESS", f"unix:path={m.runtime_dir}/bus"),
        ("DOCKER_HOST", m.docker_host),
    )


def as_user(m: MachineEnv, argv: Iterable[str], desc: str, unless: str | None = None) -> Run:
    return Run(tuple(argv), desc, as_user=m.user, env=user_env(m), unless=unless)


# -- desired content ---------------------------------------------------------------------------

def slirp_cidr(pools: tuple[tuple[str, int], ...]) -> str | None:
    """The network rootlesskit's slirp4netns uses: the last /24 of the first pool (or the pool itself if
    smaller), so it stays in the inventory's range and away from the networks the daemon hands out
    from the start of the pool."""
    if not pools:
        return None
    net = ipaddress.ip_network(pools[0][0])
    if net.prefixlen >= 24:
        return str(net)
    return str(list(net.subnets(new_prefix=24))[-1]) if net.prefixlen >= 16 else \
        str(ipaddress.ip_network(f"{net.broadcast_address - 255}/24", strict=False))


def daemon_json(host: DockerHost) -> str | None:
    """The rootless daemon's own config: the host's address pools and registry mirrors. None when the
    inventory gives neither."""
    if not host.address_pools and not host.registry_mirrors:
        return None
    config: dict = {}
    if host.address_pools:
        config["default-address-pools"] = [{"base": base, "size": size} for base, size in host.address_pools]
    if host.registry_mirrors:
        config["registry-mirrors"] = list(host.registry_mirrors)
    return json.dumps(config, indent=2) + "\n"


def dropin(host: DockerHost) -> str:
    lines = [
        "# Written by tinsnip: the rootless daemon of this machine-env.",
        "# Its storage stays in this home, never on the NFS mount the XDG variables point to.",
        "[Service]",
        "UnsetEnvironment=" + " ".join(XDG_VARS),
    ]
    cidr = slirp_cidr(host.address_pools)
    if cidr:
        lines.append("# slirp4netns's network, inside the inventory's address pools.")
        lines.append(f"Environment=DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS=--cidr={cidr}")
    return "\n".join(lines) + "\n"


def fstab_line(m: MachineEnv, nas_address: str) -> str:
    return f"{nas_address}:{m.nas_path} {m.mount_point} nfs4 {FSTAB_OPTIONS} 0 0"


def _stat(rc: int, out: str) -> str | None:
    return out.strip() if rc == 0 and out.strip() else None


def subid_line(m: MachineEnv) -> str:
    return f"{m.user}:{m.subid_start}:{SUBID_COUNT}"


# -- facts -------------------------------------------------------------------------------------

def _b64(text: str) -> str | None:
    if text == "-":
        return None
    try:
        return base64.b64decode(text).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _file(rc: int, out: str) -> str | None:
    return out if rc == 0 else None


def parse_kv(rc: int, out: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value
    return values


def parse_passwd(rc: int, out: str) -> dict[str, dict]:
    users = {}
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
            users[parts[0]] = {"uid": int(parts[2]), "gid": int(parts[3]), "home": parts[5], "shell": parts[6]}
    return users


def parse_group(rc: int, out: str) -> dict[str, dict]:
    groups = {}
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            groups[parts[0]] = {"gid": int(parts[2]), "members": [x for x in parts[3].split(",") if x]}
    return groups


def _unescape(text: str) -> str:
    """findmnt -r writes spaces and other odd bytes as \\xNN."""
    return text.encode().decode("unicode_escape") if "\\x" in text else text


def parse_mounts(rc: int, out: str) -> dict[str, dict]:
    mounts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts[_unescape(parts[0])] = {"fstype": parts[1], "source": _unescape(parts[2])}
    return mounts


def host_facts() -> list[Fact]:
    return [
        Fact("passwd", "getent passwd", parse_passwd),
        Fact("group", "getent group", parse_group),
        Fact("subuid", "cat /etc/subuid", _file),
        Fact("subgid", "cat /etc/subgid", _file),
        Fact("fstab", "cat /etc/fstab", _file),
        Fact("mounts", "findmnt -rn -o TARGET,FSTYPE,SOURCE", parse_mounts),
        Fact("gates", f"stat -c %u:%g:%a {GATES}", _stat),
    ]


def machine_fact_command(m: MachineEnv) -> str:
    """One shell probe for every per-user part of a machine-env; prints key=value lines."""
    q = shlex.quote
    env = " ".join(f"{k}={q(v)}" for k, v in user_env(m))
    run_as = f"timeout {FACT_TIMEOUT} runuser -u \"$u\" -- env -i PATH={CLEAN_PATH} {env}"
    link_lines = "\n".join(f"echo \"link{i}=$(tl {q(link)})\"" for i, (link, _) in enumerate(links(m)))
    return f"""u={q(m.user)}; uid={m.uid}; h={q(m.home)}
tl() {{ if [ -L "$1" ]; then printf 'L:%s' "$(readlink "$1")"; elif [ -e "$1" ]; then printf E; else printf A; fi; }}
tf() {{ if [ -f "$1" ]; then base64 -w0 <"$1"; else printf -; fi; }}
tp() {{ if [ -L "$1" ]; then printf 'L:%s' "$(readlink "$1")"; elif [ -d "$1" ]; then printf D; elif [ -e "$1" ]; then printf E; else printf A; fi; }}
echo "pwstatus=$(passwd -S "$u" 2>/dev/null | cut -d' ' -f2)"
echo "groups=$(id -nG "$u" 2>/dev/null)"
echo "home=$(stat -c %u:%g "$h" 2>/dev/null)"
echo "linger=$([ -e /var/lib/systemd/linger/"$u" ] && echo 1 || echo 0)"
echo "manager=$(systemctl is-active "user@$uid.service" 2>/dev/null)"
echo "bus=$([ -S /run/user/$uid/bus ] && echo 1 || echo 0)"
echo "mnt=$(tp {q(m.mount)})"
echo "gate=$(stat -c %u:%g:%a {q(m.gate)} 2>/dev/null)"
echo "mntdir=$([ -d {q(m.mount_point)} ] && echo 1 || echo 0)"
{link_lines}
echo "unit=$([ -f {q(unit_path(m))} ] && echo 1 || echo 0)"
echo "daemon_json=$(tf {q(daemon_json_path(m))})"
echo "dropin=$(tf {q(dropin_path(m))})"
{registry_login.fact_line()}
if [ -S /run/user/$uid/bus ] && id -u "$u" >/dev/null 2>&1; then
  echo "active=$({run_as} systemctl --user is-active docker.service 2>/dev/null)"
  echo "enabled=$({run_as} systemctl --user is-enabled docker.service 2>/dev/null)"
  echo "info=$({run_as} docker info --format '{{{{.ServerVersion}}}} {{{{range .SecurityOptions}}}}{{{{.}}}},{{{{end}}}}' 2>&1 | head -n1)"
  echo "bridge=$({run_as} docker network inspect bridge --format '{{{{range .IPAM.Config}}}}{{{{.Subnet}}}} {{{{end}}}}' 2>/dev/null | head -n1)"
fi
pid=$(pgrep -u "$uid" -x dockerd 2>/dev/null | head -n1)
if [ -n "$pid" ]; then
  echo "dockerd=$pid"
  echo "dockerd_xdg=$(tr '\\0' '\\n' </proc/$pid/environ 2>/dev/null | grep -E '^XDG_(DATA|CONFIG|STATE)_HOME=' | tr '\\n' ' ')"
fi
exit 0"""


def machine_fact(m: MachineEnv) -> Fact:
    return Fact(f"me:{m.name}", machine_fact_command(m), parse_machine)


def parse_machine(rc: int, out: str) -> dict:
    kv = parse_kv(rc, out)
    kv["daemon_json"] = _b64(kv.get("daemon_json", "-"))
    kv["dropin"] = _b64(kv.get("dropin", "-"))
    kv["dockercfg"] = registry_login.parse(_b64(kv.get("dockercfg", "-")))
    return kv


def facts_for(machine_envs: list[MachineEnv], host: DockerHost | None = None) -> list[Fact]:
    extra = registry_access.facts(host, machine_envs) if host is not None else []
    return host_facts() + [machine_fact(m) for m in machine_envs] + boot.facts(machine_envs) + extra


# -- assessment --------------------------------------------------------------------------------

@dataclass
class Part:
    """One part of a machine-env on its host: its state, what is wrong, and the steps that fix it."""

    name: str
    state: str
    detail: str
    steps: list[Step] = field(default_factory=list)

    def describe(self) -> dict:
        return {"part": self.name, "state": self.state, "detail": self.detail}


def _subid_entries(text: str | None) -> list[tuple[str, int, int, str]]:
    entries = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and not line.lstrip().startswith("#"):
            entries.append((parts[0], int(parts[1]), int(parts[2]), line))
    return entries


def subid_file(path: str, host: str, text: str | None, machine_envs: list[MachineEnv]) -> tuple[dict[str, Part], Step]:
    """States per machine-env and one step for /etc/subuid or /etc/subgid.

    A machine-env's entries are the lines named after its user (or its uid); they are replaced by the
    one deterministic range. A range that overlaps anybody else's entry is an error naming that entry.
    """
    entries = _subid_entries(text)
    ours = {m.user: m for m in machine_envs}
    own_keys = {k for m in machine_envs for k in (m.user, str(m.uid))}
    parts: dict[str, Part] = {}
    for m in machine_envs:
        want = (m.subid_start, SUBID_COUNT)
        mine = [(s, c) for name, s, c, _ in entries if name in (m.user, str(m.uid))]
        for name, start, count, line in entries:
            if name in own_keys:
                continue
            if start < want[0] + want[1] and want[0] < start + count:
                raise TinsnipError(
                    f"{host}: {path}: the range {m.subid_start}:{SUBID_COUNT} of {m.user} overlaps the entry "
                    f"'{line.strip()}'; tinsnip will not guess another range. Move that entry "
                    f"(usermod --del-subuids/--del-subgids) and run again")
        if mine == [want]:
            parts[m.name] = Part(path, OK, f"{subid_line(m)}")
        elif not mine:
            parts[m.name] = Part(path, MISSING, f"no {path} entry for {m.user}")
        else:
            shown = ", ".join(f"{s}:{c}" for s, c in mine)
            parts[m.name] = Part(path, DRIFTED, f"{m.user} has {shown} instead of {m.subid_start}:{SUBID_COUNT}")
    if all(p.state == OK for p in parts.values()):
        return parts, Noop(f"{path}: ranges of {', '.join(m.user for m in machine_envs)} in place")
    kept = [line for line in (text or "").splitlines(keepends=True)
            if not (len(line.split(":")) == 3 and line.split(":")[0] in own_keys)]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    new = "".join(kept) + "".join(subid_line(m) + "\n" for m in machine_envs if m.user in ours)
    changed = ", ".join(m.user for m in machine_envs if parts[m.name].state != OK)
    return parts, Upload(path, new, f"{path}: {SUBID_COUNT} subordinate ids for {changed}", mode=0o644,
                         owner="0:0", old=text, expect=sha256(text))


def fstab_file(text: str | None, machine_envs: list[MachineEnv], nas_address: str) -> tuple[dict[str, Part], Step]:
    """One line per machine-env's mount point: replaced in place when it differs, duplicates dropped. A line
    for the old mount point `/mnt/{name}` (before the gate) counts as the machine-env's line and is replaced."""
    lines = (text or "").splitlines(keepends=True)
    parts: dict[str, Part] = {}
    out: list[str] = []
    placed: set[str] = set()
    by_mount = {**{m.mount: m for m in machine_envs}, **{m.mount_point: m for m in machine_envs}}

    def field2(line: str) -> str | None:
        words = line.split()
        return words[1] if len(words) >= 2 and not line.lstrip().startswith("#") else None

    seen: dict[str, list[str]] = {}
    for line in lines:
        mnt = field2(line)
        if mnt in by_mount:
            seen.setdefault(by_mount[mnt].name, []).append(line.rstrip("\n"))
    for m in machine_envs:
        want = fstab_line(m, nas_address)
        found = seen.get(m.name, [])
        if found == [want] or [" ".join(x.split()) for x in found] == [want]:
            parts[m.name] = Part("/etc/fstab", OK, want)
        elif not found:
            parts[m.name] = Part("/etc/fstab", MISSING, f"no /etc/fstab line for {m.mount_point}")
        elif len(found) > 1:
            parts[m.name] = Part("/etc/fstab", DRIFTED, f"{len(found)} /etc/fstab lines for {m.mount_point}")
        elif found[0].split()[1] == m.mount:
            parts[m.name] = Part("/etc/fstab", DRIFTED, f"/etc/fstab mounts {m.mount} itself (old layout), "
                                                        f"not {m.mount_point} behind the gate")
        else:
            parts[m.name] = Part("/etc/fstab", DRIFTED, f"/etc/fstab has '{found[0]}'")
    if all(p.state == OK for p in parts.values()):
        return parts, Noop("/etc/fstab: lines for " + ", ".join(m.mount_point for m in machine_envs) + " in place")
    for line in lines:
        mnt = field2(line)
        if mnt in by_mount:
            m = by_mount[mnt]
            if parts[m.name].state == OK:
                out.append(line)
            elif m.name not in placed:
                out.append(fstab_line(m, nas_address) + "\n")
            placed.add(m.name)
            continue
        out.append(line)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    for m in machine_envs:
        if m.name not in placed:
            out.append(fstab_line(m, nas_address) + "\n")
    new = "".join(out)
    changed = ", ".join(m.mount_point for m in machine_envs if parts[m.name].state != OK)
    return parts, Upload("/etc/fstab", new, f"/etc/fstab: one line for {changed}", mode=0o644, owner="0:0",
                         old=text, expect=sha256(text))


def user_part(m: MachineEnv, host: str, facts: dict, mf: dict) -> Part:
    passwd, group = facts.get("passwd") or {}, facts.get("group") or {}
    for name, entry in passwd.items():
        if entry["uid"] == m.uid and name != m.user:
            raise TinsnipError(f"{host}: uid {m.uid} belongs to user {name!r}, not {m.user}: "
                               f"remove or renumber that user, then run again")
    for name, entry in group.items():
        if entry["gid"] == m.gid and name != m.user:
            raise TinsnipError(f"{host}: gid {m.gid} belongs to group {name!r}, not {m.user}: "
                               f"remove or renumber that group, then run again")
    steps: list[Step] = []
    problems: list[str] = []
    g = group.get(m.user)
    if g is not None and g["gid"] != m.gid:
        raise TinsnipError(f"{host}: group {m.user} has gid {g['gid']}, not {m.gid}: fix it by hand (groupmod -g {m.gid} {m.user})")
    u = passwd.get(m.user)
    if u is not None and u["uid"] != m.uid:
        raise TinsnipError(f"{host}: user {m.user} has uid {u['uid']}, not {m.uid}: fix it by hand (usermod -u {m.uid} {m.user})")
    if g is None:
        steps.append(Run(("groupadd", "-g", str(m.gid), m.user), f"{m.name}: group {m.user} ({m.gid})"))
    if u is None:
        home_exists = bool(mf.get("home"))
        steps.append(Run(
            ("useradd", "-u", str(m.uid), "-g", str(m.gid), "-d", m.home, "-s", "/bin/bash",
             "-M" if home_exists else "-m", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", m.user),
            f"{m.name}: user {m.user} ({m.uid}), home {m.home}, password locked"))
        if home_exists and mf.get("home") != f"{m.uid}:{m.gid}":
            steps.append(Run(("chown", f"{m.uid}:{m.gid}", m.home), f"{m.name}: {m.home} owned by {m.user}"))
        state = MISSING if g is None and not home_exists else DRIFTED
        return Part("user", state if (g is not None or home_exists) else MISSING,
                    f"no user {m.user}" + (" (its home is still there)" if home_exists else ""), steps)
    # the user exists: check what it should be
    if u["gid"] != m.gid:
        problems.append(f"primary group {u['gid']}")
        steps.append(Run(("usermod", "-g", str(m.gid), m.user), f"{m.name}: primary group of {m.user} is {m.gid}"))
    if u["home"] != m.home:
        problems.append(f"home {u['home']}")
        steps.append(Run(("usermod", "-d", m.home, m.user), f"{m.name}: home of {m.user} is {m.home}"))
    if not mf.get("home"):
        problems.append("home missing")
        steps.append(Run(("install", "-d", "-m", "0750", "-o", str(m.uid), "-g", str(m.gid), m.home),
                         f"{m.name}: home {m.home}"))
    elif mf.get("home") != f"{m.uid}:{m.gid}":
        problems.append(f"home owned by {mf.get('home')}")
        steps.append(Run(("chown", f"{m.uid}:{m.gid}", m.home), f"{m.name}: {m.home} owned by {m.user}"))
    if mf.get("pwstatus") != "L":
        problems.append(f"password not locked ({mf.get('pwstatus') or '?'})")
        steps.append(Run(("usermod", "-L", m.user), f"{m.name}: lock the password of {m.user}"))
    admin = [grp for grp in ADMIN_GROUPS if grp in (mf.get("groups") or "").split() and grp != m.user]
    for grp in admin:
        problems.append(f"member of {grp}")
        steps.append(Run(("gpasswd", "-d", m.user, grp), f"{m.name}: {m.user} out of group {grp} (no admin rights)"))
    if problems:
        return Part("user", DRIFTED, f"user {m.user}: " + ", ".join(problems), steps)
    return Part("user", OK, f"user {m.user} ({m.uid}), locked, no admin groups")


def _mounted(path: str) -> str:
    """A shell test for "something is mounted there" that reads the mount table and never stats the
    mount point (a dead NFS or FUSE mount makes stat fail or hang)."""
    return f"findmnt -rn --mountpoint {shlex.quote(path)} >/dev/null"


GATES_STATE = "0:0:755"


def gates_step(facts: dict) -> Step:
    """The parent of every gate: root-owned 0755, so that each gate's own owner and mode decide."""
    have = facts.get("gates")
    if have == GATES_STATE:
        return Noop(f"{GATES}: root-owned, 0755")
    what = "missing" if have is None else f"{have.replace(':', ' ', 1).replace(':', ', mode ')}"
    return Run(("sh", "-c", 'mkdir -p "$1" && chown 0:0 "$1" && chmod 0755 "$1"', "sh", GATES),
               f"{GATES}: root-owned, 0755 (was {what})")


def gate_part(m: MachineEnv, facts: dict, mf: dict) -> Part:
    """The gate `/var/lib/tinsnip/mounts/{name}` (the machine user's, 0700) and the symlink `/mnt/{name}`
    to the mount below it. The old layout (the export mounted on `/mnt/{name}` itself) is unmounted and
    its empty directory replaced by the link; the mount stage then mounts the export behind the gate."""
    steps: list[Step] = []
    problems: list[str] = []
    mounts = facts.get("mounts") or {}
    if facts.get("gates") != GATES_STATE:
        problems.append(f"{GATES} " + ("missing" if facts.get("gates") is None else "not root-owned 0755"))
    gate, want = mf.get("gate") or "", f"{m.uid}:{m.gid}:700"
    if not gate:
        problems.append(f"no gate {m.gate}")
        steps.append(Run(("install", "-d", "-m", "0700", "-o", str(m.uid), "-g", str(m.gid), m.gate),
                         f"{m.name}: gate {m.gate}, passable by {m.user} and root only (0700)"))
    elif gate != want:
        owner, _, mode = gate.rpartition(":")
        problems.append(f"gate {m.gate} is {owner} mode {mode}, not {m.uid}:{m.gid} mode 700")
        steps.append(Run(("chown", f"{m.uid}:{m.gid}", m.gate), f"{m.name}: gate {m.gate} owned by {m.user}"))
        steps.append(Run(("chmod", "0700", m.gate), f"{m.name}: gate {m.gate} passable by {m.user} and root only"))
    have = mf.get("mnt") or "A"
    if have != f"L:{m.mount_point}":
        link = Run(("ln", "-sfnT", m.mount_point, m.mount), f"{m.name}: link {m.mount} → {m.mount_point}")
        if m.mount in mounts and mounts[m.mount]["fstype"] not in NFS_TYPES:
            problems.append(f"{m.mount} holds a {mounts[m.mount]['fstype']} mount, not NFS: unmount it by hand")
        elif m.mount in mounts:
            problems.append(f"old layout: the export is mounted on {m.mount} itself, open to every account on "
                            f"the host")
            steps.append(Run(("umount", m.mount), f"{m.name}: unmount {m.mount} (old layout; it moves behind "
                                                  f"the gate)", unless=f"! {_mounted(m.mount)}"))
            # rmdir, never rm -r: a directory that still holds anything is not ours to delete
            steps.append(Run(("rmdir", m.mount), f"{m.name}: remove the empty directory {m.mount}"))
            steps.append(link)
        elif have == "D":
            problems.append(f"{m.mount} is a directory, not a link to {m.mount_point}")
            steps.append(Run(("rmdir", m.mount), f"{m.name}: remove the empty directory {m.mount}"))
            steps.append(link)
        elif have == "E":
            problems.append(f"{m.mount} is a file, not a link to {m.mount_point}: move it away, then run again")
        elif have == "A":
            problems.append(f"no link {m.mount}")
            steps.append(link)
        else:
            problems.append(f"{m.mount} → {have[2:]}, not {m.mount_point}")
            steps.append(link)
    if not problems:
        return Part("gate", OK, f"{m.mount} → {m.mount_point}, behind {m.gate} ({m.user} only, 0700)")
    missing_only = not gate and have == "A"
    return Part("gate", MISSING if missing_only else DRIFTED, "; ".join(problems), steps)


def mount_part(m: MachineEnv, facts: dict, mf: dict) -> Part:
    mounted = (facts.get("mounts") or {}).get(m.mount_point)
    if mounted and mounted["fstype"] in NFS_TYPES:
        return Part("mount", OK, f"{m.mount_point} mounted ({mounted['fstype']})")
    steps: list[Step] = []
    if mounted:
        return Part("mount", DRIFTED, f"{m.mount_point} holds a {mounted['fstype']} mount, not NFS: unmount it by hand")
    if mf.get("mntdir") != "1":
        steps.append(Run(("mkdir", "-p", m.mount_point), f"{m.name}: mount point {m.mount_point}"))
    steps.append(Run(("mount", m.mount_point), f"{m.name}: mount {m.mount_point} (from /etc/fstab)",
                     unless=_mounted(m.mount_point)))
    return Part("mount", MISSING, f"{m.mount_point} not mounted", steps)


def linger_part(m: MachineEnv, mf: dict) -> Part:
    steps: list[Step] = []
    problems = []
    if mf.get("linger") != "1":
        problems.append("linger off")
        steps.append(Run(("loginctl", "enable-linger", m.user), f"{m.name}: linger for {m.user} (its manager runs without a login)"))
    if mf.get("manager") != "active" or mf.get("bus") != "1":
        problems.append(f"user manager {mf.get('manager') or 'inactive'}")
        steps.append(Run(("systemctl", "start", f"user@{m.uid}.service"), f"{m.name}: systemd user manager of {m.user}"))
        steps.append(Run(("sh", "-c", f'for i in $(seq {MANAGER_WAIT_SECONDS * 10}); do [ -S "$1" ] && exit 0; sleep 0.1; done; '
                                      'echo "no user bus at $1" >&2; exit 1', "sh", f"{m.runtime_dir}/bus"),
                         f"{m.name}: wait for the user bus of {m.user}"))
    if not problems:
        return Part("linger", OK, "linger on, user manager active")
    return Part("linger", MISSING if mf.get("linger") != "1" else DRIFTED, ", ".join(problems), steps)


def _bridge_outside(bridge: str, pools: tuple[tuple[str, int], ...]) -> list[str]:
    if not pools or not bridge.strip():
        return []
    nets = [ipaddress.ip_network(b) for b, _ in pools]
    bad = []
    for word in bridge.split():
        try:
            sub = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if not any(sub.version == n.version and sub.subnet_of(n) for n in nets):
            bad.append(word)
    return bad


def docker_part(m: MachineEnv, host: DockerHost, mf: dict, user_ready: bool, mount_moves: bool = False) -> Part:
    """Rootless Docker for the user: config written, unit installed by the upstream tool, enabled, running,
    answering `docker info` as rootless, its networks in the pools, its environment free of XDG paths.

    `mount_moves`: the mount moves behind the gate in this plan (old layout). A running daemon is then
    restarted after the move: its own mount namespace (rootlesskit's) need not receive the new mount,
    and binds below /mnt/{name} would find the gate's empty mount point."""
    steps: list[Step] = []
    problems: list[str] = []
    want_json = daemon_json(host)
    want_dropin = dropin(host)
    have_json, have_dropin = mf.get("daemon_json"), mf.get("dropin")
    json_changed = want_json is not None and have_json != want_json
    dropin_changed = have_dropin != want_dropin
    unit = mf.get("unit") == "1"
    if json_changed or dropin_changed:
        dirs = [f"{m.home}/.config/systemd/user/docker.service.d"]
        if json_changed:
            dirs.append(f"{m.home}/.config/docker")
        steps.append(as_user(m, ("mkdir", "-p", *dirs), f"{m.name}: config directories of the rootless daemon"))
    if json_changed:
        problems.append("daemon.json " + ("missing" if have_json is None else "differs"))
        steps.append(Upload(daemon_json_path(m), want_json, f"{m.name}: rootless daemon address pools and registry mirrors",
                            mode=0o644, as_user=m.user, old=have_json, expect=sha256(have_json)))
    if dropin_changed:
        problems.append("docker.service drop-in " + ("missing" if have_dropin is None else "differs"))
        steps.append(Upload(dropin_path(m), want_dropin, f"{m.name}: docker.service drop-in (no XDG paths, slirp network)",
                            mode=0o644, as_user=m.user, old=have_dropin, expect=sha256(have_dropin)))
    wait = as_user(m, ("sh", "-c", f"for i in $(seq {DOCKER_WAIT_SECONDS * 5}); do docker info >/dev/null 2>&1 && exit 0; "
                                   "sleep 0.2; done; docker info"), f"{m.name}: wait until `docker info` answers as {m.user}")
    if not unit:
        problems.append("rootless Docker not installed")
        steps.append(as_user(m, (SETUPTOOL, "install"), f"{m.name}: rootless Docker for {m.user} ({SETUPTOOL} install)"))
        steps.append(as_user(m, ("systemctl", "--user", "enable", "docker.service"), f"{m.name}: rootless Docker enabled"))
        steps.append(wait)
        return Part("docker", MISSING, "; ".join(problems), steps)
    if not user_ready:
        # the user manager is being started in this same plan: judge the daemon once it runs
        steps.append(as_user(m, ("systemctl", "--user", "daemon-reload"), f"{m.name}: reload the user units"))
        steps.append(as_user(m, ("systemctl", "--user", "enable", "--now", "docker.service"), f"{m.name}: rootless Docker enabled and started"))
        steps.append(wait)
        return Part("docker", DRIFTED, "; ".join(problems + ["not checked: the user or its manager is missing"]), steps)
    active = mf.get("active") == "active"
    enabled = mf.get("enabled") == "enabled"
    info = mf.get("info") or ""
    rootless = active and "name=rootless" in info
    xdg_bad = [v for v in (mf.get("dockerd_xdg") or "").split()
               if v.split("=", 1)[-1].startswith(("/mnt/", GATES + "/"))]
    bridge_bad = _bridge_outside(mf.get("bridge") or "", host.address_pools) if active else []
    restart = False
    if dropin_changed:
        steps.append(as_user(m, ("systemctl", "--user", "daemon-reload"), f"{m.name}: reload the user units"))
        restart = True
    reload = json_changed and registry_access.only_mirrors_differ(have_json, want_json)
    if json_changed and not reload:
        restart = True
    if xdg_bad:
        problems.append("the daemon inherited " + ", ".join(xdg_bad))
        restart = True
    if bridge_bad:
        problems.append("bridge network " + ", ".join(bridge_bad) + " outside the address pools")
        restart = True
    if mount_moves and active:
        problems.append("the mount moves behind the gate: the daemon restarts to see it")
        restart = True
    if not enabled:
        problems.append("not enabled")
        steps.append(as_user(m, ("systemctl", "--user", "enable", "docker.service"), f"{m.name}: rootless Docker enabled"))
    if not active:
        problems.append(f"not running ({mf.get('active') or 'unknown'})")
        steps.append(as_user(m, ("systemctl", "--user", "restart" if restart else "start", "docker.service"),
                             f"{m.name}: start rootless Docker"))
        steps.append(wait)
    elif restart:
        steps.append(as_user(m, ("systemctl", "--user", "restart", "docker.service"), f"{m.name}: restart rootless Docker"))
        steps.append(wait)
    elif reload:
        steps.append(as_user(m, ("systemctl", "--user", "reload", "docker.service"),
                             f"{m.name}: rootless Docker reads its new registry mirrors (a reload, no restart)"))
    elif not rootless:
        problems.append("`docker info` fails: " + (info.strip() or "no answer"))
        steps.append(as_user(m, ("systemctl", "--user", "restart", "docker.service"), f"{m.name}: restart rootless Docker"))
        steps.append(wait)
    if not steps:
        version = info.split()[0] if info.split() else "?"
        return Part("docker", OK, f"rootless Docker {version} active, enabled, DOCKER_HOST={m.docker_host}")
    return Part("docker", DRIFTED, "; ".join(problems) or "configuration differs", steps)


def links_part(m: MachineEnv, mf: dict) -> Part:
    steps: list[Step] = []
    problems = []
    parents = []
    for i, (link, target) in enumerate(links(m)):
        have = mf.get(f"link{i}", "A")
        if have == f"L:{target}":
            continue
        short = link.replace(m.home, "~", 1)
        if have == "A":
            problems.append(f"{short} missing")
        elif have == "E":
            problems.append(f"{short} is not a link: move it away, then run again")
        else:
            problems.append(f"{short} → {have[2:]}")
        parent = link.rsplit("/", 1)[0]
        if parent != m.home and parent not in parents:
            parents.append(parent)
        steps.append(as_user(m, ("ln", "-sfnT", target, link), f"{m.name}: link {short} → {target}"))
    if not problems:
        return Part("links", OK, "XDG links and ~/service point into " + m.mount)
    if parents:
        steps.insert(0, as_user(m, ("mkdir", "-p", *parents), f"{m.name}: XDG directories of {m.user}"))
    missing_only = all(p.endswith("missing") for p in problems)
    return Part("links", MISSING if missing_only else DRIFTED, "; ".join(problems), steps)


@dataclass
class HostAssessment:
    parts: dict[str, list[Part]]  # machine-env name → its parts, in order
    shared: list[Step]  # subuid, subgid (before users), fstab and the gates' parent (before mounts)
    boot_unit: Step | None = None  # the storage template unit (boot.py), once per host


def assess_host(host: DockerHost, machine_envs: list[MachineEnv], nas_address: str, facts: dict,
                logins: dict | None = None) -> HostAssessment:
    """`logins`: machine-env name → its registry logins read from the NAS (None: not read, so each
    user's ~/.docker/config.json is left as it is)."""
    subuid_parts, subuid_step = subid_file("/etc/subuid", host.name, facts.get("subuid"), machine_envs)
    subgid_parts, subgid_step = subid_file("/etc/subgid", host.name, facts.get("subgid"), machine_envs)
    fstab_parts, fstab_step = fstab_file(facts.get("fstab"), machine_envs, nas_address)
    parts: dict[str, list[Part]] = {}
    boot_unit, boot_parts = boot.assess(machine_envs, facts)
    for m in machine_envs:
        mf = facts.get(f"me:{m.name}") or {}
        user = user_part(m, host.name, facts, mf)
        linger = linger_part(m, mf)
        user_ready = user.state == OK and linger.state == OK
        old = (facts.get("mounts") or {}).get(m.mount)
        mount_moves = bool(old) and old["fstype"] in NFS_TYPES  # the old layout, moved behind the gate now
        parts[m.name] = [
            user,
            subuid_parts[m.name],
            subgid_parts[m.name],
            fstab_parts[m.name],
            gate_part(m, facts, mf),
            mount_part(m, facts, mf),
            linger,
            docker_part(m, host, mf, user_ready, mount_moves),
            links_part(m, mf),
            Part("registry", *registry_access.assess(host, m, facts)),
            Part("logins", *registry_login.assess(m, mf.get("dockercfg"), None if logins is None else
                                                  logins.get(m.name, {}), as_user)),
            Part("boot", *boot_parts[m.name]),
        ]
    return HostAssessment(parts, [subuid_step, subgid_step, fstab_step, gates_step(facts)], boot_unit)


STAGES = ("user", "gate", "mount", "linger", "docker", "links", "registry", "logins", "boot")


def plan_host(host: DockerHost, machine_envs: list[MachineEnv], nas_address: str, facts: dict,
              logins: dict | None = None) -> HostPlan:
    """The steps that bring every machine-env of this host to its desired state, in dependency order:
    subordinate ids, users, fstab, gates, mounts, linger, rootless Docker, links, registries, logins.
    `logins`: see assess_host."""
    a = assess_host(host, machine_envs, nas_address, facts, logins)
    subuid_step, subgid_step, fstab_step, gates = a.shared
    steps: list[Step] = [subuid_step, subgid_step]

    def stage(name: str) -> None:
        for m in machine_envs:
            part = next(p for p in a.parts[m.name] if p.name == name)
            if name == "logins" and part.detail == registry_login.NOTHING:
                continue  # no login anywhere: nothing to say
            steps.extend(part.steps if part.steps else [Noop(f"{m.name}: {part.detail}")])

    stage("user")
    steps.append(fstab_step)
    steps.append(gates)
    for name in STAGES[1:-1]:
        stage(name)
    # boot order: the storage template, each user manager's drop-in, one reload if any changed
    before = len(steps)
    steps.append(a.boot_unit)
    stage("boot")
    steps.append(boot.reload_step(any(isinstance(s, Upload) for s in steps[before:])))
    data = {"parts": {name: [p.describe() for p in parts] for name, parts in a.parts.items()},
            "machine_envs": [m.name for m in machine_envs]}
    return HostPlan(host.name, steps, data)


def docker_job(settings, host: DockerHost, machine_envs: list[MachineEnv], nas_address: str,
               logins: dict | None = None):
    """The Docker-host phase for every given machine-env of one host: one fact round trip, one apply.
    `logins`: see assess_host."""
    from ..engine import Job

    machine_envs = sorted(machine_envs, key=lambda m: m.uid)
    return Job(host, facts_for(machine_envs, host),
               lambda facts: plan_host(host, machine_envs, nas_address, facts, logins))


# -- removal -----------------------------------------------------------------------------------

def plan_remove(host: DockerHost, m: MachineEnv, nas_address: str, facts: dict) -> HostPlan:
    """Take a machine-env off its Docker host: containers and rootless Docker stopped, linger off, the
    mount, the link /mnt/{name}, the gate and the fstab line gone, subordinate ids and the user removed.
    NAS data is not touched here (every directory goes by rmdir, never rm -r)."""
    mf = facts.get(f"me:{m.name}") or {}
    passwd, group = facts.get("passwd") or {}, facts.get("group") or {}
    u = passwd.get(m.user)
    if u is not None and u["uid"] != m.uid:
        raise TinsnipError(f"{host.name}: user {m.user} has uid {u['uid']}, not {m.uid}: refusing to remove it")
    steps: list[Step] = []
    if mf.get("active") == "active":
        steps.append(as_user(m, ("sh", "-c", 'ids=$(docker ps -q); [ -z "$ids" ] || docker stop $ids'),
                             f"{m.name}: stop the containers of {m.user}"))
    if mf.get("active") == "active" or mf.get("enabled") == "enabled":
        steps.append(as_user(m, ("systemctl", "--user", "disable", "--now", "docker.service"),
                             f"{m.name}: stop and disable rootless Docker"))
    if mf.get("linger") == "1":
        steps.append(Run(("loginctl", "disable-linger", m.user), f"{m.name}: linger off for {m.user}"))
    if mf.get("manager") == "active" or mf.get("dockerd"):
        steps.append(Run(("systemctl", "stop", f"user@{m.uid}.service"), f"{m.name}: stop the user manager of {m.user}"))
    mounts = facts.get("mounts") or {}
    for path in (m.mount_point, m.mount):  # the gate's mount, or the old layout's on /mnt/{name}
        if path in mounts:
            # before the sweep of the user's processes: an NFS client helper may run as the squashed uid
            steps.append(Run(("umount", path), f"{m.name}: unmount {path}", unless=f"! {_mounted(path)}"))
    if u is not None:
        steps.append(Run(("sh", "-c", 'for i in $(seq 50); do pgrep -u "$1" >/dev/null || exit 0; sleep 0.1; done; '
                                      'pkill -KILL -u "$1"; sleep 0.5; exit 0', "sh", str(m.uid)),
                         f"{m.name}: no processes of {m.user} left"))
    have = mf.get("mnt") or "A"
    if have.startswith("L:"):
        steps.append(Run(("rm", "-f", m.mount), f"{m.name}: remove the link {m.mount}"))
    elif have == "D" or m.mount in mounts:
        # rmdir, never rm -r: a directory that still holds anything is not ours to delete
        steps.append(Run(("rmdir", m.mount), f"{m.name}: remove the empty directory {m.mount}"))
    if mf.get("mntdir") == "1" or m.mount_point in mounts:
        steps.append(Run(("rmdir", m.mount_point), f"{m.name}: remove the empty mount point {m.mount_point}"))
    if mf.get("gate"):
        steps.append(Run(("rmdir", m.gate), f"{m.name}: remove the gate {m.gate}"))
    text = facts.get("fstab")
    lines = (text or "").splitlines(keepends=True)
    kept = [line for line in lines if not (len(line.split()) >= 2 and line.split()[1] in (m.mount, m.mount_point)
                                           and not line.lstrip().startswith("#"))]
    if len(kept) != len(lines):
        steps.append(Upload("/etc/fstab", "".join(kept), f"{m.name}: drop the /etc/fstab line of {m.mount_point}",
                            owner="0:0", old=text, expect=sha256(text)))
    for path, key in (("/etc/subuid", "subuid"), ("/etc/subgid", "subgid")):
        text = facts.get(key)
        lines = (text or "").splitlines(keepends=True)
        kept = [line for line in lines if line.split(":")[0] not in (m.user, str(m.uid))]
        if len(kept) != len(lines):
            steps.append(Upload(path, "".join(kept), f"{m.name}: drop the {path} range of {m.user}",
                                owner="0:0", old=text, expect=sha256(text)))
    steps.extend(boot.remove_steps(m, facts))
    if u is not None:
        steps.append(Run(("userdel", "-r", m.user), f"{m.name}: remove user {m.user} and its home"))
    elif mf.get("home"):
        steps.append(Run(("rm", "-rf", "--one-file-system", m.home), f"{m.name}: remove the home {m.home} left behind"))
    g = group.get(m.user)
    if g is not None and g["gid"] == m.gid:
        steps.append(Run(("groupdel", m.user), f"{m.name}: remove group {m.user}",
                         unless=f"! getent group {shlex.quote(m.user)}"))
    if not steps:
        steps.append(Noop(f"{m.name}: nothing of it left on {host.name}"))
    return HostPlan(host.name, steps, {"machine_env": m.name})


def remove_job(settings, host: DockerHost, m: MachineEnv, nas_address: str):
    from ..engine import Job

    return Job(host, facts_for([m], host), lambda facts: plan_remove(host, m, nas_address, facts))
