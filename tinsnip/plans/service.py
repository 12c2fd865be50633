"""A catalog service on a machine-env: its files, ports, volumes on the NAS, and containers. Pure code.

Deploying catalog service S onto machine-env M (SPEC §8) plans, on M's Docker host:
  the directory /mnt/M/service/S and a copy of S's files, written as M's user (the mount squashes
  every write to that user anyway); S's ports, first-fit from M's ten, in /mnt/M/.machine/ports;
  S's .env; a docker-compose.override.yml binding each named volume to /mnt/M/data/S/{volume};
  the images in M's own rootless daemon (loaded from a local archive when the inventory names one);
  then `docker compose config --quiet` and `docker compose up --wait` as M's user, with exactly the
  variables of machine.env and .env (never XDG_DATA_HOME/XDG_CONFIG_HOME/XDG_STATE_HOME) plus what
  the docker CLI needs.

A deployed service plans only Noops: files compare by content, the ports file by content, and the
containers by state, health, image, and the `tinsnip.inputs` label the override gives them: a digest
of every file and variable they were made from.
"""

from __future__ import annotations

import io
import json
import re
import shlex
from dataclasses import dataclass, field

from dotenv import dotenv_values

from ..catalog import ENV_NAME, OVERRIDE_NAME
from ..errors import InputError, RemoteError
from ..render import render
from ..script import CLEAN_PATH, Fact
from ..smep import MachineEnv
from ..steps import HostPlan, Noop, Run, Step, Upload, sha256
from . import service_files as manifest
from .service_override import OverrideSpec, render_override

SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
XDG_VARS = ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
WAIT_SECONDS = 120
LOG_LINES = 30
DOCKER_TIMEOUT = 30  # seconds for a read-only docker call made while gathering facts
PROJECT_LABEL = "com.docker.compose.project"
INPUTS_LABEL = "tinsnip.inputs"

# `docker compose up` as the service user; on failure, the last log lines of each container that is
# not running (or not healthy), so the reason shows where the failure is reported.
UP_SCRIPT = r"""t=$1; sec=$2; last=$3; shift 3
__SECRETS__
record() { printf '%s %s\n%s\n' "$1" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$2" >"$last.tmp" && mv -f -- "$last.tmp" "$last"; }
"$@" up --detach --remove-orphans --wait --wait-timeout "$t"
rc=$?
if [ "$rc" -eq 0 ]; then record ok ""; exit 0; fi
echo "docker compose up failed (exit $rc)" >&2
why="docker compose up failed (exit $rc)"
for i in $IMAGES; do
  docker image inspect "$i" >/dev/null 2>&1 && continue
  r=${i%%/*}
  case $i in */*) case $r in *.*|*:*|localhost) ;; *) r=docker.io;; esac;; *) r=docker.io;; esac
  msg="image $i is not in $(id -un)'s Docker and could not be pulled from $r: give the host an archive of it (docker_hosts.$HOST.images in hosts.yaml: {\"$i\": /path/to/image.tar}), or a registry mirror that has it (registries: in hosts.yaml), then deploy again"
  echo "$msg" >&2
  why="$why; $msg"
done
"$@" ps --all >&2
bad=$("$@" ps --all --format '{{.Service}} {{.State}} {{.Health}}' | awk '$2 != "running" || ($3 != "" && $3 != "healthy") {print $1}' | sort -u)
[ -n "$bad" ] || bad=$("$@" config --services)
for s in $bad; do
  echo "--- last $LINES log lines of $s ---" >&2
  "$@" logs --no-color --tail "$LINES" "$s" >&2
done
record failed "$why"
exit $rc
"""

# The machine-env's secrets as an env file for compose interpolation: built on the Docker host from the
# owner-only files on the NAS, 0600 in the user's runtime directory, removed on exit; no value is ever
# in a command line or in tinsnip's output. Its --env-file goes right after `docker compose`.
SECRETS_SNIPPET = r"""if [ -d "$sec" ]; then
  umask 077
  sf=$(mktemp "${XDG_RUNTIME_DIR:-/tmp}/tinsnip-secrets.XXXXXX") || exit 1
  trap 'rm -f "$sf"' EXIT
  for f in "$sec"/*; do
    n=${f##*/}
    case $n in *[!A-Z0-9_]*|[!A-Z]*) continue;; esac
    [ -f "$f" ] || continue
    v=$(cat -- "$f") || exit 1
    case $v in *"'"*|*"
"*) echo "secret $n holds a quote or a newline, which a compose env file cannot carry; set it again" >&2; exit 2;; esac
    printf "%s='%s'\n" "$n" "$v" >>"$sf"
  done
  a=$1 b=$2; shift 2
  set -- "$a" "$b" --env-file "$sf" "$@"
fi"""
CONFIG_SCRIPT = 'sec=$1; shift\n' + SECRETS_SNIPPET + '\n"$@"\n'

# docker load as the service user from an archive copied to the SSH user's home; the copy goes after.
LOAD_SCRIPT = r"""f=$1; shift
"$@" docker load <"$f"; rc=$?
rm -f -- "$f"
exit $rc
"""


