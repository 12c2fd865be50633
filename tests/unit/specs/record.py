"""Record a plan spec from a live lab: the raw answers of a job's facts, and the steps planned from them.

    python tests/unit/specs/record.py nas_job gazette prod docker1 > tests/unit/specs/nas_fresh.json

Re-record after a planner change that is meant to change plans, and read the diff: that diff is the
review of the change. The runner (tests/unit/test_plan_specs.py) needs no SSH.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tinsnip import config, script  # noqa: E402
from tinsnip.engine import Engine, Options  # noqa: E402
from tinsnip.smep import MachineEnv  # noqa: E402


def build_job(spec: dict, settings):
    from tinsnip.plans import machine, nas

    args = spec["args"]
    if spec["planner"] == "nas_job":
        return nas.nas_job(settings, [(args["machine"], args["env"], args["clients"])])
    if spec["planner"] == "docker_job":
        inv = settings.inventory
        mes = [MachineEnv(**m) for m in args["machine_envs"]]
        return machine.docker_job(settings, inv.docker_hosts[args["host"]], mes, inv.nas.address)
    raise SystemExit(f"unknown planner {spec['planner']!r}")


def describe(step) -> dict:
    d = step.describe()
    d.pop("diff", None)
    return d


def record(planner: str, machine: str, env: str, host: str, inventory: str = ".lab/hosts.yaml") -> dict:
    settings = config.load(inventory)
    inv = settings.inventory
    spec = {"planner": planner, "inventory": Path(inventory).read_text()}
    if planner == "nas_job":
        spec["args"] = {"machine": machine, "env": env, "clients": [inv.docker_hosts[host].nfs_client]}
    else:
        engine = Engine(settings, Options())
        from tinsnip.plans import registry

        sheet_number, machine_number, _ = registry.lookup(engine, settings.sheet, machine)
        m = MachineEnv(settings.sheet, sheet_number, machine, machine_number, env, inv.nas.volume)
        spec["args"] = {"host": host, "machine_envs": [{"sheet": m.sheet, "sheet_number": m.sheet_number,
                        "machine": m.machine, "machine_number": m.machine_number, "env": m.env, "volume": m.volume}]}
    job = build_job(spec, settings)
    engine = Engine(settings, Options())
    nonce = script.new_nonce()
    result = engine.remote(job.host).run_script(script.facts_script(job.facts, nonce))
    answers = script.parse_answers(result.stdout, nonce, "fact")
    spec["facts"] = {f.name: {"rc": answers[i].rc, "out": answers[i].out} for i, f in enumerate(job.facts)}
    plan = job.plan({f.name: f(answers[i].rc, answers[i].out) for i, f in enumerate(job.facts)})
    spec["expect"] = [describe(s) for s in plan.steps]
    engine.close()
    return spec


if __name__ == "__main__":
    print(json.dumps(record(*sys.argv[1:]), indent=1, ensure_ascii=False))
