"""The NAS side of a machine-env: registry entries, its tree, its export lines and machine.env. Pure
planners plus the Job builders other namespaces call (`nas_job`, `nas_remove_job`).

One facts round trip and one apply round trip serve any number of machine-envs: the facts read both
registries, /etc/exports, the active export table and each machine-env's tree; the plan registers
what is new (compare-and-swap), creates or repairs the trees, writes /etc/exports once (backup,
atomic rename, `exportfs -ra`, restored if exportfs refuses it) and writes each machine.env.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

from .. import exports as ex
from .. import smep
from ..errors import InputError, RemoteError
from ..render import render
from ..script import Fact
from ..steps import HostPlan, Noop, Run, Step, Upload, sha256
from . import registry as reg

EXPORTS = "/etc/exports"
EXPORTFS = ("exportfs", "-ra")


@dataclass(frozen=True)
class Target:
    """A machine-env to set up on the NAS, and the Docker hosts (NFS clients) it is exported to."""

    machine: str
    env: str
    clients: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.machine}-{self.env}"


def check_targets(targets) -> list[Target]:
    """Validate (machine, env, clients) triples before any connection is opened."""
    out: list[Target] = []
    for item in targets:
        machine, env, clients = item
        smep.check_name(machine, "machine")
        smep.check_env(env)
        smep.user_name(machine, env)
        clients = tuple(clients)
        for client in clients:
            if not client or client == "*" or any(ch.isspace() or ch in "()#,\"'" for ch in client):
                raise InputError(f"invalid NFS client {client!r} for {machine}-{env}: give one Docker host's "
                                 f"address (never '*')")
        out.append(Target(machine, env, clients))
    return out


def machine_path(volume: str, sheet: str, machine: str, env: str) -> str:
    return f"{volume.rstrip('/')}/{sheet}/{machine}/{env}"


def machine_env_file(path: str) -> str:
    return f"{path}/.machine/machine.env"


# -- facts --------------------------------------------------------------------------------------

def exports_fact() -> Fact:
    return reg.file_fact("exports", EXPORTS)


def active_fact() -> Fact:
    return Fact("active", "exportfs -v 2>&1; true", lambda rc, out: out)


def setup_facts(volume: str, sheet: str, targets: list[Target]) -> list[Fact]:
    facts = [*reg.registry_facts(volume, sheet), exports_fact(), active_fact()]
    for t in targets:
        path = machine_path(volume, sheet, t.machine, t.env)
        facts.append(reg.tree_fact(f"tree:{t.name}", path, extra=(machine_env_file(path),)))
        facts.append(reg.file_fact(f"menv:{t.name}", machine_env_file(path)))
    return facts


# -- planning -----------------------------------------------------------------------------------

def expected_lines(m: smep.MachineEnv, clients) -> dict[str, str]:
    return {c: ex.render_line(m.nas_path, c, m.uid, m.gid) for c in clients}


def is_active(active: set[tuple[str, str]], path: str, client: str) -> bool:
    """Whether exportfs shows the export. An address must match exactly; a host name may be shown
    resolved, so for one the path is enough."""
    try:
        ipaddress.ip_network(client, strict=False)
    except ValueError:
        return any(p == path for p, _ in active)
    return (path, client) in active


def machine_env_text(m: smep.MachineEnv, nas_host: str) -> str:
    return render("machine.env.j2", m=m, nas_host=nas_host)


def plan_setup(facts: dict, volume: str, sheet: str, nas_host: str, targets: list[Target],
               pins: dict | None = None, register: list[str] = (), sheet_pin: int | None = None,
               host: str = "nas") -> HostPlan:
    """Registry entries, trees, exports and machine.env for every target; only Noops when converged."""
    machines = [t.machine for t in targets] + [m for m in register]
    rp = reg.plan(facts, volume, sheet, machines, pins=pins, sheet_pin=sheet_pin)
    steps: list[Step] = list(rp.steps)
    menvs: dict[str, smep.MachineEnv] = {}
    for t in targets:
        menvs[t.name] = smep.MachineEnv(sheet, rp.sheet_number, t.machine, rp.numbers[t.machine], t.env, volume)

    for t in targets:
        steps += reg.tree_steps(menvs[t.name], facts[f"tree:{t.name}"])

    # /etc/exports: one write for every target
    old = facts["exports"]
    text = old or ""
    changes: list[str] = []
    for t in targets:
        m = menvs[t.name]
        key = ex.key_of(sheet, t.machine, t.env)
        want = expected_lines(m, t.clients)
        drift = ex.drift(old, key, m.nas_path, want)
        if not drift.ok:
            changes.append(f"{t.name}: " + "; ".join(drift.describe()))
        text = ex.merge(text, key, m.nas_path, list(want.values()))
    if text != (old or ""):
        steps.append(Upload(EXPORTS, text, "exports: " + (" | ".join(changes) or "rewrite managed lines"),
                            mode=0o644, old=old, expect=sha256(old), backup=True, then=EXPORTFS))
    else:
        active = ex.parse_active(facts["active"])
        inactive = [f"{m.nas_path} {c}" for t in targets for m in [menvs[t.name]] for c in t.clients
                    if not is_active(active, m.nas_path, c)]
        if inactive:
            steps.append(Run(EXPORTFS, f"exports: activate ({', '.join(inactive)} not in exportfs -v)"))
        else:
            steps.append(Noop("exports: " + (", ".join(f"{t.name} → {', '.join(t.clients)}" for t in targets)
                                             or "no machine-env to export")))

    for t in targets:
        m = menvs[t.name]
        path = machine_env_file(m.nas_path)
        content = machine_env_text(m, nas_host)
        old_env = facts[f"menv:{t.name}"]
        stat = facts[f"tree:{t.name}"].get(path)
        if stat is not None and stat[0] != "regular file":
            raise RemoteError(f"{path} on the NAS is a {stat[0]}, not a file: move it aside and run again")
        if old_env == content and stat is not None and stat[1:] == (m.uid, m.gid, 0o640):
            steps.append(Noop(f"{t.name}: machine.env up to date"))
        else:
            steps.append(Upload(path, content, f"{t.name}: machine.env", mode=0o640, owner=f"{m.uid}:{m.gid}",
                                old=old_env, expect=sha256(old_env)))
    return HostPlan(host, steps, {"machine_envs": menvs, "sheet_number": rp.sheet_number,
                                  "machine_numbers": rp.numbers})


def nas_job(settings, targets, *, pins=None, register=(), sheet_pin=None):
    """The NAS part of machine.create / nas.setup for many machine-envs (one facts and one apply
    round trip). `targets`: [(machine, env, [client, ...])]; `pins`: {machine: number}. The plan's
    data["machine_envs"] maps "gazette-prod" to its MachineEnv with the registry's numbers."""
    from ..engine import Job

    targets = check_targets(targets)
    pins = {smep.check_name(k, "machine"): smep.check_machine_number(v) for k, v in (pins or {}).items()}
    for name in register:
        smep.check_name(name, "machine")
    inv = settings.inventory
    volume, sheet = inv.nas.volume, settings.sheet
    facts = setup_facts(volume, sheet, targets)
    return Job(inv.nas, facts, lambda f: plan_setup(f, volume, sheet, inv.nas.address, targets, pins,
                                                    list(register), sheet_pin, inv.nas.name))