# -- paths ---------------------------------------------------------------------------------------


def service_dir(m: MachineEnv, service: str) -> str:
    return f"{m.mount}/service/{service}"


def data_dir(m: MachineEnv, service: str) -> str:
    return f"{m.mount}/data/{service}"


def ports_path(m: MachineEnv) -> str:
    return f"{m.mount}/.machine/ports"


manifest_path = manifest.manifest_path


def last_deploy_path(m: MachineEnv, service: str) -> str:
    """The outcome of the service's last `docker compose up` (ok/failed, when, why), kept on the NAS."""
    return f"{manifest.deployed_dir(m)}/{service}.last"


def parse_last(text: str) -> dict:
    """{service: {"outcome", "at", "why"}} from `name\0content\0` records."""
    out = {}
    parts = text.split("\0")
    for name, body in zip(parts[::2], parts[1::2]):
        head, _, why = body.partition("\n")
        outcome, _, at = head.partition(" ")
        if name:
            out[name] = {"outcome": outcome, "at": at.strip(), "why": why.strip()}
    return out


def machine_env_path(m: MachineEnv) -> str:
    return f"{m.mount}/.machine/machine.env"


def secrets_dir(m: MachineEnv) -> str:
    """The machine-env's secrets (machine.secret-set), one owner-only file per name, on the NAS."""
    return f"{m.mount}/.machine/secrets"


def archive_name(image: str) -> str:
    """Where an image archive is copied to, relative to the SSH user's home (private to that user)."""
    return f".tinsnip-image-{sha256(image)[:16]}.tar"


# -- what a deploy wants -------------------------------------------------------------------------


@dataclass(frozen=True)
class Deploy:
    """Desired state of catalog service `service` on machine-env `m`."""

    m: MachineEnv
    service: str
    compose_file: str  # its name inside the service directory
    files: dict = field(default_factory=dict)  # relative path → (text, mode)
    services: tuple[str, ...] = ()  # the compose services
    volumes: tuple[str, ...] = ()  # the named volumes to bind to the NAS
    ports_needed: int = 0
    images: tuple[str, ...] = ()
    archives: dict = field(default_factory=dict)  # image → local archive (docker save format)
    wait_seconds: int = WAIT_SECONDS
    spec: OverrideSpec | None = None  # what the override supplies (env files, ports, runtime binds)

    @property
    def dir(self) -> str:
        return service_dir(self.m, self.service)

    @property
    def data(self) -> str:
        return data_dir(self.m, self.service)

    def dirs(self) -> list[str]:
        """The directories the service's files need, parents first."""
        subdirs = set()
        for rel in self.files:
            parts = rel.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                subdirs.add("/".join(parts[:i]))
        return [self.dir] + [f"{self.dir}/{d}" for d in sorted(subdirs)]

    @property
    def binds(self) -> tuple:
        return self.spec.binds if self.spec else ()

    def data_dirs(self) -> list[str]:
        subs = [*self.volumes, *dict.fromkeys(b.rel for b in self.binds)]
        return [self.data] + [f"{self.data}/{v}" for v in subs] if subs else []

    def legacy_bind_dirs(self) -> list[str]:
        """Where a runtime bind's data sat before tinsnip bound it onto the NAS data tree."""
        return [f"{self.dir}/{rel}" for rel in dict.fromkeys(b.rel for b in self.binds)]

    def where(self) -> list[dict]:
        """Where each named volume and bind of the service lives (the deploy summary says so)."""
        out = [{"kind": "volume", "name": v, "path": f"{self.data}/{v}", "on": "NAS"} for v in self.volumes]
        out += [{"kind": "bind", "name": b.source, "service": b.service, "target": b.target,
                 "path": f"{self.data}/{b.rel}", "on": "NAS"} for b in self.binds]
        return out


# -- ports -----------------------------------------------------------------------------------------


def parse_ports(text: str | None) -> dict[str, list[int]]:
    """`name=port,port` lines → {name: [ports]}; comments, blanks and broken lines are ignored."""
    alloc: dict[str, list[int]] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        try:
            ports = [int(p) for p in value.split(",") if p.strip()]
        except ValueError:
            continue
        alloc[name.strip()] = ports
    return alloc


def render_ports(m: MachineEnv, alloc: dict[str, list[int]]) -> str:
    lines = [f"# Ports of the catalog services on {m.name}, kept by tinsnip: TIN_PORT_n of a service is the",
             "# n-th port on its line. A deploy takes the lowest free ones; a remove frees them."]
    lines += [f"{name}={','.join(str(p) for p in ports)}" for name, ports in sorted(alloc.items()) if ports]
    return "\n".join(lines) + "\n"


