"""machine.*: a machine-env on its Docker host, from nothing to ready, and back."""

from __future__ import annotations

from .. import smep
from .common import emit, require, tin_task


def offline_numbers(sheet: str, machine: str, number) -> tuple[int, int, list[str]]:
    """Numbers without the NAS: reserved names, --number, and the sheet hash rule (SPEC §3)."""
    notes = []
    sheet_number = smep.offline_sheet_number(sheet)
    notes.append(f"offline: sheet {sheet!r} → {sheet_number} by the hash rule, not read from the sheet registry")
    if number is not None:
        machine_number = smep.check_machine_number(number)
        if machine in smep.RESERVED_MACHINES and machine_number != smep.RESERVED_MACHINES[machine]:
            raise smep.InputError(f"machine {machine!r} is reserved with number {smep.RESERVED_MACHINES[machine]:02d}")
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
    "service": "machine (service) name, e.g. gazette",
    "env": "environment: " + ", ".join(smep.ENVS),
    "offline": "work without the NAS: reserved numbers, --number and the sheet hash rule",
    "number": "machine number to use (00–99) for a machine not in the registry",
})
def info(c, opts, service=None, env=None, offline=False, number=None):
    """Show a machine-env's numbers: UID, ports, user, NAS path, mount."""
    machine = smep.check_name(require(service, "service"), "machine")
    env = smep.check_env(require(env, "env"))
    smep.user_name(machine, env)
    if number is not None:
        smep.check_machine_number(number)
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
             f"  mount     {m.mount}",
             f"  docker    {m.docker_host}",
             *[f"  note: {n}" for n in notes]]
    emit(opts, data, lines)