# -- removal ------------------------------------------------------------------------------------

def remove_facts(volume: str, sheet: str, machine: str, env: str) -> list[Fact]:
    path = machine_path(volume, sheet, machine, env)
    q = shlex.quote(path)
    return [exports_fact(),
            Fact(f"realpath:{machine}-{env}", f"if [ -e {q} ] || [ -L {q} ]; then readlink -f {q}; else exit 3; fi",
                 lambda rc, out: out.strip() if rc == 0 else None)]


def plan_remove(facts: dict, volume: str, sheet: str, machine: str, env: str, clients, delete_data: bool,
                host: str = "nas") -> HostPlan:
    """Drop a machine-env's export lines; with delete_data, its tree too (never through a symlink)."""
    name = f"{machine}-{env}"
    path = machine_path(volume, sheet, machine, env)
    key = ex.key_of(sheet, machine, env)
    old = facts["exports"]
    text = ex.merge(old, key, path, [], adopt_clients=list(clients))
    steps: list[Step] = []
    if text != (old or ""):
        steps.append(Upload(EXPORTS, text, f"exports: remove {name}'s lines", mode=0o644, old=old,
                            expect=sha256(old), backup=True, then=EXPORTFS))
    else:
        steps.append(Noop(f"exports: no line for {name}"))
    real = facts[f"realpath:{name}"]
    if not delete_data:
        steps.append(Noop(f"{name}: data kept in {path}" if real else f"{name}: no data at {path}"))
    elif real is None:
        steps.append(Noop(f"{name}: {path} already gone"))
    elif real != path:
        raise RemoteError(f"{path} resolves to {real} on the NAS (a symlink on the way): refusing to delete "
                          f"anything outside {name}'s own tree; check it by hand")
    else:
        steps.append(Run(("rm", "-rf", "--", path), f"{name}: delete {path} and everything in it"))
    return HostPlan(host, steps, {})


def nas_remove_job(settings, machine, env, clients, delete_data: bool):
    """Undo nas.setup for one machine-env: its export lines go; with delete_data, its tree too."""
    from ..engine import Job

    check_targets([(machine, env, list(clients))])
    inv = settings.inventory
    volume, sheet = inv.nas.volume, settings.sheet
    return Job(inv.nas, remove_facts(volume, sheet, machine, env),
               lambda f: plan_remove(f, volume, sheet, machine, env, list(clients), delete_data, inv.nas.name))


# -- status -------------------------------------------------------------------------------------