def allocate_ports(machine_ports: list[int], alloc: dict[str, list[int]], service: str,
                   need: int) -> dict[str, list[int]]:
    """Give `service` `need` ports: the ones it has (in order), then the lowest free ones (gaps first).

    Ports a service no longer needs are freed; nothing else moves. InputError when too few are free.
    """
    mine_before = alloc.get(service, [])
    taken = {p for name, ports in alloc.items() if name != service for p in ports}
    mine = [p for p in mine_before if p in machine_ports and p not in taken][:need]
    for p in machine_ports:
        if len(mine) >= need:
            break
        if p not in taken and p not in mine:
            mine.append(p)
    if len(mine) < need:
        holders = ", ".join(f"{n}: {','.join(map(str, ps))}" for n, ps in sorted(alloc.items()) if n != service and ps)
        raise InputError(f"{service} needs {need} ports but only {len(mine)} of the machine's ten are free "
                         f"(held by {holders}); remove a service first (service.remove)")
    new = {n: list(ps) for n, ps in alloc.items() if n != service}
    if mine:
        new[service] = mine
    return new


def free_ports(alloc: dict[str, list[int]], service: str) -> dict[str, list[int]]:
    return {n: list(ps) for n, ps in alloc.items() if n != service}


# -- rendering -----------------------------------------------------------------------------------


def service_env(m: MachineEnv, service: str, ports: list[int]) -> str:
    return render("service.env.j2", m=m, service=service, ports=ports)


def override(m: MachineEnv, service: str, services: tuple[str, ...], volumes: tuple[str, ...], inputs: str,
             spec: OverrideSpec | None = None, ports: list[int] | None = None) -> str:
    spec = spec or OverrideSpec(services=tuple(services), volumes=tuple(volumes))
    return render_override(spec, service, data_dir(m, service), list(ports or []), INPUTS_LABEL, inputs)


def inputs_digest(d: Deploy, env_text: str, machine_env: str | None) -> str:
    """A fingerprint of everything a deploy's containers are made from: the catalog files, .env,
    machine.env and where the volumes and binds go. Carried by each container as a label, so a redeploy
    with nothing changed can tell, and any change (here, or by machine.create) recreates the containers."""
    parts = [f"service {d.service}", f"data {d.data}", "volumes " + ",".join(d.volumes)]
    parts += [f"bind {b.service} {b.rel} {b.target}" for b in d.binds]
    parts += [f"file {rel} {mode:o} {sha256(text)}" for rel, (text, mode) in sorted(d.files.items())]
    parts += [f".env {sha256(env_text)}", f"machine.env {sha256(machine_env)}"]
    return sha256("\n".join(parts))


def parse_env(text: str | None) -> dict[str, str]:
    """A dotenv file's variables, as compose's env_file reads them (comments and blanks skipped)."""
    if not text:
        return {}
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def docker_env(m: MachineEnv) -> tuple[tuple[str, str], ...]:
    """What the docker CLI needs to reach the user's rootless daemon (PATH is set by the engine)."""
    return (("HOME", m.home), ("XDG_RUNTIME_DIR", m.runtime_dir), ("DOCKER_HOST", m.docker_host))


def up_env(m: MachineEnv, machine_env: str | None = None, env_text: str = "") -> tuple[tuple[str, str], ...]:
    """Only what the docker CLI needs: compose reads machine.env, .env and the service's own env files
    itself (`--env-file`, compose_base), so no value of theirs is ever in a command line."""
    return docker_env(m)


def interpolation_files(m: MachineEnv, service: str, own: tuple[str, ...] = ()) -> list[str]:
    """The env files compose interpolation reads, later ones winning: the service's own, machine.env, .env."""
    d = service_dir(m, service)
    return [*[f"{d}/{rel}" for rel in own], machine_env_path(m), f"{d}/{ENV_NAME}"]


def known_variables(d: Deploy, machine_env: str | None, env_text: str) -> set[str]:
    known = set(parse_env(machine_env)) | set(parse_env(env_text)) | {k for k, _ in docker_env(d.m)}
    for rel in (d.spec.own_env_files if d.spec else ()):
        if rel in d.files:
            known |= set(parse_env(d.files[rel][0]))
    return known


def check_variables(d: Deploy, machine_env: str | None, env_text: str, secret_names=()) -> None:
    """Exit 2 before any change for a variable the compose file needs (no default) that nobody sets."""
    if not d.spec:
        return
    known = known_variables(d, machine_env, env_text) | set(secret_names)
    missing = [n for n in d.spec.needs if n.name not in known]
    if missing:
        lines = "\n".join(f"  - ${{{n.name}}} ({d.compose_file}:{n.line}: {n.text})" for n in missing)
        names = " ".join(n.name for n in missing)
        raise InputError(
            f"{d.service} needs variables that nobody sets:\n{lines}\n"
            f"set each in one of the service's own env files (listed under env_file, shipped in the catalog), "
            f"or, for a secret, on the machine-env: `tin machine.secret-set --service {d.m.machine} --env {d.m.env} "
            f"--name {missing[0].name}` (the value on stdin, never on the command line; "
            f"TINSNIP_SECRET_<NAME> in CI) for each of: {names}")


