"""The task tree served by both `inv` (through tasks.py) and `tin`.

Collections are imported lazily by invoke's loader only as modules; none of them imports Fabric at
module level, so `inv --list` stays fast.
"""

from __future__ import annotations

import importlib

from invoke import Collection

NAMESPACES = ("nas", "registry", "machine", "service", "lab")


def build() -> Collection:
    ns = Collection()
    for name in NAMESPACES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        ns.add_collection(Collection.from_module(module), name)
    try:
        doctor_module = importlib.import_module(f"{__name__}.doctor")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.doctor":
            raise
    else:
        ns.add_task(doctor_module.doctor)
    return ns


namespace = build()
