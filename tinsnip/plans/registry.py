"""The sheet and machine registries on the NAS: file format, facts, planning, and `lookup`. Pure,
except `lookup`, which reads the files through the engine in one round trip.

Both files live in a station's `prod/data/` directory (SPEC §6):
- `{volume}/{sheet}/station/prod/data/machines`: `name=NN` (station=00 is implied);
- `{volume}/dynamicalsystem/station/prod/data/sheets`: `name=N`, for every sheet.

Writes are compare-and-swap uploads (`expect=sha256(old)`) run under the NAS's host lock: a file
changed by another tinsnip between facts and apply is read again and re-planned, so concurrent
writers never lose or duplicate an entry. New entries are appended; comments, blank lines and order
of a hand-edited file are kept.

The files are owned root:root, mode 0644: only an admin (through tinsnip's sudo) can change the
numbers that decide every UID of a sheet, while anyone who can reach the station's data directory
(admins, and machine users through a read-only mount of the station export) can read them. The
station tree itself is the station-prod user's, mode 0750, like every machine-env's tree.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from .. import smep
from ..errors import InputError, RemoteError
from ..script import Fact
from ..steps import Noop, Run, Step, Upload, sha256

SUBDIRS = ("data", "config", "state", "service", ".machine")
FILE_OWNER = "0:0"
FILE_MODE = 0o644
LINE_RE = re.compile(r"^\s*([^=\s#]+)\s*=\s*([0-9]+)\s*$")


# -- paths --------------------------------------------------------------------------------------

def station_dir(volume: str, sheet: str) -> str:
    return f"{volume.rstrip('/')}/{sheet}/station/prod"


def machines_path(volume: str, sheet: str) -> str:
    return f"{station_dir(volume, sheet)}/data/machines"


def sheets_path(volume: str) -> str:
    return f"{station_dir(volume, smep.DEFAULT_SHEET)}/data/sheets"


# -- the file format ----------------------------------------------------------------------------

@dataclass
class RegistryFile:
    """A registry file: its exact text and the entries in it (name → number, in file order)."""

    kind: str  # "machines" or "sheets"
    path: str
    text: str | None  # None: the file does not exist yet
    entries: dict[str, int] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # name → line number

    @property
    def exists(self) -> bool:
        return self.text is not None

    def add(self, name: str, number: int) -> str:
        """The text with `name=number` appended (a new file gets a header comment)."""
        text = self.text
        if text is None:
            what = "machine numbers (00–99) of this sheet; station=00 is implied" if self.kind == "machines" \
                else "sheet numbers (1–5) of every sheet"
            text = f"# tinsnip registry: {what}. One name=number per line; '#' starts a comment.\n"
        if text and not text.endswith("\n"):
            text += "\n"
        return text + f"{name}={format_number(self.kind, number)}\n"

    def remove(self, name: str) -> str:
        """The text without `name`'s line; everything else kept."""
        keep = [line for i, line in enumerate((self.text or "").splitlines(keepends=True), 1)
                if self.lines.get(name) != i]
        return "".join(keep)


def format_number(kind: str, number: int) -> str:
    return f"{number:02d}" if kind == "machines" else str(number)