def compose_base(m: MachineEnv, service: str, compose_file: str, own: tuple[str, ...] = ()) -> tuple[str, ...]:
    d = service_dir(m, service)
    env_files = [x for f in interpolation_files(m, service, own) for x in ("--env-file", f)]
    return ("docker", "compose", "--ansi", "never", "--project-name", service, "--project-directory", d,
            *env_files, "-f", f"{d}/{compose_file}", "-f", f"{d}/{OVERRIDE_NAME}")


def env_file_args(m: MachineEnv, service: str) -> tuple[str, ...]:
    """Interpolation from the files themselves, for read-only compose calls made while gathering."""
    return ("--env-file", machine_env_path(m), "--env-file", f"{service_dir(m, service)}/{ENV_NAME}")


# -- facts ---------------------------------------------------------------------------------------


def user_shell(m: MachineEnv, argv: list[str] | tuple[str, ...]) -> str:
    """Shell text running argv as the machine user with only docker's environment."""
    env = [f"{k}={v}" for k, v in docker_env(m)]
    return shlex.join(["runuser", "-u", m.user, "--", "env", "-i", f"PATH={CLEAN_PATH}", *env, *argv])


def _text(rc: int, out: str) -> str | None:
    if rc == 3:
        return None
    if rc != 0:
        raise RemoteError(f"cannot read a file (exit {rc}): {out.strip()[-300:]}")
    return out


def file_fact(name: str, path: str) -> Fact:
    q = shlex.quote(path)
    return Fact(name, f"if [ -f {q} ]; then cat {q}; else exit 3; fi", _text)


def _uid(rc: int, out: str) -> int | None:
    return int(out.strip()) if rc == 0 and out.strip().isdigit() else None


def _lines(rc: int, out: str) -> list[str]:
    return [line for line in out.splitlines() if line]


def _files(rc: int, out: str) -> dict[str, int]:
    found = {}
    for entry in out.split("\0"):
        mode, _, rel = entry.partition(" ")
        if rel and mode.isdigit():
            found[rel] = int(mode, 8)
    return found


def parse_container(c: dict) -> dict:
    labels = (c.get("Config") or {}).get("Labels") or {}
    state = c.get("State") or {}
    ports = []
    for cport, binds in sorted(((c.get("NetworkSettings") or {}).get("Ports") or {}).items()):
        for b in binds or []:
            ports.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{cport}")
    return {
        "name": (c.get("Name") or "").lstrip("/"),
        "project": labels.get(PROJECT_LABEL),
        "service": labels.get("com.docker.compose.service"),
        "oneoff": labels.get("com.docker.compose.oneoff") == "True",
        "state": state.get("Status"),
        "health": (state.get("Health") or {}).get("Status"),
        "exit_code": state.get("ExitCode"),
        "image": (c.get("Config") or {}).get("Image"),
        "image_id": c.get("Image"),
        "inputs": labels.get(INPUTS_LABEL),
        "ports": ports,
        "user": (c.get("Config") or {}).get("User"),
    }


def _containers(rc: int, out: str) -> dict:
    if rc != 0:
        return {"error": out.strip()[-500:] or f"exit {rc}", "containers": []}
    try:
        data = json.loads(out or "[]")
    except ValueError:
        return {"error": f"unreadable answer from docker inspect: {out.strip()[:200]}", "containers": []}
    return {"error": None, "containers": [parse_container(c) for c in data]}


def containers_fact(m: MachineEnv, project: str | None = None) -> Fact:
    """Every compose container of the user's daemon (of one project, if given), inspected."""
    label = PROJECT_LABEL + (f"={project}" if project else "")
    ps = user_shell(m, ["timeout", str(DOCKER_TIMEOUT), "docker", "ps", "-aq", "--filter", f"label={label}"])
    inspect = user_shell(m, ["timeout", str(DOCKER_TIMEOUT), "docker", "inspect"])
    return Fact("containers", f'ids=$({ps} 2>&1) || {{ printf "%s\\n" "$ids"; exit 1; }}\n'
                              f'[ -n "$ids" ] || {{ echo "[]"; exit 0; }}\n'
                              f'{inspect} $ids 2>&1', _containers)


def _objects(rc: int, out: str) -> dict[str, int]:
    counts = {}
    for line in out.splitlines():
        kind, _, n = line.partition(" ")
        if n.strip().isdigit():
            counts[kind] = int(n)
    return counts


def objects_fact(m: MachineEnv, project: str) -> Fact:
    """How many containers, networks and volumes of a compose project the user's daemon holds."""
    parts = []
    for kind, argv in (("containers", ["ps", "-aq"]), ("networks", ["network", "ls", "-q"]),
                       ("volumes", ["volume", "ls", "-q"])):
        cmd = user_shell(m, ["timeout", str(DOCKER_TIMEOUT), "docker", *argv, "--filter",
                             f"label={PROJECT_LABEL}={project}"])
        parts.append(f'n=$({cmd} 2>/dev/null | wc -l); echo "{kind} $n"')
    return Fact("objects", "\n".join(parts), _objects)


def _images(rc: int, out: str) -> dict[str, str | None]:
    found = {}
    for line in out.splitlines():
        name, _, ident = line.rpartition(" ")
        if name:
            found[name] = ident if ident.startswith("sha256:") else None
    return found


