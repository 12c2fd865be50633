"""machine.*: a machine-env on its Docker host, from nothing to ready, and back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .. import smep
from ..errors import InputError, TinsnipError
from .common import confirm, emit, finish, machine_env_flags, tin_task

MACHINE_HELP = {
    "service": "machine (service) name, e.g. gazette",
    "env": "environment: " + ", ".join(smep.ENVS),
}


def offline_numbers(sheet: str, machine: str, number) -> tuple[int, int, list[str]]:
    """Numbers without the NAS: reserved names, --number, and the sheet hash rule (SPEC §3)."""
    notes = []
    sheet_number = smep.offline_sheet_number(sheet)
    notes.append(f"offline: sheet {sheet!r} → {sheet_number} by the hash rule, not read from the sheet registry")
    if number is not None:
        machine_number = smep.check_machine_number(number)
        notes.append(f"offline: machine number {machine_number:02d} from --number")
    elif machine in smep.RESERVED_MACHINES:
        machine_number = smep.RESERVED_MACHINES[machine]
        notes.append(f"offline: machine number {machine_number:02d} is reserved for {machine!r}")
    else:
        raise smep.InputError(
            f"machine {machine!r} is not reserved, so its number lives in the registry on the NAS: "
            f"drop --offline, or pin one with --number NN"
        )
    return sheet_number, machine_number, notes


@tin_task(help={
    **MACHINE_HELP,
    "offline": "work without the NAS: reserved numbers, --number and the sheet hash rule",
    "number": "machine number to use (00–99) for a machine not in the registry",
})
def info(c, opts, service=None, env=None, offline=False, number=None):
    """Show a machine-env's numbers: UID, ports, user, NAS path, mount."""
    machine, env, _ = machine_env_flags(service, env, number)
    if offline:
        from .. import config

        sheet = opts.sheet or config.config_values(config.inventory_path(opts.inventory)).get("TINSNIP_SHEET") \
            or smep.DEFAULT_SHEET
        volume = "/volume1"
        try:
            settings = opts.settings()
            sheet, volume = opts.sheet or settings.sheet, settings.inventory.nas.volume
        except smep.InputError:
            pass  # offline works without an inventory
        sheet_number, machine_number, notes = offline_numbers(sheet, machine, number)
        source = "offline"
    else:
        from ..plans import registry

        engine = opts.engine()
        settings = engine.settings
        sheet, volume = settings.sheet, settings.inventory.nas.volume
        try:
            sheet_number, machine_number, notes = registry.lookup(engine, sheet, machine, number)
        finally:
            engine.close()
        source = "registry"
    m = smep.MachineEnv(sheet, sheet_number, machine, machine_number, env, volume)
    data = {**m.info(), "source": source, "notes": notes}
    lines = [f"{m.name} (sheet {m.sheet} = {m.sheet_number}, machine {m.machine_number:02d}, env {m.env} = {m.env_number})",
             f"  uid/gid   {m.uid}",
             f"  ports     {m.ports[0]}–{m.ports[-1]} (TIN_PORT_0 … TIN_PORT_9)",
             f"  user      {m.user} (home {m.home})",
             f"  NAS path  {m.nas_path}",
             f"  mount     {m.mount} → {m.mount_point} (behind the gate {m.gate})",
             f"  docker    {m.docker_host}",
             *[f"  note: {n}" for n in notes]]
    emit(opts, data, lines)


# -- shared by create, station, apply, remove ----------------------------------------------------

def catalog_warning(sheet: str, machine: str) -> str | None:
    """SPEC §8: warn (and carry on) when the service catalog has no service named after the machine."""
    if machine == "station":
        return None
    from ..catalog import candidates

    places = [path for _, path in candidates(sheet)]
    if any((p / machine).is_dir() for p in places):
        return None
    return (f"warning: no catalog service named {machine!r} in {', '.join(map(str, places))}; the machine-env is created "
            f"anyway (install the catalog with `tin service.catalog-install`)")


