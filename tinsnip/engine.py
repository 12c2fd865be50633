"""gather facts → plan → show → apply → verify, for each host of a phase, hosts in parallel.

Only `gather` and `apply` touch the network, each in one round trip per host. A plan is shown before
anything runs; `--dry-run` stops there. After an apply the facts are gathered again and planned
again: anything but a Noop is reported as not converged.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from . import script
from . import secrets as secret_values
from .config import Settings
from .errors import InputError, RemoteError, TinsnipError
from .inventory import Host
from .steps import HostPlan, Noop, Run, Step, Upload

MAX_PARALLEL_HOSTS = 8
CONFLICT_RETRIES = 12  # N concurrent writers of one file need up to N-1 retries (8 registry.add at once: 7)


@dataclass
class Options:
    dry_run: bool = False
    yes: bool = False
    json: bool = False
    stats: bool = False
    verbose: bool = False
    task: str = "tinsnip"


@dataclass
class Job:
    """One host's part of a phase: the facts it needs and the planner that reads them."""

    host: Host
    facts: list[script.Fact]
    plan: Callable[[dict[str, Any]], HostPlan]


@dataclass
class StepResult:
    step: Step
    status: str  # planned | changed | unchanged | failed | skipped
    output: str = ""

    def describe(self) -> dict:
        d = self.step.describe()
        d["status"] = self.status
        if self.output:
            d["output"] = self.output
        return d


@dataclass
class Outcome:
    host: str
    plan: HostPlan | None = None
    results: list[StepResult] = field(default_factory=list)
    error: str | None = None
    not_converged: list[str] = field(default_factory=list)
    refused: InputError | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.refused is not None or bool(self.not_converged) or self.count("failed") > 0


class Output:
    """Lines a person reads: prefixed with the host, secrets masked, safe across threads."""

    def __init__(self, secrets: list[str], quiet: bool = False, stream=None):
        self.secrets = [s for s in secrets if s]
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return secret_values.mask(text)

    def line(self, text: str = "", host: str | None = None, err: bool = False) -> None:
        if self.quiet and not err:
            return
        stream = sys.stderr if err else self.stream
        prefix = f"{host}: " if host else ""
        with self.lock:
            for part in self.mask(text).splitlines() or [""]:
                print(f"{prefix}{part}", file=stream, flush=True)