def deploy_facts(d: Deploy, ssh_user: str) -> list[Fact]:
    m = d.m
    q = shlex.quote
    facts = [
        Fact("uid", f"id -u -- {q(m.user)}", _uid),
        Fact("mounted", f"mountpoint -q {q(m.mount_point)}", lambda rc, out: rc == 0),
        file_fact("machine_env", machine_env_path(m)),
        file_fact("ports", ports_path(m)),
        file_fact("manifest", manifest.manifest_path(m, d.service)),
        Fact("secret_names", f"ls -1 -- {q(secrets_dir(m))} 2>/dev/null; true",
             lambda rc, out: [n for n in out.split() if SECRET_NAME.match(n)]),
        Fact("dirs", "for d in " + " ".join(q(p) for p in [*d.dirs(), *d.data_dirs(), *d.legacy_bind_dirs(),
                                                           manifest.deployed_dir(m)])
             + '; do [ -d "$d" ] && printf "%s\\n" "$d"; done; true', _lines),
        Fact("files", f"find {q(d.dir)} -type f -printf '%m %P\\0' 2>/dev/null; true", _files),
        Fact("ssh_home", f"getent passwd {q(ssh_user)} | cut -d: -f6", lambda rc, out: out.strip() or None),
        containers_fact(m, d.service),
    ]
    for rel in [*d.files, ENV_NAME, OVERRIDE_NAME]:
        facts.append(file_fact(f"file:{rel}", f"{d.dir}/{rel}"))
    if d.images:
        loop = 'for i; do id=$(docker image inspect --format "{{.Id}}" "$i" 2>/dev/null) || id=-; ' \
               'printf "%s %s\\n" "$i" "$id"; done'
        facts.append(Fact("images", user_shell(m, ["sh", "-c", loop, "sh", *d.images]), _images))
    return facts


# -- planning ------------------------------------------------------------------------------------


def check_ready(m: MachineEnv, host: str, facts: dict) -> None:
    """A deploy needs machine.create's work: the user (with the SMEP uid), the mount, machine.env."""
    fix = f"run `tin machine.create --service {m.machine} --env {m.env}` first"
    if facts.get("uid") is None:
        raise InputError(f"{m.name} is not set up on {host}: there is no user {m.user}; {fix}")
    if facts["uid"] != m.uid:
        raise InputError(f"user {m.user} on {host} has uid {facts['uid']}, not {m.uid}: it is not tinsnip's "
                         f"{m.name}; fix the user by hand, then {fix}")
    if not facts.get("mounted"):
        raise InputError(f"{m.mount} is not mounted on {host}; {fix}")
    if facts.get("machine_env") is None:
        raise InputError(f"{machine_env_path(m)} is missing on {host}; {fix}")


def container_problems(d: Deploy, containers: list[dict], inputs: str,
                       image_ids: dict[str, str | None]) -> list[str]:
    """Why the running containers do not match the service (empty when they do)."""
    problems = []
    mine = [c for c in containers if c["project"] == d.service and not c["oneoff"]]
    for s in d.services:
        cs = [c for c in mine if c["service"] == s]
        if not cs:
            problems.append(f"{s}: no container")
        for c in cs:
            if c["state"] != "running":
                problems.append(f"{s}: container {c['name']} is {c['state']}")
            elif c["health"] not in (None, "healthy"):
                problems.append(f"{s}: container {c['name']} is {c['health']}")
            if c["inputs"] != inputs:
                problems.append(f"{s}: configuration changed")
            elif image_ids.get(c["image"]) and c["image_id"] and image_ids[c["image"]] != c["image_id"]:
                problems.append(f"{s}: image {c['image']} changed")
    for c in mine:
        if c["service"] not in d.services:
            problems.append(f"container {c['name']} of a service no longer in the compose file")
    return problems


def load_step(m: MachineEnv, image: str, remote_path: str) -> Run:
    return Run(("sh", "-c", LOAD_SCRIPT, "sh", remote_path, "runuser", "-u", m.user, "--", "env", "-i",
                f"PATH={CLEAN_PATH}", *[f"{k}={v}" for k, v in docker_env(m)]),
               f"load image {image} into {m.user}'s Docker from its archive")