def _converge(opts, settings, targets: list[tuple[str, str, object]], pins: dict[str, int]):
    """Phase 1: the NAS (registry, tree, export, machine.env) for every target; phase 2: every Docker host
    with its machine-envs, hosts in parallel. A NAS failure stops before any Docker host is touched."""
    from .. import secrets
    from ..plans import machine as plans
    from ..plans import nas as nas_plans

    engine = opts.engine(settings)
    inv = settings.inventory
    nas_targets = [(machine, env, [host.nfs_client]) for machine, env, host in targets]
    try:
        # the NAS job also reads each machine-env's registry logins, for its user's ~/.docker/config.json
        job = nas_plans.nas_job(settings, nas_targets, pins=pins or None)
        seen: dict = {}
        extra = [secrets.secrets_fact(f"{machine}-{env}", nas_plans.machine_path(inv.nas.volume, settings.sheet, machine, env))
                 for machine, env, _ in targets]

        def plan(facts, inner=job.plan):
            seen.update(facts)
            return inner(facts)
        [nas_outcome] = engine.run_phase([type(job)(job.host, job.facts + extra, plan)])
        if nas_outcome.failed or nas_outcome.plan is None:
            engine.out.line("the NAS phase failed: nothing was changed on the Docker hosts", err=True)
            return engine, {}
        machine_envs = nas_outcome.plan.data["machine_envs"]
        by_host: dict[str, list] = {}
        hosts = {}
        for machine, env, host in targets:
            by_host.setdefault(host.name, []).append(machine_envs[f"{machine}-{env}"])
            hosts[host.name] = host
        logins = {name: secrets.logins(seen, m) for name, m in machine_envs.items()}
        jobs = [plans.docker_job(settings, hosts[name], mes, inv.nas.address, logins) for name, mes in by_host.items()]
        engine.run_phase(jobs)
        placed = {f"{machine}-{env}": host.name for machine, env, host in targets}
        return engine, {name: {**m.info(), "host": placed[name]} for name, m in machine_envs.items() if name in placed}
    except BaseException:
        engine.close()
        raise


def _create(opts, machine, env, host, number):
    machine, env, pinned = machine_env_flags(machine, env, number, host)
    settings = opts.settings()
    placed = settings.inventory.placement(machine, env, host)
    warning = catalog_warning(settings.sheet, machine)
    if warning and not opts.json:
        print(warning)
    engine, machine_envs = _converge(opts, settings, [(machine, env, placed)], {machine: pinned} if pinned is not None else {})
    extra = {"machine_envs": machine_envs}
    if warning:
        extra["warnings"] = [warning]
    finish(engine, extra)


@tin_task(changes=True, help={
    **MACHINE_HELP,
    "host": "Docker host to put it on (default: the inventory's machines:, or its only Docker host)",
    "number": "pin the machine number (00–99) the first time a name is registered",
})
def create(c, opts, service=None, env=None, host=None, number=None):
    """Create a machine-env: NAS storage and export, then its user, mount and rootless Docker on its host."""
    _create(opts, service, env, host, number)


@tin_task(changes=True, help={
    "env": "environment of the station (default prod)",
    "host": "Docker host to put it on (default: the inventory's machines:, or its only Docker host)",
})
def station(c, opts, env="prod", host=None):
    """Create the sheet's station (machine 00), whose prod storage holds the registries."""
    _create(opts, "station", env, host, None)


@tin_task(changes=True, help={})
def apply(c, opts):
    """Converge every machine-env in the inventory's machines: at once (NAS first, then hosts in parallel)."""
    settings = opts.settings()
    inv = settings.inventory
    if not inv.machines:
        raise InputError(f"the inventory {inv.path} lists no machines: add 'gazette-prod: docker1' lines under machines:")
    targets = []
    for key in sorted(inv.machines):
        machine, env = smep.parse_machine_env(key)
        targets.append((machine, env, inv.placement(machine, env)))
    engine, machine_envs = _converge(opts, settings, targets, {})
    finish(engine, {"machine_envs": machine_envs})


