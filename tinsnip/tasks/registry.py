"""registry.*: the sheet and machine numbers kept on the station's storage on the NAS (SPEC §3, §6).

Every change takes the NAS's host lock (/var/lock/tinsnip.lock, with a timeout and a message naming
its holder) and writes compare-and-swap: a registry changed by another tinsnip meanwhile is read
again and re-planned, so concurrent writers never lose or duplicate an entry.
"""

from __future__ import annotations

import calendar
import time

from .. import smep
from ..errors import InputError
from ..script import LOCK_PATH, Fact
from .common import emit, finish, gather_nas, require, tin_task

SERVICE_HELP = {"service": "machine (service) name, e.g. gazette"}


def _read_facts(settings):
    from ..plans import nas as nasplan
    from ..plans import registry as reg

    volume, sheet = settings.inventory.nas.volume, settings.sheet
    return [reg.file_fact("reg:sheets", reg.sheets_path(volume)),
            reg.file_fact("reg:machines", reg.machines_path(volume, sheet)),
            nasplan.exports_fact(), nasplan.sheet_trees_fact(volume, sheet)]


def _machines_view(settings, facts) -> list[dict]:
    from .. import exports as ex
    from ..plans import nas as nasplan
    from ..plans import registry as reg

    volume, sheet = settings.inventory.nas.volume, settings.sheet
    machines = reg.parse("machines", reg.machines_path(volume, sheet), facts["reg:machines"])
    trees = nasplan.trees_present(facts["trees"], volume, sheet)
    keys = ex.parse(facts["exports"]).keys()
    rows = []
    names = {"station": 0, **machines.entries}
    for name, number in sorted(names.items(), key=lambda kv: kv[1]):
        rows.append({
            "machine": name, "number": number,
            "recorded": name in machines.entries, "line": machines.lines.get(name),
            "reserved": name in smep.RESERVED_MACHINES,
            "storage": [e for m, e in trees if m == name],
            "exports": [k.split("/", 1)[1] for k in keys if k.startswith(f"{sheet}/{name}-")
                        and smep.parse_machine_env(k.split("/", 1)[1])[0] == name],
        })
    return rows


@tin_task(help={}, name="list")
def list_(c, opts):
    """List the sheet's machines and their numbers (station=00 is implied)."""
    from ..plans import registry as reg

    settings, facts = gather_nas(opts, _read_facts)
    rows = _machines_view(settings, facts)
    path = reg.machines_path(settings.inventory.nas.volume, settings.sheet)
    lines = [f"machines of sheet {settings.sheet} ({path}{'' if facts['reg:machines'] is not None else ', not created yet'}):"]
    for r in rows:
        notes = []
        if not r["recorded"]:
            notes.append("implied")
        if r["storage"]:
            notes.append("storage: " + ",".join(r["storage"]))
        lines.append(f"  {r['number']:02d}  {r['machine']}" + (f"  ({'; '.join(notes)})" if notes else ""))
    emit(opts, {"ok": True, "sheet": settings.sheet, "path": path, "machines": rows}, lines)


@tin_task(help=SERVICE_HELP)
def show(c, opts, service=None):
    """Show one machine's number, where it is recorded, and its storage and exports on the NAS."""
    machine = smep.check_name(require(service, "service"), "machine")
    settings, facts = gather_nas(opts, _read_facts)
    rows = {r["machine"]: r for r in _machines_view(settings, facts)}
    row = rows.get(machine)
    if row is None:
        if machine in smep.RESERVED_MACHINES:
            row = {"machine": machine, "number": smep.RESERVED_MACHINES[machine], "recorded": False, "line": None,
                   "reserved": True, "storage": [], "exports": []}
        else:
            raise InputError(f"machine {machine!r} is not in the registry of sheet {settings.sheet}: "
                             f"add it with `tin registry.add --service {machine}`")
    from ..plans import registry as reg

    sheets = reg.parse("sheets", reg.sheets_path(settings.inventory.nas.volume), facts["reg:sheets"])
    sheet_number = sheets.entries.get(settings.sheet)
    data = {"ok": True, "sheet": settings.sheet, "sheet_number": sheet_number, **row}
    if sheet_number is not None:
        data["uids"] = {e: smep.MachineEnv(settings.sheet, sheet_number, machine, row["number"], e).uid
                        for e in smep.ENVS}
    lines = [f"{machine}: number {row['number']:02d} in sheet {settings.sheet}"
             + (f" (line {row['line']})" if row["line"] else " (reserved, not recorded yet)"),
             f"  storage on the NAS: {', '.join(row['storage']) or 'none'}",
             f"  export lines: {', '.join(row['exports']) or 'none'}"]
    if sheet_number is not None:
        lines.append(f"  uids: prod {data['uids']['prod']}, test {data['uids']['test']}, dev {data['uids']['dev']} …")
    emit(opts, data, lines)


