"""nas.*: each machine-env's storage and NFS export on the NAS (SPEC §5).

/etc/exports is DSM's file too: tinsnip changes only the lines it marks as its own ("# tinsnip:
sheet/machine-env" on the line before) and keeps every other byte. A write is: render, diff, private
temp file, backup, atomic rename, `exportfs -ra`; if exportfs refuses the file, the backup is put
back, exportfs runs again, and the task fails with exportfs's own message.
"""

from __future__ import annotations

from .. import smep
from ..errors import InputError
from .common import emit, finish, gather_nas, machine_env_flags, tin_task

MACHINE_HELP = {
    "service": "machine (service) name, e.g. gazette",
    "env": "environment: " + ", ".join(smep.ENVS),
}


@tin_task(help={**MACHINE_HELP,
                "host": "Docker host to export to (default: the inventory's machines: entry)",
                "number": "machine number (00–99) for a machine not yet in the registry"}, changes=True)
def setup(c, opts, service=None, env=None, host=None, number=None):
    """Create a machine-env's tree and NFS export on the NAS (registering it if new)."""
    from ..plans.nas import nas_job

    machine, env, number = machine_env_flags(service, env, number, host)
    settings = opts.settings()
    client = settings.inventory.placement(machine, env, host).nfs_client
    job = nas_job(settings, [(machine, env, [client])], pins={machine: number} if number is not None else None)
    engine = opts.engine(settings)
    outcomes = engine.run_phase([job])
    extra = {}
    plan = outcomes[0].plan if outcomes else None
    if plan is not None and plan.data.get("machine_envs"):
        extra["machine_envs"] = {k: {**m.info(), "client": client} for k, m in plan.data["machine_envs"].items()}
    finish(engine, extra)


@tin_task(help={**MACHINE_HELP,
                "host": "Docker host whose line to drop as well when the line has lost its marker"},
          changes=True)
def unexport(c, opts, service=None, env=None, host=None):
    """Remove a machine-env's export lines from /etc/exports; its data stays."""
    from ..plans.nas import nas_remove_job

    machine, env, _ = machine_env_flags(service, env, host=host)
    settings = opts.settings()
    if host:
        clients = [settings.inventory.placement(machine, env, host).nfs_client]
    else:
        clients = sorted({h.nfs_client for h in settings.inventory.docker_hosts.values()})
    engine = opts.engine(settings)
    engine.run_phase([nas_remove_job(settings, machine, env, clients, delete_data=False)])
    finish(engine)


@tin_task(help={})
def exports(c, opts):
    """Show /etc/exports as tinsnip sees it: its lines per machine-env, and the lines it leaves alone."""
    from .. import exports as ex
    from ..plans import nas as nasplan

    settings, facts = gather_nas(opts, lambda s: [nasplan.exports_fact(), nasplan.active_fact()])
    doc = ex.parse(facts["exports"])
    active = ex.parse_active(facts["active"])
    managed, foreign = [], []
    number = 1
    for item in doc.items:
        if item.kind == "managed":
            for client in item.parsed.client_names:
                managed.append({"machine_env": item.key, "line_number": number + 1, "path": item.parsed.path,
                                "client": client, "line": item.line.rstrip("\n"),
                                "active": nasplan.is_active(active, item.parsed.path, client)})
        elif item.kind == "orphan":
            managed.append({"machine_env": item.key, "line_number": number, "path": None, "client": None,
                            "line": None, "active": False, "problem": "marker without its export line"})
        elif item.text.strip() and not item.text.lstrip().startswith("#"):
            foreign.append({"line_number": number, "line": item.text.rstrip("\n"),
                            "path": item.parsed.path if item.parsed else None})
        number += item.text.count("\n")
    text = [f"/etc/exports on {settings.inventory.nas.name}: {len(managed)} managed, {len(foreign)} other"]
    for key in doc.keys():
        text.append(f"  {key}")
        for m in (m for m in managed if m["machine_env"] == key):
            if m["line"] is None:
                text.append(f"    line {m['line_number']}: MARKER WITHOUT LINE (drift: run nas.setup)")
            else:
                state = "active" if m["active"] else "NOT ACTIVE"
                text.append(f"    line {m['line_number']}: {m['line']}  [{state}]")
    if foreign:
        text.append("  not managed by tinsnip (kept byte for byte):")
        text += [f"    line {f['line_number']}: {f['line']}" for f in foreign]
    emit(opts, {"ok": True, "managed": managed, "foreign": foreign}, text)


@tin_task(help={"service": "only this machine (with --env: only that machine-env)",
                "env": "only this environment (needs --service)"})
def status(c, opts, service=None, env=None):
    """Check machine-envs on the NAS: tree, owner, mode, export line, export active. Exit 1 on drift.

    Without --service, every machine-env the inventory places or the NAS has for the sheet. Drift (a
    missing or changed tree, a managed line gone or edited, e.g. in DSM's web UI) is listed with the
    command that re-applies it; the exit code is then 1 (0 when all is in place), for cron and CI.
    """
    from invoke.exceptions import Exit

    from ..plans import nas as nasplan

    if env is not None and service is None:
        raise InputError("--env needs --service")
    machine = smep.check_name(service, "machine") if service is not None else None
    if env is not None:
        smep.check_env(env)
        smep.user_name(machine, env)
    settings, facts = gather_nas(opts, lambda s: nasplan.status_facts(s.inventory.nas.volume, s.sheet))
    inv = settings.inventory
    placements = {name: (inv.docker_hosts[h].nfs_client,) for name, h in inv.machines.items()}
    wanted = None
    if machine is not None:
        envs = [env] if env else [e for e in smep.ENVS
                                  if f"{machine}-{e}" in placements
                                  or (machine, e) in nasplan.trees_present(facts["trees"], inv.nas.volume, settings.sheet)]
        if not envs:
            raise InputError(f"{machine} has no machine-env in the inventory or on the NAS for sheet "
                             f"{settings.sheet}: give --env")
        wanted = {}
        for e in envs:
            try:
                wanted[f"{machine}-{e}"] = (inv.placement(machine, e).nfs_client,)
            except InputError:
                wanted[f"{machine}-{e}"] = ()
    report = nasplan.status(facts, inv.nas.volume, settings.sheet, wanted, placements)
    ok = all(r["ok"] for r in report)
    lines = []
    for r in report:
        lines.append(f"{r['machine_env']}: {'ok' if r['ok'] else 'DRIFT'}  {r['path']}"
                     + (f" (uid {r['uid']})" if "uid" in r else ""))
        lines += [f"  - {p}" for p in r["problems"]]
        if r["fix"]:
            lines.append(f"  fix: {r['fix']}")
    if not report:
        lines.append(f"no machine-env for sheet {settings.sheet} in the inventory or on the NAS")
    emit(opts, {"ok": ok, "sheet": settings.sheet, "machine_envs": report}, lines)
    if not ok:
        raise Exit(code=1)
