"""Turn facts and steps into one POSIX shell script per round trip, and read its answer. Pure.

A host answers a whole batch in one round trip: the script runs each fact command (or step) with its
output captured, and prints a marker line with a per-run nonce, the exit status and the output's
length, followed by exactly that many bytes. Nothing a command prints can forge a marker, and every
step keeps its own exit status.
"""

from __future__ import annotations

import base64
import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .steps import Noop, Run, Step, Upload

LOCK_PATH = "/var/lock/tinsnip.lock"
# Bumped under the lock when an apply starts and when it ends. An apply made from facts of another
# generation is refused as a conflict (re-read, re-plan), so two runs planning the same change never
# both run it, whether the other run's facts were read before, during or after this one's apply.
GENERATION_PATH = "/var/lib/tinsnip/generation"
GENERATION_FACT = "__generation__"
LOCK_TIMEOUT = 60
EXIT_CONFLICT = 75  # a file changed between the facts and the write: re-read and re-plan
EXIT_LOCKED = 73  # another tinsnip holds the host lock past the timeout
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Fact:
    """A read-only probe: a shell command and a pure parser of (exit status, stdout)."""

    name: str
    command: str
    parse: Callable[[int, str], Any] = lambda rc, out: out

    def __call__(self, rc: int, out: str) -> Any:
        return self.parse(rc, out)


@dataclass
class Answer:
    rc: int
    out: str
    err: str = ""


def new_nonce() -> str:
    return secrets.token_hex(8)


PRELUDE = r"""
umask 022
cd / || exit 125
PATH=__PATH__; export PATH
T=$(mktemp -d) || exit 125
trap 'rm -rf "$T"' EXIT
tinsnip_emit() { # tag index rc: print the marker and the captured output
  printf '@@__NONCE__ %s %s %s %s %s\n' "$1" "$2" "$3" "$(wc -c <"$T/o" | tr -d ' ')" "$(wc -c <"$T/e" | tr -d ' ')"
  cat "$T/o" "$T/e"
}
"""

LOCK_SHELL = r"""
mkdir -p /var/lock 2>/dev/null || mkdir -p "$(readlink -f /var/lock)" 2>/dev/null  # /var/lock may point to a missing /run/lock
exec 9>>__LOCK__
if ! flock -w __TIMEOUT__ 9; then
  printf 'the tinsnip lock on this host (__LOCK__) is held by: %s\n' "$(cat __LOCK__.holder 2>/dev/null || echo unknown)" >&2
  exit __LOCKED__
fi
printf '%s pid %s since %s\n' "$TINSNIP_WHO" "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >__LOCK__.holder
"""


def lock_shell(who: str) -> str:
    """Take the host lock (released by the kernel when the script ends or dies) and say who holds it."""
    return (f"TINSNIP_WHO={shlex.quote(who)}\n" + LOCK_SHELL.replace("__LOCK__", LOCK_PATH)
            .replace("__TIMEOUT__", str(LOCK_TIMEOUT)).replace("__LOCKED__", str(EXIT_LOCKED)))


APPLY_PRELUDE = r"""
tinsnip_put() { # dest mode owner as_user expect backup [then-argv...]; content (base64) on stdin
  dest=$1 mode=$2 owner=$3 as=$4 expect=$5 backup=$6; shift 6
  if [ -n "$expect" ]; then
    if [ -e "$dest" ]; then cur=$(sha256sum <"$dest" | cut -d' ' -f1); else cur=absent; fi
    if [ "$cur" != "$expect" ]; then echo "$dest changed since it was read" >&2; return __CONFLICT__; fi
  fi
  if [ -n "$as" ]; then
    tmp=$(runuser -u "$as" -- mktemp "$dest.tinsnip.XXXXXX") || return 1
    base64 -d | runuser -u "$as" -- sh -c 'cat >"$1"' sh "$tmp" || { rm -f "$tmp"; return 1; }
  else
    tmp=$(mktemp "$dest.tinsnip.XXXXXX") || return 1
    base64 -d >"$tmp" || { rm -f "$tmp"; return 1; }
    if [ -n "$owner" ]; then chown "$owner" "$tmp" || { rm -f "$tmp"; return 1; }; fi
  fi
  chmod "$mode" "$tmp" || { rm -f "$tmp"; return 1; }
  had_backup=0
  if [ "$backup" = 1 ] && [ -e "$dest" ]; then cp -p "$dest" "$dest.tinsnip-bak" && had_backup=1 || { rm -f "$tmp"; return 1; }; fi
  mv -f "$tmp" "$dest" || { rm -f "$tmp"; return 1; }
  [ $# -gt 0 ] || return 0
  out=$("$@" 2>&1 </dev/null); rc=$?
  if [ $rc -eq 0 ]; then printf '%s\n' "$out"; return 0; fi
  if [ "$had_backup" = 1 ]; then
    cp -p "$dest.tinsnip-bak" "$dest.tinsnip-restore" && mv -f "$dest.tinsnip-restore" "$dest"
    "$@" >/dev/null 2>&1 </dev/null
    printf '%s\n%s failed; the previous %s was restored\n' "$out" "$*" "$dest" >&2
  else
    printf '%s\n%s failed\n' "$out" "$*" >&2
  fi
  return $rc
}
"""


