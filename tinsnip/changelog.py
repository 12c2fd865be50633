"""The change log on the station: every applied change, appended as one JSON line (pure helpers).

It lives on the NAS beside the registries, `{volume}/{sheet}/station/prod/data/changes.log`, so a fix
made during debugging from one laptop is visible from every other.
"""

from __future__ import annotations

import json
import shlex
import time

from .plans.registry import station_dir
from .script import lock_shell


def path(volume: str, sheet: str) -> str:
    return f"{station_dir(volume, sheet)}/data/changes.log"


def entries(task: str, who: str, changed: dict[str, list[str]], when: float | None = None) -> list[str]:
    """One JSON line per host that changed: when, who, which task, what changed."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))
    return [json.dumps({"time": stamp, "who": who, "task": task, "host": host, "changes": steps}, sort_keys=True)
            for host, steps in sorted(changed.items()) if steps]


def append_script(log_path: str, lines: list[str], who: str = "tinsnip") -> str:
    """Shell that appends the lines under the host lock; the directory is made if the station is new."""
    directory = log_path.rsplit("/", 1)[0]
    body = "".join(line + "\n" for line in lines)
    return (lock_shell(who) + f"mkdir -p {shlex.quote(directory)} && "
            f"printf %s {shlex.quote(body)} >> {shlex.quote(log_path)}\n")


def parse(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn or hand-written line is skipped, never fatal
    return out
