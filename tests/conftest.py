"""Shared by every test: the repo on sys.path, and the count of what ran.

`make test` and CI set TINSNIP_TESTS_STRICT=1 (CI is root with every package installed): then a
skipped test fails the session, and so does a `-m lab` session that ran no lab test. Without it the
counts are printed and skips are allowed (a developer who is not root gets the unit tests only).
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STRICT_VAR = "TINSNIP_TESTS_STRICT"
_counts = {"lab_ran": 0, "ran": 0, "skipped": []}


def _strict() -> bool:
    return os.environ.get(STRICT_VAR) == "1"


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _counts["skipped"].append(f"{report.nodeid}: {reason}")
    elif report.when == "call":
        _counts["ran"] += 1
        if "lab" in report.keywords:
            _counts["lab_ran"] += 1


def _lab_session(config) -> bool:
    return "lab" in (config.getoption("markexpr") or "") and "not lab" not in config.getoption("markexpr")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = _counts["skipped"]
    if _lab_session(config):
        terminalreporter.write_line(f"lab tests: {_counts['lab_ran']} ran, {len(skipped)} skipped", bold=True)
    else:
        terminalreporter.write_line(f"tests: {_counts['ran']} ran, {len(skipped)} skipped", bold=True)
    if _strict() and skipped:
        terminalreporter.write_line(f"{STRICT_VAR}=1: a skipped test fails this run:", red=True)
        for s in skipped[:20]:
            terminalreporter.write_line(f"  {s}", red=True)
    if _strict() and _lab_session(config) and _counts["lab_ran"] == 0:
        terminalreporter.write_line(f"{STRICT_VAR}=1: no lab test ran, which fails this run", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if not _strict() or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    if _counts["skipped"] or (_lab_session(session.config) and _counts["lab_ran"] == 0):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