@tin_task(changes=True, help={
    **MACHINE_HELP,
    "delete_data": "also delete the machine-env's tree on the NAS (asks unless --yes)",
    "host": "Docker host it is on (default: the inventory's machines:, or its only Docker host)",
})
def remove(c, opts, service=None, env=None, delete_data=False, host=None):
    """Remove a machine-env from its Docker host and its export from the NAS; NAS data stays unless --delete-data."""
    from ..plans import machine as plans
    from ..plans import nas as nas_plans
    from ..plans import registry

    machine, env, _ = machine_env_flags(service, env, host=host)
    settings = opts.settings()
    placed = settings.inventory.placement(machine, env, host)
    name = smep.user_name(machine, env)
    if delete_data:
        confirm(opts, f"delete every file of {name} on the NAS ({settings.inventory.nas.volume}/{settings.sheet}/{machine}/{env})?")
    engine = opts.engine(settings)
    try:
        sheet_number, machine_number, _ = registry.lookup(engine, settings.sheet, machine)
        m = smep.MachineEnv(settings.sheet, sheet_number, machine, machine_number, env, settings.inventory.nas.volume)
        [outcome] = engine.run_phase([plans.remove_job(settings, placed, m, settings.inventory.nas.address)])
        if outcome.failed:
            engine.out.line(f"{placed.name} failed: the NAS side of {name} was left as it is", err=True)
        else:
            engine.run_phase([nas_plans.nas_remove_job(settings, machine, env, [placed.nfs_client], delete_data)])
    except BaseException:
        engine.close()
        raise
    finish(engine, {"machine_env": {**m.info(), "host": placed.name}, "delete_data": bool(delete_data)})


# -- read-only reports -------------------------------------------------------------------------

def _inventory_targets(settings, service, env, host=None) -> list[tuple[str, str, object]]:
    inv = settings.inventory
    if service is None and env is None:
        keys = sorted(inv.machines)
        if not keys:
            raise InputError(f"the inventory {inv.path} lists no machines: name one with --service and --env")
        return [(*smep.parse_machine_env(k), inv.placement(*smep.parse_machine_env(k))) for k in keys]
    machine, env, _ = machine_env_flags(service, env, host=host)
    return [(machine, env, inv.placement(machine, env, host))]


def _survey(opts, settings, targets):
    """One NAS round trip (registry, and the NAS plan's view if available), then one per Docker host,
    in parallel. Returns (engine, numbers, nas_drift, per-host facts)."""
    from ..plans import machine as plans
    from ..plans import registry

    engine = opts.engine(settings)
    inv = settings.inventory
    volume = inv.nas.volume
    nas_drift: dict[str, list[str]] = {}
    machine_envs: dict[str, smep.MachineEnv] = {}
    unregistered: list[str] = []
    try:
        from ..plans import nas as nas_plans

        nas_job = nas_plans.nas_job(settings, [(m, e, [h.nfs_client]) for m, e, h in targets])
        reg_facts = [registry.file_fact("reg:sheets", registry.sheets_path(volume)),
                     registry.file_fact("reg:machines", registry.machines_path(volume, settings.sheet))]
        from .. import secrets

        names = {f.name for f in nas_job.facts}
        secret_facts = [secrets.secrets_fact(f"{m}-{e}", nas_plans.machine_path(volume, settings.sheet, m, e))
                        for m, e, _h in targets]
        facts = engine.gather(inv.nas, nas_job.facts + [f for f in reg_facts if f.name not in names] + secret_facts)
        sheets, machines = registry.read(facts, volume, settings.sheet)
        for machine, env, _host in targets:
            name = f"{machine}-{env}"
            try:
                sn, mn, _ = registry.resolve(facts, volume, settings.sheet, machine)
            except InputError:
                unregistered.append(name)
                continue
            machine_envs[name] = smep.MachineEnv(settings.sheet, sn, machine, mn, env, volume)
        try:
            plan = nas_job.plan(facts)
            for step in plan.changes:
                head, _, rest = step.desc.partition(": ")
                pieces = [f"{head}: {p}" for p in rest.split(" | ")] if head == "exports" else [step.desc]
                for piece in pieces:
                    named = [name for name in machine_envs if f"{name}:" in piece or f"{name} " in piece]
                    for name in named or ["*"]:
                        nas_drift.setdefault(name, []).append(piece)
        except TinsnipError as exc:
            nas_drift.setdefault("*", []).append(str(exc))
        by_host: dict[str, list[smep.MachineEnv]] = {}
        hosts = {}
        for machine, env, host in targets:
            if f"{machine}-{env}" in machine_envs:
                by_host.setdefault(host.name, []).append(machine_envs[f"{machine}-{env}"])
                hosts[host.name] = host

        def one(name):
            mes = by_host[name]
            try:
                host_facts = engine.gather(hosts[name], plans.facts_for(mes, hosts[name]))
                logins = {m.name: secrets.logins(facts, m) for m in mes}
                return name, plans.assess_host(hosts[name], mes, inv.nas.address, host_facts, logins), None
            except TinsnipError as exc:
                return name, None, str(exc)

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_host)))) as pool:
            host_results = [*pool.map(one, by_host)]
    except BaseException:
        engine.close()
        raise
    return engine, machine_envs, unregistered, nas_drift, host_results, machines.entries


