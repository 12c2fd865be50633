"""doctor: a preflight of the inventory's hosts, before anything changes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .. import smep
from ..errors import TinsnipError
from .common import emit, tin_task


@tin_task(help={"host": "check only this host (nas, or a Docker host's name)"})
def doctor(c, opts, host=None):
    """Preflight every host: SSH with a verified key, sudo, NFS, systemd, uidmap, rootless Docker, Compose v2."""
    from ..plans import doctor as checks

    if host is not None:
        smep.check_name(host, "host")
    settings = opts.settings()
    inv = settings.inventory
    hosts = [inv.host(host)] if host else inv.all_hosts()
    engine = opts.engine(settings)

    def one(h):
        items = checks.checks_for(h)
        rows = [{"check": "ssh", "ok": True, "detail": f"{h.user}@{h.address}:{h.port}, host key verified"}]
        try:
            facts = engine.gather(h, [c.fact() for c in items])
        except TinsnipError as exc:
            rows[0].update(ok=False, detail=str(exc),
                           fix="check the address, the SSH key and known_hosts in the inventory (ssh:)")
            return h.name, rows
        return h.name, rows + checks.report(h, items, facts)

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            results = dict(pool.map(one, hosts))
        counters = engine.counters()
    finally:
        engine.close()
    ok = all(r["ok"] for rows in results.values() for r in rows)
    lines = []
    for name, rows in results.items():
        bad = [r for r in rows if not r["ok"]]
        lines.append(f"{name}: {'ok' if not bad else f'{len(bad)} problem(s)'}")
        for r in rows:
            lines.append(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['check']:<19} {r['detail']}")
            if not r["ok"]:
                lines.append(f"       fix: {r['fix']}")
    data = {"ok": ok, "hosts": {name: {"ok": all(r["ok"] for r in rows), "checks": rows,
                                       **counters.get(name, {"connections": 0, "round_trips": 0})}
                                for name, rows in results.items()}}
    emit(opts, data, lines)
    if not ok:
        from invoke.exceptions import Exit

        raise Exit(code=1)