def plan_deploy(d: Deploy, host: str, facts: dict) -> HostPlan:
    m, u = d.m, d.m.user
    check_ready(m, host, facts)
    containers = facts["containers"]
    if containers["error"]:
        raise RemoteError(f"{m.user}'s rootless Docker on {host} does not answer: {containers['error']}; "
                          f"check `tin machine.status --service {m.machine} --env {m.env}`")
    steps: list[Step] = []
    data: dict = {"service": d.service, "machine": m.name, "dir": d.dir}

    # 1. the service's files
    have_dirs = set(facts["dirs"])
    missing = [p for p in d.dirs() if p not in have_dirs]
    steps.append(Run(("mkdir", "-m", "0750", "-p", *missing), f"create {', '.join(missing)}", as_user=u)
                 if missing else Noop(f"{d.dir} exists"))
    modes = facts["files"]
    copied = manifest.parse_manifest(facts.get("manifest"))
    for rel, (content, mode) in sorted(d.files.items()):
        path = f"{d.dir}/{rel}"
        old = facts[f"file:{rel}"]
        if old is not None and old != content and copied is not None and rel not in copied:
            raise InputError(f"{path} was written by {d.service}, not copied by a deploy, and the catalog now ships "
                             f"a file of that name: tinsnip never overwrites what a service wrote. Move it away "
                             f"(it is on the NAS), or rename the file in the catalog, then deploy again.")
        if old != content:
            steps.append(Upload(path, content, f"copy {d.service}/{rel} to {d.dir}", mode=mode, as_user=u,
                                old=old, expect=sha256(old)))
        elif (modes.get(rel, mode) & 0o100) != (mode & 0o100):
            steps.append(Run(("chmod", f"{mode:o}", path), f"set the mode of {path} to {mode:o}", as_user=u))
        else:
            steps.append(Noop(f"{path} is up to date"))
    stale = manifest.stale_files(copied, set(modes), set(d.files))
    if stale:
        steps.append(Run(("rm", "-f", "--", *[f"{d.dir}/{r}" for r in stale]),
                         f"remove files a deploy copied that are no longer in the catalog: {', '.join(stale)}",
                         as_user=u))
    kept = manifest.foreign_files(copied, set(modes), set(d.files), {ENV_NAME, OVERRIDE_NAME})
    data["kept_files"] = kept
    if kept:
        steps.append(Noop(f"{len(kept)} file(s) in {d.dir} not copied by tinsnip stay untouched"))
    if manifest.deployed_dir(m) not in have_dirs:
        steps.append(Run(("mkdir", "-m", "0750", "-p", manifest.deployed_dir(m)),
                         f"create {manifest.deployed_dir(m)}", as_user=u))
    mtext = manifest.render_manifest(d.dir, d.files)
    steps.append(_file_step(manifest.manifest_path(m, d.service), mtext, facts.get("manifest"), 0o640, u,
                            f"record the files copied into {d.dir}"))

    # 2. ports, and .env
    alloc = parse_ports(facts["ports"])
    new_alloc = allocate_ports(m.ports, alloc, d.service, d.ports_needed)
    ports = new_alloc.get(d.service, [])
    data["ports"] = ports
    data["port_allocation"] = new_alloc
    ports_text = render_ports(m, new_alloc)
    if facts["ports"] is None and not new_alloc:
        steps.append(Noop(f"{d.service} uses no ports"))
    elif parse_ports(facts["ports"]) == new_alloc:
        steps.append(Noop(f"ports of {d.service}: {', '.join(map(str, ports)) or 'none'}"))
    else:
        steps.append(Upload(ports_path(m), ports_text, f"allocate ports {', '.join(map(str, ports))} to {d.service}",
                            mode=0o640, as_user=u, old=facts["ports"], expect=sha256(facts["ports"])))
    env_text = service_env(m, d.service, ports)
    steps.append(_file_step(f"{d.dir}/{ENV_NAME}", env_text, facts[f"file:{ENV_NAME}"], 0o640, u,
                            f"write {d.service}'s .env"))

    check_variables(d, facts["machine_env"], env_text, facts.get("secret_names", ()))

    # 3. named volumes and runtime binds on the NAS
    inputs = inputs_digest(d, env_text, facts["machine_env"])
    data["inputs"] = inputs
    data["where"] = d.where()
    steps.append(_file_step(f"{d.dir}/{OVERRIDE_NAME}",
                            override(m, d.service, d.services, d.volumes, inputs, d.spec, ports),
                            facts[f"file:{OVERRIDE_NAME}"], 0o644, u, f"bind {d.service}'s volumes to {d.data}"))
    moved = set()
    for b in d.binds:
        old_dir, new_dir = f"{d.dir}/{b.rel}", f"{d.data}/{b.rel}"
        if old_dir in have_dirs and new_dir not in have_dirs and new_dir not in moved:
            moved.add(new_dir)  # data an earlier deploy left in the service directory moves to the data tree
            parent = new_dir.rsplit("/", 1)[0]
            steps.append(Run(("sh", "-c", 'mkdir -m 0750 -p "$1" && mv -T -- "$2" "$3"', "sh", parent, old_dir, new_dir),
                             f"move {b.source} of {d.service} from {d.dir} to {new_dir} on the NAS", as_user=u))
    missing = [p for p in d.data_dirs() if p not in have_dirs and p not in moved]
    if missing:
        steps.append(Run(("mkdir", "-m", "0750", "-p", *missing), f"create {', '.join(missing)}", as_user=u))
    elif d.volumes or d.binds:
        steps.append(Noop(f"volume and bind directories under {d.data} exist"))

    # 4. images
    image_ids = facts.get("images", {})
    uploads = []
    for image in d.images:
        if image_ids.get(image):
            steps.append(Noop(f"image {image} is in {u}'s Docker"))
        elif image in d.archives:
            if not facts.get("ssh_home"):
                raise RemoteError(f"{host}: cannot find the home directory of the SSH user to copy {image} to")
            remote = f"{facts['ssh_home'].rstrip('/')}/{archive_name(image)}"
            uploads.append((str(d.archives[image]), archive_name(image)))
            steps.append(load_step(m, image, remote))
        else:
            steps.append(Noop(f"image {image} is not in {u}'s Docker: compose will pull it"))
    data["archive_uploads"] = uploads
    data["images"] = list(d.images)
    data["pulls"] = [i for i in d.images if not image_ids.get(i) and i not in d.archives]

    # 5–7. validate and start
    changed = any(not isinstance(s, Noop) for s in steps)
    problems = container_problems(d, containers["containers"], inputs, image_ids)
    data["containers"] = [c for c in containers["containers"] if c["project"] == d.service]
    if changed or problems:
        env = up_env(m, facts["machine_env"], env_text)
        base = compose_base(m, d.service, d.compose_file, d.spec.own_env_files if d.spec else ())
        sec = secrets_dir(m)
        steps.append(Run(("sh", "-c", CONFIG_SCRIPT, "sh", sec, *base, "config", "--quiet"),
                         f"validate {d.service} with docker compose config", as_user=u, env=env))
        why = "; ".join(problems) if problems and not changed else "its files changed"
        script = UP_SCRIPT.replace("$LINES", str(LOG_LINES)).replace("__SECRETS__", SECRETS_SNIPPET)
        up_vars = (*env, ("IMAGES", " ".join(d.images)), ("HOST", host))
        steps.append(Run(("sh", "-c", script, "sh", str(d.wait_seconds), sec, last_deploy_path(m, d.service), *base),
                         f"start {d.service} (docker compose up, wait up to {d.wait_seconds}s): {why}",
                         as_user=u, env=up_vars))
    else:
        n = len([c for c in containers["containers"] if c["project"] == d.service])
        steps.append(Noop(f"{d.service} is running ({n} container{'s' if n != 1 else ''}, configuration unchanged)"))
    return HostPlan(host, steps, data)


