"""service.*: the service catalog, and catalog services deployed onto machine-envs."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from .. import catalog as catalog_mod
from .. import smep
from ..errors import InputError, RemoteError
from .common import confirm, emit, finish, machine_env_flags, tin_task

TARGET_HELP = {
    "service": "machine (service) name, e.g. gazette",
    "env": "environment: " + ", ".join(smep.ENVS),
    "catalog_service": "catalog service to act on (default: the machine's own name)",
    "host": "Docker host of the machine-env (default: the inventory's machines:, or its only Docker host)",
}


def _local_sheet(opts) -> str:
    """The sheet for commands that work without the inventory (the catalog lives on this machine)."""
    from .. import config

    if opts.inventory is not None:
        config.check_inventory_flag(opts.inventory)  # given, it must be right, even where it is not read
    if opts.sheet:
        return opts.sheet
    if os.environ.get("TINSNIP_SHEET"):
        return smep.check_name(os.environ["TINSNIP_SHEET"], "sheet")
    if not config.inventory_path(opts.inventory).exists():
        return smep.DEFAULT_SHEET  # the catalog needs no inventory; a broken one is still an error
    return opts.settings().sheet


def _names(service, env, catalog_service, host) -> tuple[str, str, str]:
    """Check every name before anything is read or any connection is opened (exit 2)."""
    machine, env, _ = machine_env_flags(service, env, host=host)
    cs = smep.check_name(catalog_service, "catalog service") if catalog_service is not None else machine
    return machine, env, cs


def _machine_env(opts, machine: str, env: str, host: str | None):
    """(settings, engine, placed Docker host, MachineEnv): numbers from the registry on the NAS."""
    from ..plans import registry

    settings = opts.settings()
    placed = settings.inventory.placement(machine, env, host)
    engine = opts.engine(settings)
    try:
        sheet_number, machine_number, _notes = registry.lookup(engine, settings.sheet, machine)
        m = smep.MachineEnv(settings.sheet, sheet_number, machine, machine_number, env, settings.inventory.nas.volume)
    except BaseException:
        engine.close()
        raise
    return settings, engine, placed, m


def _run(engine, job, input_errors: list) -> list:
    outcomes = engine.run_phase([job])
    if input_errors:
        engine.close()
        raise input_errors[0]
    return outcomes


def _guard(plan_fn, input_errors: list):
    """Keep the InputError a planner raises (too few ports, machine-env not set up) for exit code 2."""

    def plan(facts):
        try:
            return plan_fn(facts)
        except InputError as exc:
            input_errors.append(exc)
            raise

    return plan


# -- the catalog -------------------------------------------------------------------------------------


@tin_task(help={
    "catalog_service": "show only this catalog service",
    "check": "exit 2 if a listed service has an error (warnings do not fail)",
})
def catalog(c, opts, catalog_service=None, check=False):
    """List the service catalog: each service, its ports, and what in its compose file cannot work (file:line, fix)."""
    if catalog_service is not None:
        smep.check_name(catalog_service, "catalog service")
    sheet = _local_sheet(opts)
    where = catalog_mod.find(sheet)
    services = [catalog_mod.get(where, catalog_service)] if catalog_service else catalog_mod.list_services(where)
    data = {"catalog": str(where), "sheet": sheet, "services": [s.describe() for s in services]}
    lines = [f"catalog {where} (sheet {sheet}): {len(services)} service(s)"]
    for s in services:
        rules = "deployable" if s.follows_rules else f"{len(s.problems)} error(s)"
        if s.warnings:
            rules += f", {len(s.warnings)} warning(s)"
        lines.append(f"  {s.name:<20} ports {s.ports_needed:<2} {rules:<28} {s.path}")
        lines += ["    error: " + p.replace("\n", "\n      ") for p in s.problems]
        lines += ["    warning: " + w.replace("\n", "\n      ") for w in s.warnings]
    emit(opts, data, lines)
    broken = [s for s in services if not s.follows_rules]
    if check and broken:
        broken[0].require_rules()


@tin_task(changes=True, help={
    "url": "git URL of the catalog (default: SERVICE_REPO_URL, else tinsnip's origin with tinsnip → service)",
    "dest": "where to clone it (default: ~/.local/opt/{sheet}.service)",
})
def catalog_install(c, opts, url=None, dest=None):
    """Clone the service catalog, or update an existing clone (git pull --ff-only)."""
    sheet = _local_sheet(opts)
    if url is not None and (not url.strip() or url.startswith("-") or any(ord(ch) < 32 for ch in url)):
        raise InputError(f"invalid --url {url!r}: give a git URL (https://, ssh://, file://, or a path)")
    if dest is not None and (not dest.strip() or dest.startswith("-") or any(ord(ch) < 32 for ch in dest)):
        raise InputError(f"invalid --dest {dest!r}: give a directory for the clone (a new one, or a clone "
                         f"of the same URL)")
    target = Path(dest).expanduser() if dest else Path.home() / ".local" / "opt" / f"{sheet}.service"
    repo, source = catalog_mod.repo_url(url)
    action = catalog_mod.install_action(target)
    catalog_mod.check_origin(target, repo, action)
    data = {"url": repo, "url_from": source, "dest": str(target), "action": action, "dry_run": opts.dry_run}
    if opts.dry_run:
        emit(opts, data, [f"would {action} {repo} ({source}) into {target}", "dry run: nothing was changed"])
        return
    action, output = catalog_mod.install(repo, target)
    data["action"] = action
    count = len(catalog_mod.list_services(target))
    data["services"] = count
    emit(opts, data, [f"{action}: {repo} → {target} ({count} catalog service(s))"] + ([output] if output else []))


# -- deploy -------------------------------------------------------------------------------------------


def _deploy_spec(m, svc, archives: dict, wait: int):
    from ..plans import service as plans

    values = {"TIN_SHEET": m.sheet, "TIN_MACHINE_NAME": m.machine, "TIN_SERVICE_NAME": m.machine,
              "TIN_SERVICE_ENVIRONMENT": m.env, "TIN_SERVICE_UID": str(m.uid), "TIN_SERVICE_GID": str(m.gid),
              "TIN_CATALOG_SERVICE": svc.name}
    from ..plans.service_override import spec_from_model

    images = tuple(sorted({catalog_mod.interpolate(i, values) for i in svc.images}))
    files = catalog_mod.service_files(svc)
    spec = spec_from_model(svc.model, set(files)) if svc.model is not None else None
    return plans.Deploy(spec=spec,
        m=m, service=svc.name, compose_file=svc.compose_file.name, files=files,
        services=svc.services, volumes=svc.volumes, ports_needed=svc.ports_needed, images=images,
        archives={i: archives[i] for i in images if i in archives}, wait_seconds=wait)


@tin_task(changes=True, help={
    **TARGET_HELP,
    "timeout": "seconds to wait for the containers to run (healthy, if they have a healthcheck); default 120",
})
def deploy(c, opts, service=None, env=None, catalog_service=None, host=None, timeout=None):
    """Deploy a catalog service onto a machine-env: files, ports, volumes on the NAS, containers."""
    from ..engine import Job
    from ..plans import service as plans

    machine, env, cs = _names(service, env, catalog_service, host)
    wait = smep.parse_number(timeout, "--timeout", 1, 3600) if timeout is not None else plans.WAIT_SECONDS
    svc = catalog_mod.get(catalog_mod.find(_local_sheet(opts)), cs)
    svc.require_rules()
    catalog_mod.service_files(svc)  # unreadable files are bad input too: before any connection
    settings, engine, placed, m = _machine_env(opts, machine, env, host)
    try:
        d = _deploy_spec(m, svc, dict(placed.images), wait)
        errors: list = []

        def plan(facts):
            p = plans.plan_deploy(d, placed.name, facts)
            if not opts.dry_run:
                for local, remote in p.data.get("archive_uploads", []):
                    engine.out.line(f"  copying image archive {local} for {m.user}", placed.name)
                    engine.remote(placed).put(local, remote)
            return p

        job = Job(placed, plans.deploy_facts(d, placed.user), _guard(plan, errors))
        [outcome] = _run(engine, job, errors)
    except BaseException:
        engine.close()
        raise
    data = outcome.plan.data if outcome.plan else {}
    extra = {"service": cs, "machine": m.name, "host": placed.name, "user": m.user, "ports": data.get("ports", []),
             "dir": plans.service_dir(m, cs), "data": plans.data_dir(m, cs), "where": data.get("where", []),
             "images": data.get("images", list(d.images)), "pulls": data.get("pulls", []),
             "kept_files": data.get("kept_files", [])}
    if not opts.json:
        for i in extra["images"]:
            how = "pulled by compose" if i in extra["pulls"] else "already there or loaded from its archive"
            engine.out.line(f"  image {i}: {how}", placed.name)
    if not outcome.failed and not opts.json:
        where = extra["where"]
        if where:
            places = "; ".join(f"{w['kind']} {w['name']} in {w['path']}" for w in where)
            summary = f"data on the NAS: {places}"
        else:
            summary = "no volumes or binds of runtime data (nothing of it on the NAS)"
        engine.out.line(f"{cs} on {m.name} ({placed.name}): ports {', '.join(map(str, extra['ports'])) or 'none'}; "
                        f"{summary}")
    finish(engine, extra)


# -- status, logs, stop, remove -----------------------------------------------------------------------


@tin_task(help={**TARGET_HELP, "catalog_service": "show only this catalog service (default: every one on the machine)"})
def status(c, opts, service=None, env=None, catalog_service=None, host=None):
    """Show the catalog services on a machine-env: containers, state, health, ports, image."""
    from ..plans import service as plans

    machine, env, _ = _names(service, env, catalog_service, host)
    settings, engine, placed, m = _machine_env(opts, machine, env, host)
    try:
        facts = engine.gather(placed, plans.status_facts(m))
    finally:
        engine.close()
    report = plans.status_report(m, placed.name, facts, catalog_service)
    lines = [f"{m.name} on {placed.name} (user {m.user}, ports {m.ports[0]}–{m.ports[-1]})"]
    if not report["ready"]:
        lines.append(f"  not set up: run `tin machine.create --service {machine} --env {env}`")
    if report["docker_error"]:
        lines.append(f"  rootless Docker does not answer: {report['docker_error']}")
    if not report["services"]:
        lines.append("  no catalog services deployed")
    for s in report["services"]:
        lines.append(f"  {s['service']}: {s['state']}; ports {', '.join(map(str, s['ports'])) or 'none'}")
        last = s.get("last_deploy")
        if last and last["outcome"] != "ok":
            lines.append(f"    last deploy FAILED at {last['at']}: {last['why']}")
            lines.append(f"    fix it, then `tin service.deploy --service {machine} --env {env} "
                         f"--catalog-service {s['service']}`")
        for ctr in s["containers"]:
            health = f" ({ctr['health']})" if ctr["health"] else ""
            lines.append(f"    {ctr['name']:<28} {ctr['state']}{health:<12} {ctr['image']:<20} {' '.join(ctr['ports'])}")
    emit(opts, report, lines)
    if report["docker_error"] and report["ready"]:
        raise RemoteError(f"{m.user}'s rootless Docker on {placed.name} does not answer")
    failed = [s["service"] for s in report["services"] if (s.get("last_deploy") or {}).get("outcome") == "failed"]
    if failed:
        raise RemoteError(f"the last deploy of {', '.join(failed)} on {m.name} failed (see above)")


@tin_task(help={**TARGET_HELP, "follow": "keep printing new lines until interrupted",
                "tail": "lines to show from the end of each container's log (default 100; 'all' for all)"})
def logs(c, opts, service=None, env=None, catalog_service=None, host=None, follow=False, tail=None):
    """Print the logs of a catalog service's containers."""
    from ..plans import service as plans
    from ..script import CLEAN_PATH

    machine, env, cs = _names(service, env, catalog_service, host)
    if tail is None:
        tail = "100"
    elif str(tail) != "all":
        tail = str(smep.parse_number(tail, "--tail", 0, 1_000_000))
    settings, engine, placed, m = _machine_env(opts, machine, env, host)
    argv = ["runuser", "-u", m.user, "--", "env", "-i", f"PATH={CLEAN_PATH}",
            *[f"{k}={v}" for k, v in plans.docker_env(m)],
            "docker", "compose", "--ansi", "never", "--project-name", cs, "logs", "--no-color", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    text = f"cd / || exit 1\nexec {shlex.join(argv)} 2>&1\n"
    out = sys.stdout

    def line(raw: bytes) -> None:
        out.write(raw.decode(errors="replace"))
        out.flush()

    try:
        result = engine.remote(placed).run_script(text, on_line=line)
    finally:
        engine.close()
    if result.rc != 0:
        raise RemoteError(f"docker compose logs for {cs} on {m.name} failed (exit {result.rc}) {result.stderr.strip()}")


@tin_task(changes=True, help=TARGET_HELP)
def stop(c, opts, service=None, env=None, catalog_service=None, host=None):
    """Stop a catalog service's containers (service.deploy starts them again)."""
    from ..engine import Job
    from ..plans import service as plans

    machine, env, cs = _names(service, env, catalog_service, host)
    settings, engine, placed, m = _machine_env(opts, machine, env, host)
    errors: list = []
    try:
        job = Job(placed, plans.project_facts(m, cs), _guard(lambda f: plans.plan_stop(m, cs, placed.name, f), errors))
        _run(engine, job, errors)
    except BaseException:
        engine.close()
        raise
    finish(engine, {"service": cs, "machine": m.name, "host": placed.name})


@tin_task(changes=True, help={**TARGET_HELP, "delete_data": "also delete the service's data on the NAS"})
def remove(c, opts, service=None, env=None, catalog_service=None, host=None, delete_data=False):
    """Remove a catalog service from a machine-env and free its ports; its data stays unless asked."""
    from ..engine import Job
    from ..plans import service as plans

    machine, env, cs = _names(service, env, catalog_service, host)
    if delete_data:
        confirm(opts, f"delete the data of {cs} on {machine}-{env} (in /mnt/{machine}-{env}/data/{cs}, on the NAS)?")
    settings, engine, placed, m = _machine_env(opts, machine, env, host)
    errors: list = []
    try:
        first: list[dict] = []  # the verify pass plans again: what was freed is in the first plan

        def plan(facts):
            p = plans.plan_remove(m, cs, bool(delete_data), placed.name, facts)
            if not first:
                first.append(dict(p.data))
            return p

        job = Job(placed, plans.project_facts(m, cs), _guard(plan, errors))
        _run(engine, job, errors)
    except BaseException:
        engine.close()
        raise
    data = first[0] if first else {}
    finish(engine, {"service": cs, "machine": m.name, "host": placed.name, "freed_ports": data.get("freed_ports", []),
                    "data": plans.data_dir(m, cs), "data_deleted": data.get("data_deleted", False)})