@tin_task(help={**SERVICE_HELP, "number": "pin this machine number (00–99); refused if another name holds it"},
          changes=True)
def add(c, opts, service=None, number=None):
    """Register a machine in the sheet's registry (lowest free number from 04, or --number)."""
    from ..plans import registry as reg

    machine = smep.check_name(require(service, "service"), "machine")
    pins = {machine: smep.check_machine_number(number)} if number is not None else None
    settings = opts.settings()
    engine = opts.engine(settings)
    outcomes = engine.run_phase([reg.registry_job(settings, [machine], pins=pins)])
    data = outcomes[0].plan.data if outcomes and outcomes[0].plan else {}
    extra = {"sheet": settings.sheet, "sheet_number": data.get("sheet_number"),
             "machine": machine, "number": data.get("machine_numbers", {}).get(machine)}
    if extra["number"] is not None and not opts.json:
        verb = "would be" if opts.dry_run else "is"
        engine.out.line(f"{machine} {verb} {extra['number']:02d} in sheet {settings.sheet} ({extra['sheet_number']})")
    finish(engine, extra)


def _users_on_docker_hosts(settings, engine, machine) -> dict[str, list[str]]:
    """{docker host: [users of this machine]} from one read-only round trip per Docker host."""
    from concurrent.futures import ThreadPoolExecutor

    users = [f"{machine}-{e}" for e in smep.ENVS if len(f"{machine}-{e}") <= smep.MAX_USER_LEN]
    fact = Fact("users", "getent passwd " + " ".join(users) + " | cut -d: -f1; true",
                lambda rc, out: out.split())

    def probe(host):
        return host.name, engine.gather(host, [fact])["users"]

    hosts = list(settings.inventory.docker_hosts.values())
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        return {name: found for name, found in pool.map(probe, hosts) if found}


@tin_task(help={**SERVICE_HELP,
                "force": "remove the entry even though the machine still has storage, exports or users"},
          changes=True)
def remove(c, opts, service=None, force=False):
    """Drop a machine from the registry; refused while it has storage, exports or users (--force)."""
    from .. import exports as ex
    from ..plans import nas as nasplan
    from ..plans import registry as reg

    machine = smep.check_name(require(service, "service"), "machine")
    if machine == "station":
        raise InputError("the station (00) is implied in every sheet and cannot be removed")
    settings = opts.settings()
    engine = opts.engine(settings)
    volume, sheet = settings.inventory.nas.volume, settings.sheet
    users = {} if force else _users_on_docker_hosts(settings, engine, machine)

    def check(facts):
        if force:
            return
        in_use = []
        trees = [e for m, e in nasplan.trees_present(facts["trees"], volume, sheet) if m == machine]
        if trees:
            in_use.append("storage on the NAS for " + ", ".join(f"{machine}-{e}" for e in trees))
        keys = [k for k in ex.parse(facts["exports"]).keys() if k.startswith(f"{sheet}/{machine}-")]
        if keys:
            in_use.append("export lines for " + ", ".join(k.split("/", 1)[1] for k in keys))
        for host, found in users.items():
            in_use.append(f"user(s) {', '.join(found)} on {host}")
        if in_use:
            raise InputError(f"{machine} is still in use: {'; '.join(in_use)}. Remove its machine-envs first "
                             f"(`tin machine.remove --service {machine} --env ENV`), or pass --force")

    job = reg.registry_job(settings, unregister=[machine], check=check,
                           extra_facts=[nasplan.exports_fact(), nasplan.sheet_trees_fact(volume, sheet)])
    engine.run_phase([job])
    finish(engine, {"sheet": sheet, "machine": machine})