def _file_step(path: str, content: str, old: str | None, mode: int, user: str, desc: str) -> Step:
    if old == content:
        return Noop(f"{path} is up to date")
    return Upload(path, content, desc, mode=mode, as_user=user, old=old, expect=sha256(old))


# -- stop and remove -------------------------------------------------------------------------------


def project_facts(m: MachineEnv, service: str) -> list[Fact]:
    q = shlex.quote
    return [
        Fact("uid", f"id -u -- {q(m.user)}", _uid),
        Fact("mounted", f"mountpoint -q {q(m.mount_point)}", lambda rc, out: rc == 0),
        file_fact("ports", ports_path(m)),
        Fact("dirs", "for d in " + " ".join(q(p) for p in (service_dir(m, service), data_dir(m, service)))
             + '; do [ -d "$d" ] && printf "%s\\n" "$d"; done; true', _lines),
        Fact("files", f"find {q(service_dir(m, service))} -type f -printf '%m %P\\0' 2>/dev/null; true", _files),
        file_fact("manifest", manifest.manifest_path(m, service)),
        containers_fact(m, service),
        objects_fact(m, service),
    ]


def _user_run(m: MachineEnv, argv: tuple[str, ...], desc: str) -> Run:
    return Run(argv, desc, as_user=m.user, env=docker_env(m))


def plan_stop(m: MachineEnv, service: str, host: str, facts: dict) -> HostPlan:
    if facts.get("uid") is None:
        raise InputError(f"there is no user {m.user} on {host}: {m.name} is not set up there")
    containers = facts["containers"]
    if containers["error"]:
        raise RemoteError(f"{m.user}'s rootless Docker on {host} does not answer: {containers['error']}")
    running = [c["name"] for c in containers["containers"] if c["state"] in ("running", "restarting", "paused")]
    if running:
        step: Step = _user_run(m, ("docker", "compose", "--ansi", "never", "--project-name", service, "stop"),
                               f"stop {service} ({', '.join(running)})")
    else:
        step = Noop(f"{service} has no running containers")
    return HostPlan(host, [step], {"service": service, "stopped": running})