FIX_HINT = {
    "user": "machine.create",
    "/etc/subuid": "machine.create",
    "/etc/subgid": "machine.create",
    "/etc/fstab": "machine.create",
    "gate": "machine.create",
    "mount": "machine.create",
    "linger": "machine.create",
    "docker": "machine.create",
    "links": "machine.create",
    "registry": "machine.create",
}


@tin_task(help={**MACHINE_HELP, "service": "machine (service) name; leave out for every machine-env in the inventory",
                "host": "Docker host of a machine-env that is not in the inventory's machines:"})
def status(c, opts, service=None, env=None, host=None):
    """Each part of one or every machine-env: ok, missing or drifted, and what to run to fix it."""
    settings = opts.settings()
    targets = _inventory_targets(settings, service, env, host)
    engine, machine_envs, unregistered, nas_drift, host_results, _ = _survey(opts, settings, targets)
    engine.close()
    placement = {f"{m}-{e}": h.name for m, e, h in targets}
    report: dict[str, dict] = {}
    lines: list[str] = []
    for name in unregistered:
        machine, env_ = smep.parse_machine_env(name)
        report[name] = {"host": placement[name], "ok": False, "parts": [
            {"part": "registry", "state": "missing", "detail": f"{machine} is not in the machine registry",
             "fix": f"tin machine.create --service {machine} --env {env_}"}]}
    failed_hosts = {}
    for host_name, assessment, error in host_results:
        if error:
            failed_hosts[host_name] = error
            continue
        for name, parts in assessment.parts.items():
            m = machine_envs[name]
            fix = f"tin machine.create --service {m.machine} --env {m.env}"
            described = []
            nas = nas_drift.get(name, [])
            described.append({"part": "nas", "state": "ok" if not nas else "drifted",
                              "detail": "; ".join(nas) if nas else f"{m.nas_path} and its export in place",
                              **({"fix": fix} if nas else {})})
            for p in parts:
                d = p.describe()
                if p.state != "ok":
                    d["fix"] = fix
                described.append(d)
            report[name] = {"host": host_name, "uid": m.uid, "ok": all(d["state"] == "ok" for d in described),
                            "parts": described}
    for name, data in sorted(report.items()):
        lines.append(f"{name} on {data['host']}: {'ok' if data['ok'] else 'NOT OK'}")
        for d in data["parts"]:
            mark = {"ok": "  ok     ", "missing": "  MISSING", "drifted": "  DRIFTED"}.get(d["state"], "  ?      ")
            lines.append(f"{mark} {d['part']:<12} {d['detail']}")
        fixes = sorted({d["fix"] for d in data["parts"] if "fix" in d})
        for fix in fixes:
            lines.append(f"  fix: {fix}")
    for host_name, error in failed_hosts.items():
        lines.append(f"{host_name}: could not be read: {error}")
    if nas_drift.get("*"):
        lines.append("nas: also: " + "; ".join(nas_drift["*"]))
    ok = all(d["ok"] for d in report.values()) and not failed_hosts
    emit(opts, {"ok": ok, "machine_envs": report, "unreachable": failed_hosts,
                "nas_other": nas_drift.get("*", [])}, lines)
    if not ok:
        from invoke.exceptions import Exit

        raise Exit(code=1)