@tin_task(help={})
def sheets(c, opts):
    """List every sheet and its number (the registry in the default sheet's station)."""
    from ..plans import registry as reg

    def facts_fn(settings):
        return [reg.file_fact("reg:sheets", reg.sheets_path(settings.inventory.nas.volume))]

    settings, facts = gather_nas(opts, facts_fn)
    path = reg.sheets_path(settings.inventory.nas.volume)
    parsed = reg.parse("sheets", path, facts["reg:sheets"])
    rows = [{"sheet": s, "number": n, "line": parsed.lines[s]} for s, n in parsed.entries.items()]
    lines = [f"sheets ({path}{'' if parsed.exists else ', not created yet'}):"]
    lines += [f"  {r['number']}  {r['sheet']}" for r in sorted(rows, key=lambda r: r["number"])]
    emit(opts, {"ok": True, "path": path, "sheets": rows}, lines)


@tin_task(help={"number": "pin this sheet number (1–5); refused if another sheet holds it"}, changes=True,
          name="sheet-add")
def sheet_add(c, opts, number=None):
    """Register the sheet given with --sheet (its hash-preferred number if free, else the lowest free)."""
    from ..plans import registry as reg

    sheet = require(opts.sheet, "sheet")
    pin = smep.check_sheet_number(number) if number is not None else None
    settings = opts.settings()
    engine = opts.engine(settings)
    outcomes = engine.run_phase([reg.registry_job(settings, sheet_pin=pin)])
    data = outcomes[0].plan.data if outcomes and outcomes[0].plan else {}
    if data.get("sheet_number") is not None and not opts.json:
        engine.out.line(f"sheet {sheet} {'would be' if opts.dry_run else 'is'} {data['sheet_number']}")
    finish(engine, {"sheet": sheet, "sheet_number": data.get("sheet_number")})


@tin_task(help={})
def lock(c, opts):
    """Show the NAS's tinsnip lock: held or free, by whom, since when.

    The lock is a kernel flock on /var/lock/tinsnip.lock: when its holder dies (killed, connection
    lost) the kernel frees it at once, so a dead run never leaves a lock that blocks others. The
    holder file beside it then only names the last holder. A lock that is held belongs to a live
    process (its pid is shown): wait for it, or end that process.
    """
    import shlex

    q = shlex.quote(LOCK_PATH)
    fact = Fact("lock", f"if [ ! -e {q} ]; then echo never; elif flock -n {q} true; then echo free; "
                        f"else echo held; fi; cat {q}.holder 2>/dev/null; true",
                lambda rc, out: out.splitlines())
    settings, facts = gather_nas(opts, lambda s: [fact])
    state, *holder = facts["lock"] or ["unknown"]
    holder_text = holder[0] if holder else None
    age = None
    if holder_text and " since " in holder_text:
        try:
            since = time.strptime(holder_text.rsplit(" since ", 1)[1].strip(), "%Y-%m-%dT%H:%M:%SZ")
            age = int(time.time() - calendar.timegm(since))
        except ValueError:
            age = None
    data = {"ok": True, "host": settings.inventory.nas.name, "path": LOCK_PATH, "state": state,
            "holder": holder_text, "age_seconds": age}
    who = f"{'held by' if state == 'held' else 'last held by'} {holder_text}" if holder_text else "no holder recorded"
    lines = [f"{settings.inventory.nas.name}: {LOCK_PATH} is {state}; {who}"
             + (f" ({age} s ago)" if age is not None else "")]
    if state != "held":
        lines.append("  nothing to clear: the kernel frees the lock when its holder exits or dies")
    emit(opts, data, lines)