def parse(kind: str, path: str, text: str | None) -> RegistryFile:
    """Read a registry; a malformed line, a duplicate name or number is an InputError naming the line."""
    reg = RegistryFile(kind, path, text)
    holders: dict[int, str] = {}
    for i, raw in enumerate((text or "").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = LINE_RE.match(line)
        where = f"{path} line {i}"
        if not m:
            raise InputError(f"{where}: cannot read {raw.strip()!r}: write name=number (e.g. 'gazette=01'), "
                             f"or make it a comment with '#'")
        name, number_text = m.group(1), m.group(2)
        try:
            smep.check_name(name, "sheet" if kind == "sheets" else "machine")
            number = smep.check_sheet_number(number_text) if kind == "sheets" else smep.check_machine_number(number_text)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if name in reg.entries:
            raise InputError(f"{where}: {name!r} is listed twice (first on line {reg.lines[name]}); keep one")
        if number in holders:
            raise InputError(f"{where}: number {number} of {name!r} is already held by {holders[number]!r} "
                             f"(line {reg.lines[holders[number]]}); two names on one number would share UIDs")
        if kind == "machines" and name in smep.RESERVED_MACHINES and smep.RESERVED_MACHINES[name] != number:
            raise InputError(f"{where}: {name!r} is reserved with number {smep.RESERVED_MACHINES[name]:02d}")
        if kind == "machines" and number in smep.RESERVED_MACHINES.values() and \
                name != {v: k for k, v in smep.RESERVED_MACHINES.items()}[number]:
            raise InputError(f"{where}: number {number:02d} is reserved for "
                             f"{ {v: k for k, v in smep.RESERVED_MACHINES.items()}[number]!r}")
        reg.entries[name] = number
        reg.lines[name] = i
        holders[number] = name
    return reg


# -- facts --------------------------------------------------------------------------------------

def _read_or_absent(rc: int, out: str, path: str):
    if rc == 0:
        return out
    if rc == 3:
        return None
    raise RemoteError(f"cannot read {path} on the NAS (exit {rc})")


def file_fact(name: str, path: str) -> Fact:
    """A file's exact text, or None when it does not exist."""
    q = shlex.quote(path)
    return Fact(name, f"if [ -f {q} ]; then cat {q}; else exit 3; fi",
                lambda rc, out, p=path: _read_or_absent(rc, out, p))


def _parse_stat(rc: int, out: str) -> dict[str, tuple[str, int, int, int]]:
    found = {}
    for line in out.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5:
            kind, uid, gid, mode, path = parts
            found[path] = (kind, int(uid), int(gid), int(mode, 8))
    return found


def tree_paths(root: str) -> list[str]:
    return [root] + [f"{root}/{d}" for d in SUBDIRS]


def tree_fact(name: str, root: str, extra: tuple[str, ...] = ()) -> Fact:
    """Type, owner and mode of a machine-env's directory and its five subdirectories (and `extra`)."""
    paths = " ".join(shlex.quote(p) for p in [*tree_paths(root), *extra])
    return Fact(name, f"stat -c '%F|%u|%g|%a|%n' {paths} 2>/dev/null; true", _parse_stat)


def tree_steps(m: smep.MachineEnv, stat: dict, what: str | None = None) -> list[Step]:
    """Create or repair a machine-env's tree: uid:gid, 0750; parents are created root-owned 0755 and
    otherwise left alone. A symlink anywhere in the tree is refused, never followed."""
    root = m.nas_path
    what = what or m.name
    for path in tree_paths(root):
        if path in stat and stat[path][0] != "directory":
            raise RemoteError(f"{path} on the NAS is a {stat[path][0]}, not a directory: tinsnip will not "
                              f"follow or replace it; move it aside and run again")
    good = all(p in stat and stat[p][1:] == (m.uid, m.gid, 0o750) for p in tree_paths(root))
    if good:
        return [Noop(f"{what}: {root} and its subdirectories are {m.uid}:{m.gid} 0750")]
    paths = tree_paths(root)
    return [
        Run(("mkdir", "-p", *paths), f"{what}: create {root}/{{{','.join(SUBDIRS)}}} (new parents root-owned 0755)"),
        Run(("chown", "-h", f"{m.uid}:{m.gid}", *paths), f"{what}: owner {m.uid}:{m.gid}"),
        Run(("chmod", "0750", *paths), f"{what}: mode 0750"),
    ]


def registry_facts(volume: str, sheet: str) -> list[Fact]:
    """The facts every registry plan reads: both files and the station trees that hold them."""
    facts = [file_fact("reg:sheets", sheets_path(volume)), file_fact("reg:machines", machines_path(volume, sheet)),
             tree_fact(f"tree:station:{smep.DEFAULT_SHEET}", station_dir(volume, smep.DEFAULT_SHEET))]
    if sheet != smep.DEFAULT_SHEET:
        facts.append(tree_fact(f"tree:station:{sheet}", station_dir(volume, sheet)))
    return facts


def read(facts: dict, volume: str, sheet: str) -> tuple[RegistryFile, RegistryFile]:
    return (parse("sheets", sheets_path(volume), facts["reg:sheets"]),
            parse("machines", machines_path(volume, sheet), facts["reg:machines"]))


# -- planning -----------------------------------------------------------------------------------

@dataclass
class RegistryPlan:
    steps: list[Step]
    sheet_number: int
    numbers: dict[str, int]  # machine → number, for every machine asked about
    sheets: RegistryFile
    machines: RegistryFile


def plan(facts: dict, volume: str, sheet: str, machines: list[str] = (), pins: dict | None = None,
         sheet_pin: int | None = None, unregister: list[str] = ()) -> RegistryPlan:
    """Steps that register `sheet` and `machines` (and drop `unregister`), creating the stations'
    trees on first use. Only Noops when everything is already there."""
    pins = pins or {}
    sheets, registry = read(facts, volume, sheet)
    steps: list[Step] = []

    # the sheet registry, in the default sheet's station; the default sheet is always in it
    taken = dict(sheets.entries)
    new_sheets = []
    if smep.DEFAULT_SHEET not in taken:
        pin = sheet_pin if sheet == smep.DEFAULT_SHEET else None
        taken[smep.DEFAULT_SHEET] = smep.allocate_sheet_number(smep.DEFAULT_SHEET, taken, pin)
        new_sheets.append(smep.DEFAULT_SHEET)
    sheet_number = smep.allocate_sheet_number(sheet, taken, sheet_pin)
    if sheet not in taken:
        taken[sheet] = sheet_number
        new_sheets.append(sheet)
    default_station = smep.MachineEnv(smep.DEFAULT_SHEET, taken[smep.DEFAULT_SHEET], "station", 0, "prod", volume)
    steps += tree_steps(default_station, facts[f"tree:station:{smep.DEFAULT_SHEET}"],
                        f"station of {smep.DEFAULT_SHEET}")
    if new_sheets:
        text = sheets.text
        for name in new_sheets:
            text = RegistryFile("sheets", sheets.path, text).add(name, taken[name])
        steps.append(Upload(sheets.path, text, f"sheet registry: add {', '.join(f'{n}={taken[n]}' for n in new_sheets)}",
                            mode=FILE_MODE, owner=FILE_OWNER, old=sheets.text, expect=sha256(sheets.text)))
    else:
        steps.append(Noop(f"sheet registry: {sheet}={sheet_number}"))

    # this sheet's station and its machine registry
    if sheet != smep.DEFAULT_SHEET:
        station = smep.MachineEnv(sheet, sheet_number, "station", 0, "prod", volume)
        steps += tree_steps(station, facts[f"tree:station:{sheet}"], f"station of {sheet}")
    numbers: dict[str, int] = {}
    taken_m = dict(registry.entries)
    added: list[str] = []
    for machine in machines:
        if machine in numbers:
            continue
        number = smep.allocate_machine_number(machine, taken_m, pins.get(machine))
        numbers[machine] = number
        if machine != "station" and machine not in taken_m:
            taken_m[machine] = number
            added.append(machine)
    text = registry.text
    for machine in added:
        text = RegistryFile("machines", registry.path, text).add(machine, taken_m[machine])
    gone = [m for m in unregister if m in registry.entries]
    for machine in gone:
        current = parse("machines", registry.path, text)
        text = current.remove(machine)
    if added or gone:
        parts = [f"add {m}={taken_m[m]:02d}" for m in added] + [f"remove {m}" for m in gone]
        steps.append(Upload(registry.path, text, f"machine registry of {sheet}: {', '.join(parts)}",
                            mode=FILE_MODE, owner=FILE_OWNER, old=registry.text, expect=sha256(registry.text)))
    elif machines or unregister:
        steps.append(Noop(f"machine registry of {sheet}: " + (", ".join(
            f"{m}={n:02d}" for m, n in numbers.items()) or "nothing to remove")))
    return RegistryPlan(steps, sheet_number, numbers, sheets, registry)


# -- read-only lookup ---------------------------------------------------------------------------

def resolve(facts: dict, volume: str, sheet: str, machine: str, number=None) -> tuple[int, int, list[str]]:
    """(sheet_number, machine_number, notes) from the registries as read, changing nothing."""
    sheets, registry = read(facts, volume, sheet)
    notes: list[str] = []
    pinned = smep.check_machine_number(number) if number is not None else None
    if sheet in sheets.entries:
        sheet_number = sheets.entries[sheet]
    else:
        taken = dict(sheets.entries)
        taken.setdefault(smep.DEFAULT_SHEET, smep.preferred_sheet_number(smep.DEFAULT_SHEET))
        sheet_number = smep.allocate_sheet_number(sheet, taken)
        notes.append(f"sheet {sheet!r} is not in the sheet registry yet: it would get {sheet_number} "
                     f"(registered by the first change, or `tin registry.sheet-add --sheet {sheet}`)")
    if machine in registry.entries or machine in smep.RESERVED_MACHINES:
        machine_number = smep.allocate_machine_number(machine, registry.entries, pinned)
        if machine not in registry.entries and machine != "station":
            notes.append(f"machine {machine!r} is reserved with number {machine_number:02d} (not yet recorded)")
    elif pinned is not None:
        machine_number = smep.allocate_machine_number(machine, registry.entries, pinned)
        notes.append(f"machine {machine!r} is not registered: number {machine_number:02d} from --number")
    else:
        raise InputError(
            f"machine {machine!r} is not in the registry of sheet {sheet!r} ({registry.path}): register it "
            f"with `tin registry.add --service {machine}` (or `machine.create`), or give --number NN"
        )
    return sheet_number, machine_number, notes


def lookup(engine, sheet: str, machine: str, number=None) -> tuple[int, int, list[str]]:
    """A machine's numbers read from the registries on the NAS: one round trip, nothing changed."""
    smep.check_name(sheet, "sheet")
    smep.check_name(machine, "machine")
    volume = engine.settings.inventory.nas.volume
    facts = engine.gather(engine.settings.inventory.nas, [
        file_fact("reg:sheets", sheets_path(volume)), file_fact("reg:machines", machines_path(volume, sheet))])
    return resolve(facts, volume, sheet, machine, number)


def registry_job(settings, machines=(), *, pins=None, sheet_pin=None, unregister=(), extra_facts=(),
                 check=None):
    """A NAS Job that registers the settings' sheet (and `machines`), or drops `unregister`.

    `check(facts)` may raise InputError to refuse the change (it sees `extra_facts` too)."""
    from ..engine import Job
    from ..steps import HostPlan

    for name in [*machines, *unregister]:
        smep.check_name(name, "machine")
    if "station" in unregister:
        raise InputError("the station (00) is implied in every sheet and cannot be removed")
    pins = {smep.check_name(k, "machine"): smep.check_machine_number(v) for k, v in (pins or {}).items()}
    if sheet_pin is not None:
        sheet_pin = smep.check_sheet_number(sheet_pin)
    nas = settings.inventory.nas
    volume, sheet = nas.volume, settings.sheet

    def plan_fn(facts):
        if check is not None:
            check(facts)
        rp = plan(facts, volume, sheet, list(machines), pins=pins, sheet_pin=sheet_pin, unregister=list(unregister))
        return HostPlan(nas.name, rp.steps, {"sheet_number": rp.sheet_number, "machine_numbers": rp.numbers})

    return Job(nas, [*registry_facts(volume, sheet), *extra_facts], plan_fn)