def _prelude(nonce: str) -> str:
    return PRELUDE.replace("__NONCE__", nonce).replace("__PATH__", CLEAN_PATH)


def facts_script(facts: list[Fact], nonce: str) -> str:
    parts = [_prelude(nonce)]
    for i, fact in enumerate(facts):
        parts.append(f"( {fact.command}\n) >\"$T/o\" 2>\"$T/e\" </dev/null; tinsnip_emit fact {i} $?")
    parts.append("exit 0")
    return "\n".join(parts) + "\n"


def user_command(run: Run) -> str:
    """A Run's shell text: as root, or as its user with a clean, explicit environment."""
    if not run.as_user:
        return run.command()
    env = [f"{k}={v}" for k, v in run.env]
    prefix = ["runuser", "-u", run.as_user, "--", "env", "-i", f"PATH={CLEAN_PATH}", *env]
    return shlex.join([*prefix, *run.argv])


def step_body(step: Step, nonce: str) -> str:
    if isinstance(step, Run):
        cmd = user_command(step)
        if step.unless:
            return f"if ( {step.unless} ) >/dev/null 2>&1; then echo 'already done'; else {cmd}; fi"
        return cmd
    if isinstance(step, Upload):
        payload = base64.encodebytes(step.content.encode()).decode()
        args = [step.path, f"{step.mode:04o}", step.owner or "", step.as_user or "", step.expect or "",
                "1" if step.backup else "0", *step.then]
        return f"tinsnip_put {shlex.join(args)} <<'EOF_{nonce}'\n{payload}EOF_{nonce}"
    raise TypeError(f"not an executable step: {step!r}")


def generation_fact() -> Fact:
    return Fact(GENERATION_FACT, f"cat {GENERATION_PATH} 2>/dev/null || echo 0", lambda rc, out: out.strip() if out.strip().isdigit() else "0")


GENERATION_CHECK = r"""
tinsnip_gen=$(cat __GEN__ 2>/dev/null || echo 0)
if [ -n "__EXPECTED__" ] && [ "$tinsnip_gen" != "__EXPECTED__" ]; then
  echo "another tinsnip run changed this host since its facts were read" >&2; exit __CONFLICT__
fi
tinsnip_bump() { g=$(cat __GEN__ 2>/dev/null || echo 0); echo $((g + 1)) >__GEN__.new && mv -f __GEN__.new __GEN__; }
mkdir -p "$(dirname __GEN__)" && tinsnip_bump
# bumped again when the apply ends (however it ends): facts read mid-apply are stale either way
trap 'tinsnip_bump; rm -rf "$T"' EXIT
"""


def apply_script(steps: list[Step], nonce: str, who: str = "tinsnip", generation: str | None = None) -> str:
    """Run the non-Noop steps in order, under the host lock; stop at the first failure.

    With `generation` (what the facts saw), a host changed by another run meanwhile is a conflict."""
    check = (GENERATION_CHECK.replace("__GEN__", GENERATION_PATH).replace("__EXPECTED__", generation or "")
             .replace("__CONFLICT__", str(EXIT_CONFLICT)))
    prelude = APPLY_PRELUDE.replace("__CONFLICT__", str(EXIT_CONFLICT))
    parts = [_prelude(nonce), lock_shell(who), prelude, check]
    for i, step in enumerate(steps):
        if isinstance(step, Noop):
            continue
        parts.append(f"printf '@@{nonce} begin {i} 0 0 0\\n'")
        parts.append(f"{{ {step_body(step, nonce)}\n}} >\"$T/o\" 2>\"$T/e\" </dev/null\nrc=$?")
        parts.append(f"tinsnip_emit step {i} $rc; [ $rc -eq 0 ] || exit $rc")
    parts.append("exit 0")
    return "\n".join(parts) + "\n"


MARKER = re.compile(rb"@@([0-9a-f]+) (\w+) (\d+) (\d+) (\d+) (\d+)\n")


def parse_answers(raw: bytes, nonce: str, tag: str) -> dict[int, Answer]:
    """Split a script's stdout into {index: Answer} for markers of `tag` ('fact' or 'step')."""
    answers: dict[int, Answer] = {}
    pos = 0
    key = nonce.encode()
    while pos < len(raw):
        m = MARKER.match(raw, pos)
        if not m or m.group(1) != key:
            nl = raw.find(b"\n", pos)
            pos = len(raw) if nl < 0 else nl + 1
            continue
        kind, index, rc, olen, elen = m.group(2).decode(), int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(6))
        start = m.end()
        out = raw[start:start + olen].decode(errors="replace")
        err = raw[start + olen:start + olen + elen].decode(errors="replace")
        pos = start + olen + elen
        if kind == tag:
            answers[index] = Answer(rc, out, err)
    return answers
