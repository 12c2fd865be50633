"""Plan specs: one JSON file per case (inventory, planner arguments, the raw answers of the facts as a
real host gave them, and the exact steps expected), all run by this one test, with no SSH.

A spec whose facts do not match the names of the job's real facts fails: a fake fact cannot drift
away from the probe it stands for. tests/unit/specs/record.py records a spec from a live lab.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

SPECS = Path(__file__).resolve().parent / "specs"
sys.path.insert(0, str(SPECS))

from record import build_job, describe  # noqa: E402

from tinsnip import config  # noqa: E402


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.json")), ids=lambda p: p.stem)
def test_plan_spec(path, tmp_path, monkeypatch):
    spec = json.loads(path.read_text())
    (tmp_path / "hosts.yaml").write_text(spec["inventory"])
    monkeypatch.delenv("TINSNIP_SHEET", raising=False)
    settings = config.load(str(tmp_path / "hosts.yaml"))
    job = build_job(spec, settings)
    real = [f.name for f in job.facts]
    assert sorted(spec["facts"]) == sorted(real), "the spec's facts must be the job's real facts"
    facts = {f.name: f(spec["facts"][f.name]["rc"], spec["facts"][f.name]["out"]) for f in job.facts}
    plan = job.plan(facts)
    assert [describe(s) for s in plan.steps] == spec["expect"]


def test_there_are_specs_for_a_fresh_and_a_converged_host():
    names = {p.stem for p in SPECS.glob("*.json")}
    assert {"nas_fresh", "nas_converged", "docker_fresh", "docker_converged"} <= names
