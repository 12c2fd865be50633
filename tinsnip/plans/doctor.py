"""Preflight checks of the inventory's hosts, before anything changes. Pure: checks are facts.

Every check is a read-only probe plus a judgement, and every failed check names its fix. All checks
of one host travel in the one round trip that also proves SSH (with a verified host key) and sudo.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from ..inventory import DockerHost, Host, Nas
from ..script import Fact
from ..smep import ENVS, MAX_SHEET, SUBID_BASE, SUBID_COUNT

# every SMEP uid of sheets 1–5 maps into this band of subordinate ids
SUBID_BAND = (SUBID_BASE, SUBID_BASE + (MAX_SHEET * 10000 + 9999 - 10000 + 1) * SUBID_COUNT)


@dataclass(frozen=True)
class Check:
    name: str
    command: str
    judge: Callable[[int, str], tuple[bool, str]]
    fix: str

    def fact(self) -> Fact:
        return Fact(f"check:{self.name}", self.command, self.judge)


def _exit_zero(detail_ok: str, detail_bad: str) -> Callable[[int, str], tuple[bool, str]]:
    def judge(rc: int, out: str) -> tuple[bool, str]:
        text = out.strip().splitlines()[-1] if out.strip() else ""
        return (True, text or detail_ok) if rc == 0 else (False, text or detail_bad)
    return judge


def _tool(name: str, cmd: str, fix: str, what: str | None = None) -> Check:
    q = shlex.quote(cmd)
    return Check(name, f"p=$(command -v {q}) && [ -x \"$p\" ] && [ -f \"$p\" ] && echo \"$p\"",
                 _exit_zero("", f"{what or cmd} not found on PATH"), fix)


def _compose(rc: int, out: str) -> tuple[bool, str]:
    text = out.strip().splitlines()[0] if out.strip() else ""
    m = re.search(r"(\d+)\.(\d+)", text)
    if rc != 0 or not m:
        return False, text or "`docker compose` is missing"
    if int(m.group(1)) < 2:
        return False, f"{text}: Compose v2 is needed"
    return True, text


def _setuid_tool(path: str) -> Check:
    q = shlex.quote(path)
    return Check(path.rsplit("/", 1)[-1],
                 f"if [ -f {q} ] && [ -x {q} ]; then if [ -u {q} ] || getcap {q} 2>/dev/null | grep -q cap_set; "
                 f"then echo \"{path} (setuid/capabilities)\"; else echo '{path} has no setuid bit or capability'; exit 1; fi; "
                 f"else echo '{path} missing or not an executable file'; exit 1; fi",
                 _exit_zero("", f"{path} unusable"),
                 "apt-get install uidmap (newuidmap/newgidmap, needed by rootless Docker)")


def _subids(rc: int, out: str) -> tuple[bool, str]:
    lo, hi = SUBID_BAND
    pattern = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*-(" + "|".join(ENVS) + r")$")
    blocking = []
    for line in out.splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        start, count = int(parts[1]), int(parts[2])
        if start < hi and lo < start + count and not pattern.match(parts[0]):
            blocking.append(line.strip())
    if blocking:
        return False, "entries in tinsnip's subordinate id band " + f"{lo}–{hi - 1}: " + ", ".join(blocking)
    return True, f"band {lo}–{hi - 1} free for machine-env users"


def nas_checks(nas: Nas) -> list[Check]:
    vol = shlex.quote(nas.volume)
    return [
        Check("sudo", "id -u", lambda rc, out: (out.strip() == "0", "commands run as root" if out.strip() == "0"
                                                 else f"running as uid {out.strip()}, not root"),
              f"give {nas.user} sudo rights on the NAS and set TINSNIP_NAS_SUDO_PASSWORD"),
        _tool("exportfs", "exportfs", "enable the NFS service in DSM (Control Panel → File Services → NFS)"),
        Check("volume", f"[ -d {vol} ] && echo {vol}", _exit_zero("", f"{nas.volume} is not a directory"),
              f"create the volume in DSM, or set nas.volume in the inventory (now {nas.volume})"),
        Check("exports", "[ -e /etc/exports ] || exit 0; [ -r /etc/exports ] && [ -w /etc/exports ] && echo /etc/exports writable",
              _exit_zero("no /etc/exports yet (it will be created)", "/etc/exports is not writable"),
              "check /etc/exports' permissions on the NAS"),
        _tool("flock", "flock", "install util-linux (flock serialises tinsnip runs on a host)"),
    ]


def docker_checks(host: DockerHost) -> list[Check]:
    return [
        Check("sudo", "id -u", lambda rc, out: (out.strip() == "0", "commands run as root" if out.strip() == "0"
                                                 else f"running as uid {out.strip()}, not root"),
              f"log in as root or give {host.user} sudo rights; set TINSNIP_SUDO_PASSWORD_{host.name.upper().replace('-', '_')}"),
        Check("systemd", "c=$(cat /proc/1/comm); echo \"PID 1 is $c\"; [ \"$c\" = systemd ]",
              _exit_zero("", "PID 1 is not systemd"),
              "boot the host with systemd: linger and rootless Docker need its user managers"),
        Check("logind", "systemctl is-active systemd-logind.service", _exit_zero("", "systemd-logind is not active"),
              "apt-get install libpam-systemd dbus, then systemctl start systemd-logind"),
        Check("user-bus", "[ -e /usr/lib/systemd/user/dbus.socket ] && echo 'dbus user session'",
              _exit_zero("", "no dbus user session"), "apt-get install dbus-user-session"),
        _setuid_tool("/usr/bin/newuidmap"),
        _setuid_tool("/usr/bin/newgidmap"),
        Check("userns", "n=$(cat /proc/sys/user/max_user_namespaces); echo \"max_user_namespaces=$n\"; [ \"$n\" -gt 0 ]",
              _exit_zero("", "user namespaces are off"), "sysctl -w user.max_user_namespaces=28633 (and in /etc/sysctl.d)"),
        Check("subids", "cat /etc/subuid /etc/subgid 2>/dev/null; exit 0", _subids,
              "move those entries out of the band (usermod --del-subuids/--del-subgids), or renumber them"),
        _tool("rootless-setuptool", "dockerd-rootless-setuptool.sh",
              "apt-get install docker.io rootlesskit slirp4netns (Debian: link /usr/share/docker.io/contrib/"
              "dockerd-rootless*.sh into /usr/bin), or docker-ce-rootless-extras"),
        _tool("rootlesskit", "rootlesskit", "apt-get install rootlesskit slirp4netns"),
        _tool("slirp4netns", "slirp4netns", "apt-get install slirp4netns"),
        _tool("docker", "docker", "apt-get install docker.io (or docker-ce-cli)"),
        Check("compose", "docker compose version 2>&1", _compose,
              "install Compose v2 as a CLI plugin (/usr/libexec/docker/cli-plugins/docker-compose)"),
        _tool("nfs-client", "mount.nfs", "apt-get install nfs-common", "mount.nfs"),
        _tool("flock", "flock", "apt-get install util-linux"),
    ]


def _registries(host: DockerHost) -> list[tuple[str, str | None]]:
    """(HOST:PORT, CA PEM or None) of every registry the inventory names for a host: CAs and mirrors."""
    cas = dict(host.registry_cas)
    regs = list(cas)
    for url in host.registry_mirrors:
        hostport = url[len("https://"):].rstrip("/")
        if ":" not in hostport.rsplit("]", 1)[-1]:
            hostport += ":443"
        if hostport not in regs:
            regs.append(hostport)
    return [(r, cas.get(r)) for r in regs]


def _registry_judge(reg: str):
    def judge(rc: int, out: str) -> tuple[bool, str]:
        text = " ".join(out.split())
        code = text.rsplit(" ", 1)[-1] if text else ""
        if rc == 0 and code in ("200", "401"):
            return True, f"https://{reg}/v2/ answers over TLS (HTTP {code}{', login needed' if code == '401' else ''})"
        first = out.strip().splitlines()[0] if out.strip() else ""
        return False, (first[:200] or f"https://{reg}/v2/ does not answer") + f" (https://{reg}/v2/)"
    return judge


def registry_checks(host: DockerHost) -> list[Check]:
    """One TLS round trip from the Docker host to each registry, with the inventory's CA when it gives one."""
    out = []
    for reg, pem in _registries(host):
        url = shlex.quote(f"https://{reg}/v2/")
        if pem is not None:
            ca = f"ca=$(mktemp); cat >\"$ca\" <<'TINSNIP_CA'\n{pem.rstrip()}\nTINSNIP_CA\n"
            opt = '--cacert "$ca"'
            fix = (f"start the registry at {reg} or correct the address; if it names a certificate problem, the file "
                   f"under registry_cas.{reg} is not the CA that signed the registry's certificate")
        else:
            ca, opt = "", ""
            fix = (f"start the registry at {reg} or correct registry_mirrors; if the error names a certificate, add "
                   f"registry_cas: {{{reg}: <its CA file>}} to docker_hosts.{host.name} in the inventory")
        cmd = (f"{ca}command -v curl >/dev/null || {{ echo 'curl not found on this host (apt-get install curl)'; exit 1; }}\n"
               f"curl -sS --max-time 5 {opt} -o /dev/null -w ' %{{http_code}}' {url} 2>&1; rc=$?; "
               + ('rm -f "$ca"; ' if pem is not None else "") + "exit $rc")
        out.append(Check(f"registry {reg}", cmd, _registry_judge(reg), fix))
    return out


def checks_for(host: Host) -> list[Check]:
    return nas_checks(host) if isinstance(host, Nas) else docker_checks(host) + registry_checks(host)


def report(host: Host, checks: list[Check], facts: dict) -> list[dict]:
    """[{check, ok, detail, fix?}] for a host, from its gathered facts."""
    rows = []
    for check in checks:
        ok, detail = facts[f"check:{check.name}"]
        row = {"check": check.name, "ok": bool(ok), "detail": detail}
        if not ok:
            row["fix"] = check.fix
        rows.append(row)
    return rows