@tin_task(help={}, name="list")
def list_(c, opts):
    """Machine-envs from the registry and the inventory: uid, host, ports and state."""
    settings = opts.settings()
    inv = settings.inventory
    targets = [(*smep.parse_machine_env(k), inv.placement(*smep.parse_machine_env(k))) for k in sorted(inv.machines)]
    engine, machine_envs, unregistered, nas_drift, host_results, registered = _survey(opts, settings, targets)
    engine.close()
    rows = []
    states = {}
    for host_name, assessment, error in host_results:
        if error:
            for m, e, h in targets:
                if h.name == host_name:
                    states[f"{m}-{e}"] = "unreachable"
            continue
        for name, parts in assessment.parts.items():
            bad = [p.name for p in parts if p.state != "ok"] + (["nas"] if nas_drift.get(name) else [])
            absent = all(p.state == "missing" for p in parts if p.name in ("user", "mount", "docker"))
            states[name] = "absent" if absent else ("ready" if not bad else "drifted: " + ",".join(bad))
    for m, e, h in targets:
        name = f"{m}-{e}"
        me = machine_envs.get(name)
        rows.append({"name": name, "machine": m, "env": e, "host": h.name,
                     "uid": me.uid if me else None, "ports": me.ports if me else [],
                     "number": me.machine_number if me else None,
                     "state": "not registered" if name in unregistered else states.get(name, "?")})
    in_inventory = {m for m, _, _ in targets}
    for machine, number in sorted(registered.items()):
        if machine not in in_inventory:
            rows.append({"name": machine, "machine": machine, "env": None, "host": None, "uid": None, "ports": [],
                         "number": number, "state": "registered, not in the inventory"})
    lines = [f"{'machine-env':<24} {'uid':>6}  {'host':<10} {'ports':<12} state"]
    for r in rows:
        ports = f"{r['ports'][0]}–{r['ports'][-1]}" if r["ports"] else "-"
        lines.append(f"{r['name']:<24} {r['uid'] or '-':>6}  {r['host'] or '-':<10} {ports:<12} {r['state']}")
    emit(opts, {"sheet": settings.sheet, "machine_envs": rows}, lines)



# -- secrets and registry logins, kept per machine-env on the NAS ------------------------------------

def _secret_target(opts, service, env):
    """(settings, machine, env, NAS tree) after checking the flags; no connection yet."""
    from ..plans import nas as nas_plans

    machine, env, _ = machine_env_flags(service, env)
    settings = opts.settings()
    tree = nas_plans.machine_path(settings.inventory.nas.volume, settings.sheet, machine, env)
    return settings, machine, env, tree


def _nas_secret_job(engine, settings, machine, env, tree, plan_fn, values=True):
    """A NAS job over the machine-env's registry numbers and its secrets directory (one round trip)."""
    from .. import secrets
    from ..engine import Job
    from ..plans import registry
    from ..steps import HostPlan

    inv = settings.inventory
    volume = inv.nas.volume
    name = f"{machine}-{env}"
    facts = [registry.file_fact("reg:sheets", registry.sheets_path(volume)),
             registry.file_fact("reg:machines", registry.machines_path(volume, settings.sheet)),
             secrets.secrets_fact(name, tree, values=values)]

    def plan(f):
        sn, mn, _ = registry.resolve(f, volume, settings.sheet, machine)
        m = smep.MachineEnv(settings.sheet, sn, machine, mn, env, volume)
        return HostPlan(inv.nas.name, plan_fn(f, m), {"machine_env": m})
    return Job(inv.nas, facts, plan)


def _secret_change(opts, service, env, name, value_fn, unset=False):
    from .. import secrets

    settings, machine, env_, tree = _secret_target(opts, service, env)
    value = None if unset else value_fn(settings)
    engine = opts.engine(settings)
    try:
        job = _nas_secret_job(engine, settings, machine, env_, tree,
                              (lambda f, m: secrets.plan_unset(f, m, name)) if unset else
                              (lambda f, m: secrets.plan_set(f, m, name, value)), values=not unset)
        engine.run_phase([job])
    except BaseException:
        engine.close()
        raise
    return engine, machine, env_


SECRET_HELP = {**MACHINE_HELP, "name": "the secret's name, as the compose file uses it (DB_PASSWORD)"}


@tin_task(changes=True, help=SECRET_HELP, name="secret-set")
def secret_set(c, opts, service=None, env=None, name=None):
    """Set a secret of a machine-env on the NAS; the value is read from stdin (or TINSNIP_SECRET_<NAME>)."""
    import sys

    from .. import secrets
    from .common import require

    name = secrets.check_name(require(name, "name"))
    machine_env_flags(service, env)

    def value(settings):
        return secrets.read_value(sys.stdin, settings.values, secrets.ENV_PREFIX + name, f"the value of {name}")
    engine, machine, env_ = _secret_change(opts, service, env, name, value)
    finish(engine, {"machine_env": f"{machine}-{env_}", "secret": name})


