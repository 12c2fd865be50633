"""What every task shares: the common flags, settings, the engine, and one error boundary.

`tin_task` wraps a task body so that tinsnip's own errors end it with a clear message and the right
exit code (0 done, 1 a remote step failed, 2 bad input or configuration), never a traceback unless
`--debug` is given. It adds `--sheet` and `--inventory` to every task, `--json` to every task that
reports, and `--dry-run`, `--yes` and `--stats` to every task that can change something.
"""

from __future__ import annotations

import functools
import inspect
import json as jsonlib
import sys
import traceback

from invoke import task
from invoke.exceptions import Exit

from .. import config, smep
from .. import secrets as secret_values
from ..errors import InputError, TinsnipError

COMMON_HELP = {
    "sheet": "sheet (tenant) to work in; default: TINSNIP_SHEET, then the inventory's sheet",
    "inventory": "inventory file; default: TINSNIP_INVENTORY, then ./hosts.yaml",
    "json": "print one JSON object instead of text",
    "debug": "show a traceback on errors",
}
CHANGE_HELP = {
    "dry_run": "gather facts for real, print the plan and file diffs, change nothing",
    "yes": "do not ask before destructive changes (without a terminal they need --yes)",
    "stats": "print connections and round trips per host",
    "verbose": "also list unchanged items and show every diff",
}


def tin_task(help: dict | None = None, changes: bool = False, reports: bool = True, name: str | None = None,
             pre=None):
    """Decorate a task body `fn(c, opts, ...)`; `opts` carries the common flags."""

    def decorate(fn):
        extra = dict(COMMON_HELP)
        if not reports:
            extra.pop("json")
        if changes:
            extra.update(CHANGE_HELP)
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        own = params[2:]  # after (c, opts)
        common = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=(None if k in ("sheet", "inventory") else False))
                  for k in extra]
        new_params = [params[0]] + [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in own] + \
            [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in common]

        collection = fn.__module__.rsplit(".", 1)[-1]
        short = name or fn.__name__.replace("_", "-")
        task_name = short if collection in ("doctor", "tasks") else f"{collection}.{short}"

        @functools.wraps(fn)
        def wrapper(c, *args, **kwargs):
            bound = inspect.Signature(new_params).bind(c, *args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            values.pop(params[0].name)
            opts = Opts(**{k: values.pop(k) for k in extra}, task=task_name)
            try:
                config.check_sheet_flag(opts.sheet)
                return fn(c, opts, **values)
            except TinsnipError as exc:
                if opts.debug:
                    traceback.print_exc()
                message = secret_values.mask(str(exc))
                if opts.json:
                    print(jsonlib.dumps({"ok": False, "error": message, "exit_code": exc.code}), flush=True)
                raise Exit(f"tinsnip: {message}", code=exc.code) from None
            except KeyboardInterrupt:
                raise Exit("tinsnip: interrupted", code=130) from None

        wrapper.__signature__ = inspect.Signature(new_params)
        del wrapper.__wrapped__
        helps = {**(help or {}), **extra}
        return task(help=helps, name=name, pre=pre or [], auto_shortflags=False)(wrapper)

    return decorate


class Opts:
    def __init__(self, sheet=None, inventory=None, json=False, debug=False, dry_run=False, yes=False,
                 stats=False, verbose=False, task="tinsnip"):
        self.sheet = sheet
        self.inventory = inventory
        self.json = bool(json)
        self.debug = bool(debug)
        self.dry_run = bool(dry_run)
        self.yes = bool(yes)
        self.stats = bool(stats)
        self.verbose = bool(verbose)
        self.task = task

    def settings(self) -> config.Settings:
        return config.load(self.inventory, self.sheet)

    def engine(self, settings: config.Settings | None = None):
        from ..engine import Engine, Options

        settings = settings or self.settings()
        return Engine(settings, Options(dry_run=self.dry_run, yes=self.yes, json=self.json, stats=self.stats,
                                        verbose=self.verbose, task=self.task))


def require(value, flag: str) -> str:
    if value is None or value == "":
        raise InputError(f"--{flag} is required")
    return value


def machine_env_flags(service, env, number=None, host=None) -> tuple[str, str, int | None]:
    """--service, --env, --number and --host, checked before anything is read or any connection opened
    (exit 2 naming the rule). Returns (machine, env, pinned number or None)."""
    machine = smep.check_name(require(service, "service"), "machine")
    env = smep.check_env(require(env, "env"))
    smep.user_name(machine, env)
    pinned = smep.check_machine_number(number) if number is not None else None
    reserved = smep.RESERVED_MACHINES.get(machine)
    if pinned is not None and reserved is not None and pinned != reserved:
        raise InputError(f"machine {machine!r} is reserved with number {reserved:02d}")
    if host is not None:
        smep.check_name(host, "Docker host")
    return machine, env, pinned


def confirm(opts: Opts, question: str) -> None:
    """Ask before a destructive change; never prompts without a terminal (then --yes is needed)."""
    if opts.yes or opts.dry_run:
        return
    if not sys.stdin.isatty():
        raise InputError(f"{question} — refusing without --yes (no terminal to ask on)")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise InputError("cancelled")


def finish(engine, extra: dict | None = None) -> None:
    """Print the recap or JSON and end with the exit code: 1 if any host failed or did not converge."""
    try:
        code = engine.report(extra)
    finally:
        engine.close()
    if code:
        raise Exit(code=code)


def emit(opts: Opts, data, text_lines: list[str] | None = None) -> None:
    if opts.json:
        print(secret_values.mask(jsonlib.dumps(data, indent=2, default=secret_values.json_default)))
    else:
        for line in text_lines or []:
            print(secret_values.mask(line))


def gather_nas(opts: Opts, facts_fn) -> tuple:
    """Read-only: the NAS's answers to `facts_fn(settings)`, in one round trip."""
    settings = opts.settings()
    engine = opts.engine(settings)
    try:
        facts = engine.gather(settings.inventory.nas, facts_fn(settings))
    finally:
        engine.close()
    return settings, facts
