"""Steps: the contract between planners (pure) and the engine (which runs them on a host).

A planner turns desired state plus facts into a list of steps. `Noop` says why nothing needs
doing; a plan of only `Noop`s is a converged host. Plans are data: tests assert on them, `--dry-run`
prints them, `--json` serialises them.
"""

from __future__ import annotations

import difflib
import hashlib
import shlex
from dataclasses import dataclass, field


def sha256(text: str | None) -> str:
    """The fingerprint an Upload's `expect` compares with; 'absent' for a missing file."""
    if text is None:
        return "absent"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Run:
    """Run a command (argv, quoted by the engine) as root, or as `as_user` with a clean environment."""

    argv: tuple[str, ...]
    desc: str
    as_user: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    unless: str | None = None  # read-only shell test, checked under the host lock: true → already done

    def command(self) -> str:
        return shlex.join(self.argv)

    def describe(self) -> dict:
        d = {"kind": "run", "desc": self.desc, "argv": list(self.argv)}
        if self.as_user:
            d["as_user"] = self.as_user
        return d


@dataclass(frozen=True)
class Upload:
    """Write a file atomically: private temp file beside it, mode and owner set, then rename.

    `expect` is the sha256 (or 'absent') of the content the plan was made from; the engine checks it
    under the host lock, so a file changed meanwhile (another tinsnip, DSM's web UI) is re-read and
    re-planned instead of overwritten. With `then`, that command runs after the write; if it fails,
    the previous file is restored, the command runs again, and the step fails with its message.
    """

    path: str
    content: str = field(repr=False)
    desc: str
    mode: int = 0o644
    owner: str | None = None
    as_user: str | None = None
    old: str | None = field(default=None, repr=False)
    expect: str | None = None
    backup: bool = False
    then: tuple[str, ...] = ()
    secret: bool = False

    def diff(self) -> str:
        if self.secret:
            return f"--- {self.path}\n+++ {self.path} (planned)\n[content not shown: it holds secrets]\n"
        old = (self.old or "").splitlines(keepends=True)
        new = self.content.splitlines(keepends=True)
        label = self.path if self.old is not None else "/dev/null"
        lines = difflib.unified_diff(old, new, label, f"{self.path} (planned)")
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)

    def describe(self) -> dict:
        d = {"kind": "upload", "desc": self.desc, "path": self.path, "mode": f"{self.mode:04o}"}
        if self.owner:
            d["owner"] = self.owner
        if self.as_user:
            d["as_user"] = self.as_user
        d["diff"] = self.diff()
        return d


@dataclass(frozen=True)
class Noop:
    """Nothing to do, and why."""

    desc: str

    def describe(self) -> dict:
        return {"kind": "noop", "desc": self.desc}


Step = Run | Upload | Noop


@dataclass
class HostPlan:
    """The steps for one host, and what the planner worked out on the way (numbers, ports)."""

    host: str
    steps: list[Step] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if not isinstance(s, Noop)]

    @property
    def converged(self) -> bool:
        return not self.changes