@tin_task(changes=True, help=SECRET_HELP, name="secret-unset")
def secret_unset(c, opts, service=None, env=None, name=None):
    """Remove a secret of a machine-env from the NAS."""
    from .. import secrets
    from .common import require

    name = secrets.check_name(require(name, "name"))
    engine, machine, env_ = _secret_change(opts, service, env, name, None, unset=True)
    finish(engine, {"machine_env": f"{machine}-{env_}", "secret": name})


@tin_task(help=MACHINE_HELP, name="secrets")
def secrets_(c, opts, service=None, env=None):
    """List the names of a machine-env's secrets and registry logins (never their values)."""
    from .. import secrets

    settings, machine, env_, tree = _secret_target(opts, service, env)
    engine = opts.engine(settings)
    name = f"{machine}-{env_}"
    try:
        facts = engine.gather(settings.inventory.nas, [secrets.secrets_fact(name, tree, values=False)])
    finally:
        engine.close()
    files = facts[f"secrets:{name}"]["files"]
    names = sorted(n for n in files if secrets.NAME_RE.match(n))
    logins = sorted(n[len(secrets.REGISTRY_PREFIX):] for n in files if n.startswith(secrets.REGISTRY_PREFIX))
    lines = [f"{name}: {len(names)} secret(s), {len(logins)} registry login(s) in {secrets.tree_secrets_dir(tree)}"]
    lines += [f"  secret  {n}" for n in names] + [f"  login   {r}" for r in logins]
    emit(opts, {"machine_env": name, "secrets": names, "registry_logins": logins}, lines)


def _check_registry(registry) -> str:
    import re

    from .common import require

    registry = require(registry, "registry")
    if not re.fullmatch(r"[A-Za-z0-9.\-]+:[0-9]{1,5}", registry):
        raise InputError(f"--registry {registry!r}: give HOST:PORT as image names use it, e.g. 198.18.0.30:5001")
    return registry


LOGIN_HELP = {**MACHINE_HELP, "registry": "the registry, HOST:PORT (as image names use it)",
              "username": "the registry user; the password is read from stdin (or TINSNIP_REGISTRY_PASSWORD)"}


@tin_task(changes=True, help=LOGIN_HELP)
def login(c, opts, service=None, env=None, registry=None, username=None):
    """Log a machine-env in to a registry: kept as a secret on the NAS, written to the user's ~/.docker/config.json."""
    import sys

    from .. import secrets
    from .common import require

    registry = _check_registry(registry)
    username = require(username, "username")
    if any(ch.isspace() or ch == ":" or ord(ch) < 32 or ord(ch) == 127 for ch in username):
        raise InputError(f"--username {username!r}: no spaces, control characters or ':'")
    machine_env_flags(service, env)

    def value(settings):
        password = secrets.read_value(sys.stdin, settings.values, "TINSNIP_REGISTRY_PASSWORD",
                                      f"the password of {username} at {registry}")
        return secrets.login_value(username, password)
    engine, machine, env_ = _secret_change(opts, service, env, secrets.login_name(registry), value)
    _after_login_change(opts, engine, machine, env_)


@tin_task(changes=True, help={**MACHINE_HELP, "registry": "the registry, HOST:PORT"})
def logout(c, opts, service=None, env=None, registry=None):
    """Remove a machine-env's login to a registry from the NAS and from the user's ~/.docker/config.json."""
    from .. import secrets

    registry = _check_registry(registry)
    engine, machine, env_ = _secret_change(opts, service, env, secrets.login_name(registry), None, unset=True)
    _after_login_change(opts, engine, machine, env_)


def _after_login_change(opts, engine, machine, env_):
    """The NAS holds the login now: converge the machine-env's Docker host so config.json follows."""
    try:
        failed = any(o.failed for o in engine.outcomes)
        settings = engine.settings
        if not failed:
            placed = settings.inventory.placement(machine, env_)
            engine.close()
            engine2, info = _converge(opts, settings, [(machine, env_, placed)], {})
            engine2.outcomes[:0] = engine.outcomes
            engine = engine2
    except BaseException:
        engine.close()
        raise
    finish(engine, {"machine_env": f"{machine}-{env_}"})