def plan_remove(m: MachineEnv, service: str, delete_data: bool, host: str, facts: dict) -> HostPlan:
    if facts.get("uid") is None:
        raise InputError(f"there is no user {m.user} on {host}: {m.name} is not set up there")
    steps: list[Step] = []
    objects = facts["objects"]
    if facts["containers"]["error"]:
        raise RemoteError(f"{m.user}'s rootless Docker on {host} does not answer: {facts['containers']['error']}")
    if any(objects.get(k) for k in ("containers", "networks", "volumes")):
        what = ", ".join(f"{n} {k}" for k, n in objects.items() if n)
        steps.append(_user_run(m, ("docker", "compose", "--ansi", "never", "--project-name", service, "down", "--remove-orphans",
                                   "--volumes"),
                               f"remove {service}'s {what} (docker compose down; the data on the NAS stays)"))
    else:
        steps.append(Noop(f"{service} has no containers, networks or volumes"))
    have = set(facts["dirs"])
    sdir, ddir = service_dir(m, service), data_dir(m, service)
    if sdir in have:
        if not facts.get("mounted"):
            raise InputError(f"{m.mount} is not mounted on {host}: mount it (machine.create) before removing")
        present = set(facts.get("files") or {})
        copied = manifest.parse_manifest(facts.get("manifest")) or set()
    if sdir in have and delete_data:
        steps.append(Run(("rm", "-rf", "--", sdir), f"remove {sdir} and everything in it (--delete-data)", as_user=m.user))
    elif sdir in have:
        ours = sorted(present & (copied | {ENV_NAME, OVERRIDE_NAME}))
        kept = sorted(present - set(ours))
        if ours:
            steps.append(Run(("sh", "-c", 'd=$1; shift; cd -- "$d" && rm -f -- "$@" && '
                              'find . -depth -mindepth 1 -type d -empty -delete && cd / && rmdir -- "$d" 2>/dev/null; true',
                              "sh", sdir, *ours),
                             f"remove the {len(ours)} file(s) tinsnip put in {sdir}"
                             + (f"; {len(kept)} file(s) the service wrote there stay" if kept else ""), as_user=m.user))
        elif kept:
            steps.append(Noop(f"{sdir} holds only files tinsnip did not put there ({len(kept)}): they stay"))
        else:
            steps.append(Run(("sh", "-c", 'find "$1" -depth -type d -empty -delete; true', "sh", sdir),
                             f"remove {sdir} (empty)", as_user=m.user))
    else:
        steps.append(Noop(f"{sdir} is gone"))
    mpath = manifest.manifest_path(m, service)
    if facts.get("manifest") is not None:
        steps.append(Run(("rm", "-f", "--", mpath), f"remove {mpath}", as_user=m.user))
    alloc = parse_ports(facts["ports"])
    freed = alloc.get(service, [])
    if freed:
        new = free_ports(alloc, service)
        steps.append(Upload(ports_path(m), render_ports(m, new), f"free ports {', '.join(map(str, freed))} of {service}",
                            mode=0o640, as_user=m.user, old=facts["ports"], expect=sha256(facts["ports"])))
    else:
        steps.append(Noop(f"{service} holds no ports"))
    if delete_data and ddir in have:
        steps.append(Run(("rm", "-rf", "--", ddir), f"delete {service}'s data in {ddir}", as_user=m.user))
    elif ddir in have:
        steps.append(Noop(f"{service}'s data stays in {ddir} (--delete-data deletes it)"))
    else:
        steps.append(Noop(f"{ddir} is gone"))
    return HostPlan(host, steps, {"service": service, "freed_ports": freed, "data_deleted": delete_data and ddir in have})


# -- status ----------------------------------------------------------------------------------------


def status_facts(m: MachineEnv) -> list[Fact]:
    q = shlex.quote
    return [
        Fact("uid", f"id -u -- {q(m.user)}", _uid),
        Fact("mounted", f"mountpoint -q {q(m.mount_point)}", lambda rc, out: rc == 0),
        file_fact("ports", ports_path(m)),
        Fact("deployed", f"cd {q(m.mount + '/service')} 2>/dev/null && for d in *; do "
                         f'[ -f "$d/{OVERRIDE_NAME}" ] && printf "%s\\n" "$d"; done; true', _lines),
        containers_fact(m),
        Fact("last", f"cd {q(manifest.deployed_dir(m))} 2>/dev/null && for f in *.last; do [ -f \"$f\" ] && "
                     f"printf '%s\\0%s\\0' \"${{f%.last}}\" \"$(cat -- \"$f\")\"; done; true",
             lambda rc, out: parse_last(out)),
    ]


def status_report(m: MachineEnv, host: str, facts: dict, only: str | None = None) -> dict:
    """Per catalog service on the machine-env: its ports and its containers (state, health, ports, image)."""
    alloc = parse_ports(facts.get("ports"))
    containers = facts["containers"]["containers"]
    names = set(facts.get("deployed", [])) | set(alloc) | {c["project"] for c in containers if c["project"]}
    if only:
        names = {only}
    services = []
    for name in sorted(names):
        cs = [c for c in containers if c["project"] == name]
        if not cs:
            state = "not deployed" if name not in facts.get("deployed", []) else "no containers"
        elif all(c["state"] == "running" and c["health"] in (None, "healthy") for c in cs):
            state = "running"
        elif any(c["state"] == "running" for c in cs):
            state = "degraded"
        else:
            state = "stopped"
        last = (facts.get("last") or {}).get(name)
        services.append({"service": name, "state": state, "deployed": name in facts.get("deployed", []),
                         "ports": alloc.get(name, []), "containers": cs, "last_deploy": last})
    return {"machine": m.name, "host": host, "user": m.user, "ready": facts.get("uid") == m.uid and facts.get("mounted"),
            "docker_error": facts["containers"]["error"], "services": services}