class Engine:
    def __init__(self, settings: Settings, options: Options):
        self.settings = settings
        self.options = options
        self.out = Output(settings.secrets(), quiet=options.json)
        self.remotes: dict[str, Any] = {}
        self.outcomes: list[Outcome] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------

    def remote(self, host: Host):
        with self._lock:
            if host.name not in self.remotes:
                from .remote import Remote

                password = None if host.is_root else self.settings.sudo_password(host)
                if password is None and not host.is_root and sys.stdin.isatty() and not self.options.json:
                    password = getpass.getpass(f"sudo password for {host.user}@{host.name}: ")
                    self.settings.values[f"TINSNIP_SUDO_PASSWORD_{host.name.upper().replace('-', '_')}"] = password
                    self.out.secrets.append(password)
                self.remotes[host.name] = Remote(host, self.settings.inventory, password)
            return self.remotes[host.name]

    def close(self) -> None:
        for r in self.remotes.values():
            r.close()

    def counters(self) -> dict[str, dict[str, int]]:
        return {name: {"connections": r.counters.connections, "round_trips": r.counters.round_trips}
                for name, r in self.remotes.items()}

    # -- facts -------------------------------------------------------------------------------

    def gather(self, host: Host, facts: list[script.Fact]) -> dict[str, Any]:
        """Run every fact for a host in one round trip and parse each answer."""
        if not facts:
            return {}
        facts = [*facts, script.generation_fact()]
        nonce = script.new_nonce()
        result = self.remote(host).run_script(script.facts_script(facts, nonce))
        if result.rc != 0:
            raise RemoteError(f"{host.name}: gathering facts failed (exit {result.rc}): {result.stderr.strip()[-500:]}")
        answers = script.parse_answers(result.stdout, nonce, "fact")
        values: dict[str, Any] = {}
        for i, fact in enumerate(facts):
            if i not in answers:
                raise RemoteError(f"{host.name}: no answer for fact {fact.name!r}: {result.stderr.strip()[-500:]}")
            values[fact.name] = fact(answers[i].rc, answers[i].out)
        return values

    # -- apply -------------------------------------------------------------------------------

    def _apply(self, host: Host, plan: HostPlan, generation: str | None) -> tuple[int, list[StepResult], str]:
        nonce = script.new_nonce()
        who = f"{os.environ.get('USER', 'root')}@{os.uname().nodename} ({self.options.task})"
        text = script.apply_script(plan.steps, nonce, who, generation)
        marker = f"@@{nonce} begin ".encode()

        def progress(line: bytes) -> None:
            if line.startswith(marker):
                index = int(line.split()[2])
                self.out.line(f"  ... {plan.steps[index].desc}", host.name)

        current: list[str] = []

        def track(line: bytes) -> None:
            if line.startswith(marker):
                current[:] = [plan.steps[int(line.split()[2])].desc]
            progress(line)

        try:
            result = self.remote(host).run_script(text, on_line=track)
        except RemoteError as exc:
            during = f" during step: {current[0]}" if current else " before the first step"
            raise RemoteError(f"{exc}{during}; files are written atomically, so re-run the task to finish") from None
        answers = script.parse_answers(result.stdout, nonce, "step")
        results = []
        stopped = False
        for i, step in enumerate(plan.steps):
            if isinstance(step, Noop):
                results.append(StepResult(step, "unchanged"))
            elif i in answers:
                a = answers[i]
                status = "changed" if a.rc == 0 else "failed"
                if status == "changed" and isinstance(step, Run) and step.unless and a.out.strip() == "already done":
                    status = "unchanged"
                results.append(StepResult(step, status, self.out.mask((a.out + a.err).strip())))
                stopped = stopped or a.rc != 0
            else:
                results.append(StepResult(step, "skipped" if stopped or result.rc else "failed"))
        return result.rc, results, result.stderr

    def converge_host(self, job: Job) -> Outcome:
        outcome = Outcome(job.host.name)
        name = job.host.name
        try:
            for attempt in range(CONFLICT_RETRIES + 1):
                facts = self.gather(job.host, job.facts)
                plan = job.plan(facts)
                outcome.plan = plan
                self.show(plan)
                if self.options.dry_run or plan.converged:
                    outcome.results = [StepResult(s, "unchanged" if isinstance(s, Noop) else "planned") for s in plan.steps]
                    return outcome
                rc, results, stderr = self._apply(job.host, plan, facts.get(script.GENERATION_FACT))
                outcome.results = results
                if rc == script.EXIT_CONFLICT and attempt < CONFLICT_RETRIES:
                    self.out.line("  the host changed while planning (another run?); reading it again", name)
                    time.sleep(0.05 * (attempt + 1) + random.uniform(0, 0.1))  # jitter: racing runs spread out
                    continue
                break
            if rc == script.EXIT_LOCKED:
                outcome.error = stderr.strip() or "host lock timed out"
            failed = [r for r in outcome.results if r.status == "failed"]
            if failed:
                first = failed[0]
                outcome.error = f"step failed: {first.step.desc}" + (f"\n{first.output}" if first.output else "")
            elif rc != 0 and outcome.error is None:
                outcome.error = f"remote script failed (exit {rc}): {stderr.strip()[-800:]}"
            if outcome.error:
                return outcome
            # verify: the host must now plan to nothing
            again = job.plan(self.gather(job.host, job.facts))
            outcome.not_converged = [s.desc for s in again.changes]
            outcome.plan.data.update(again.data)
        except InputError as exc:
            outcome.refused = exc  # bad input found while planning (a taken --number): exit 2, said once
        except TinsnipError as exc:
            outcome.error = str(exc)
        return outcome

    def run_phase(self, jobs: list[Job]) -> list[Outcome]:
        """Converge the hosts of one phase in parallel; each host stops at its first failed step.

        Bad input found while planning (a taken --number, a malformed registry) is raised once all
        hosts of the phase are done, so the task ends with exit 2 and the planner's own message."""
        if not jobs:
            return []
        if len(jobs) == 1:
            outcomes = [self.converge_host(jobs[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(jobs))) as pool:
                outcomes = list(pool.map(self.converge_host, jobs))
        refused = [o.refused for o in outcomes if o.refused is not None]
        if refused:
            raise refused[0]
        for o in outcomes:
            if o.error:
                self.out.line(f"FAILED: {o.error}", o.host, err=True)
            for desc in o.not_converged:
                self.out.line(f"NOT CONVERGED: {desc}", o.host, err=True)
        self.outcomes.extend(outcomes)
        return outcomes

    # -- show and report ---------------------------------------------------------------------

    def show(self, plan: HostPlan) -> None:
        changes = plan.changes
        verb = "would change" if self.options.dry_run else "to change"
        self.out.line(f"{len(changes)} {verb}, {len(plan.steps) - len(changes)} unchanged", plan.host)
        for step in plan.steps:
            if isinstance(step, Noop):
                if self.options.verbose:
                    self.out.line(f"  = {step.desc}", plan.host)
            elif isinstance(step, Upload):
                self.out.line(f"  ~ {step.desc}", plan.host)
                if self.options.dry_run or self.options.verbose:
                    for line in step.diff().splitlines():
                        self.out.line(f"      {line}", plan.host)
            else:
                self.out.line(f"  + {step.desc}", plan.host)
                if self.options.dry_run or self.options.verbose:
                    self.out.line(f"      $ {script.user_command(step)}", plan.host)

    def summary(self) -> dict:
        hosts: dict[str, dict] = {}
        counters = self.counters()
        for o in self.outcomes:
            h = hosts.setdefault(o.host, {"changed": 0, "unchanged": 0, "failed": 0, "steps": []})
            h["changed"] += o.count("changed") + (o.count("planned") if self.options.dry_run else 0)
            h["unchanged"] += o.count("unchanged")
            h["failed"] += o.count("failed") + (1 if (o.error and not o.count("failed")) else 0) + len(o.not_converged)
            h["steps"] += [r.describe() for r in o.results]
            if o.error:
                h["error"] = o.error
            if o.not_converged:
                h["not_converged"] = o.not_converged
        for name, h in hosts.items():
            h.update(counters.get(name, {"connections": 0, "round_trips": 0}))
        totals = {k: sum(h[k] for h in hosts.values()) for k in ("changed", "unchanged", "failed")}
        return {
            "task": self.options.task,
            "dry_run": self.options.dry_run,
            "ok": totals["failed"] == 0,
            "hosts": hosts,
            "totals": totals,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def record_changes(self) -> None:
        """Append what was applied to the change log on the station (one more NAS round trip, only
        when something changed). A log that cannot be written is a warning, not a failure."""
        from . import changelog

        changed: dict[str, list[str]] = {}
        for o in self.outcomes:  # a host may take part in several phases (the NAS: a login, then machine.create)
            changed.setdefault(o.host, []).extend(r.step.desc for r in o.results if r.status == "changed")
        if self.options.dry_run or not any(changed.values()):
            return
        inv = self.settings.inventory
        who = f"{os.environ.get('USER', 'root')}@{os.uname().nodename}"
        lines = changelog.entries(self.options.task, who, changed)
        try:
            result = self.remote(inv.nas).run_script(changelog.append_script(
                changelog.path(inv.nas.volume, self.settings.sheet), lines, who))
            if result.rc != 0:
                self.out.line(f"warning: the change log on the station was not written: {result.stderr.strip()}", err=True)
        except TinsnipError as exc:
            self.out.line(f"warning: the change log on the station was not written: {exc}", err=True)

    def report(self, extra: dict | None = None) -> int:
        """Print the recap (or the JSON object); return the exit code: 0 done, 1 a step failed."""
        self.record_changes()
        summary = self.summary()
        if extra:
            summary.update(extra)
        if self.options.json:
            print(self.out.mask(json.dumps(summary, indent=2, default=secret_values.json_default)))
        else:
            self.out.line("")
            label = "dry run" if self.options.dry_run else "recap"
            for name, h in summary["hosts"].items():
                key = "would change" if self.options.dry_run else "changed"
                self.out.line(f"{label}: {name}: {key}={h['changed']} unchanged={h['unchanged']} failed={h['failed']}")
            if self.options.stats:
                for name, c in self.counters().items():
                    self.out.line(f"stats: {name}: connections={c['connections']} round_trips={c['round_trips']}")
                self.out.line(f"stats: {summary['seconds']}s")
            if self.options.dry_run and summary["ok"]:
                self.out.line("dry run: nothing was changed")
        return 0 if summary["ok"] else 1


def json_dump(data: Any, secrets: list[str] | None = None) -> str:
    text = json.dumps(data, indent=2, default=secret_values.json_default)
    for secret in secrets or []:
        text = text.replace(secret, "[REDACTED]")
    return secret_values.mask(text)