def sheet_trees_fact(volume: str, sheet: str) -> Fact:
    """Type, owner and mode of every {volume}/{sheet}/*/* tree (and its machine.env), in one probe."""
    base = shlex.quote(f"{volume.rstrip('/')}/{sheet}")
    subs = " ".join(f'"$d"/{shlex.quote(s)}' for s in reg.SUBDIRS)
    cmd = (f"for d in {base}/*/*; do [ -d \"$d\" ] || continue; "
           f"stat -c '%F|%u|%g|%a|%n' \"$d\" {subs} \"$d/.machine/machine.env\" 2>/dev/null; done; true")
    return Fact("trees", cmd, reg._parse_stat)


def status_facts(volume: str, sheet: str) -> list[Fact]:
    return [reg.file_fact("reg:sheets", reg.sheets_path(volume)),
            reg.file_fact("reg:machines", reg.machines_path(volume, sheet)),
            exports_fact(), active_fact(), sheet_trees_fact(volume, sheet)]


def trees_present(stat: dict, volume: str, sheet: str) -> list[tuple[str, str]]:
    """(machine, env) of every tree found under {volume}/{sheet}."""
    base = f"{volume.rstrip('/')}/{sheet}/"
    found = []
    for path in stat:
        if not path.startswith(base):
            continue
        parts = path[len(base):].split("/")
        if len(parts) == 2 and parts[1] in smep.ENVS and smep.NAME_RE.match(parts[0]):
            found.append((parts[0], parts[1]))
    return sorted(set(found))


def status(facts: dict, volume: str, sheet: str, wanted: dict[str, tuple[str, ...]] | None,
           placements: dict[str, tuple[str, ...]]) -> list[dict]:
    """Per machine-env: tree, owner, mode, export present and identical, export active; with the
    command that re-applies it. `wanted`: {name: clients} to report on (None: every machine-env
    the inventory places, has a tree, or has a managed line); `placements`: the inventory's clients."""
    sheets = reg.parse("sheets", reg.sheets_path(volume), facts["reg:sheets"])
    machines = reg.parse("machines", reg.machines_path(volume, sheet), facts["reg:machines"])
    doc = ex.parse(facts["exports"])
    active = ex.parse_active(facts["active"])
    stat = facts["trees"]
    if wanted is None:
        names = dict(placements)
        for machine, env in trees_present(stat, volume, sheet):
            names.setdefault(f"{machine}-{env}", ())
        for key in doc.keys():
            k_sheet, _, name = key.partition("/")
            if k_sheet == sheet:
                names.setdefault(name, ())
        wanted = names
    report = []
    for name in sorted(wanted):
        machine, env = smep.parse_machine_env(name)
        path = machine_path(volume, sheet, machine, env)
        key = ex.key_of(sheet, machine, env)
        clients = tuple(wanted[name]) or tuple(placements.get(name, ()))
        if not clients:  # not placed by the inventory: judge the lines that are there
            clients = tuple(c for item in doc.managed(key) if item.parsed for c in item.parsed.client_names)
        problems: list[str] = []
        entry: dict = {"machine_env": name, "path": path, "clients": list(clients)}
        number = machines.entries.get(machine, smep.RESERVED_MACHINES.get(machine))
        sheet_number = sheets.entries.get(sheet)
        entry["registered"] = machine in machines.entries or machine == "station"
        if number is None or sheet_number is None:
            problems.append(f"{'sheet ' + sheet if sheet_number is None else 'machine ' + machine} is not registered")
            m = None
        else:
            m = smep.MachineEnv(sheet, sheet_number, machine, number, env, volume)
            entry["uid"] = m.uid
        tree = {}
        for p in reg.tree_paths(path):
            s = stat.get(p)
            tree[p] = None if s is None else {"type": s[0], "owner": f"{s[1]}:{s[2]}", "mode": f"{s[3]:04o}"}
            if s is None:
                problems.append(f"{p} missing")
            elif s[0] != "directory":
                problems.append(f"{p} is a {s[0]}")
            elif m is not None and s[1:] != (m.uid, m.gid, 0o750):
                problems.append(f"{p} is {s[1]}:{s[2]} {s[3]:04o}, expected {m.uid}:{m.gid} 0750")
        entry["tree"] = tree
        if m is not None:
            d = ex.drift(facts["exports"], key, path, expected_lines(m, clients))
            problems += d.describe()
            entry["export"] = {"present": not d.missing, "identical": d.ok}
        entry["active"] = {c: is_active(active, path, c) for c in clients}
        problems += [f"export for {c} not active in exportfs -v" for c, a in entry["active"].items() if not a]
        if not clients:
            problems.append("no export line and no Docker host in the inventory for it")
        entry["ok"] = not problems
        entry["problems"] = problems
        sheet_flag = f" --sheet {sheet}"
        entry["fix"] = None if not problems else f"tin nas.setup --service {machine} --env {env}{sheet_flag}"
        report.append(entry)
    return report
