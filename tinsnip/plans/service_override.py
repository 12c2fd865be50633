"""What a deploy's generated docker-compose.override.yml supplies, from compose.py's model. Pure code.

For each compose service of a catalog service S deployed onto machine-env M, the override supplies:
  - env files: `env_file: !override` with ../../.machine/machine.env, .env, then the service's own env
    files as the compose file lists them (tinsnip's two once, whatever the file wrote);
  - ports: `ports: !override` with every published port (short or long syntax, ranges one port each,
    udp kept) on the machine-env's port TIN_PORT_n that compose.port_slots gives it; a port written as
    `${TIN_PORT_n}` keeps n;
  - runtime binds: a relative bind whose source the catalog service does not ship is bound to
    /mnt/M/data/S/{source} on the NAS (compose merges a service's volumes by container path, so the
    override's entry replaces the file's);
  - named volumes (not external): bound to /mnt/M/data/S/{volume}.
Interpolation (compose's own, at `docker compose config` and `up`) reads, in this order, the service's
own env files, machine.env and .env (later ones win), all passed as `--env-file`, so no value is in argv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import compose as cmodel
from ..catalog import ENV_NAME, MACHINE_ENV_REF

TINSNIP_ENV_FILES = (MACHINE_ENV_REF, ENV_NAME)


@dataclass(frozen=True)
class PortMap:
    service: str
    index: int  # n of TIN_PORT_n
    target: str
    protocol: str = "tcp"
    host_ip: str | None = None
    line: int = 0


@dataclass(frozen=True)
class RuntimeBind:
    service: str
    source: str  # as written, e.g. ./data
    rel: str  # normalised, e.g. data
    target: str
    read_only: bool = False
    line: int = 0


@dataclass(frozen=True)
class Needed:
    name: str
    line: int
    text: str  # the line as written


@dataclass(frozen=True)
class OverrideSpec:
    services: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    ports: tuple[PortMap, ...] = ()
    binds: tuple[RuntimeBind, ...] = ()
    env_files: tuple[tuple[str, tuple[tuple[str, bool], ...]], ...] = ()  # service → its own (path, required)
    own_env_files: tuple[str, ...] = ()  # shipped env files (relative), read for interpolation
    needs: tuple[Needed, ...] = ()  # variables the file uses with no default

    def describe_binds(self) -> list[dict]:
        return [{"service": b.service, "source": b.source, "target": b.target, "line": b.line} for b in self.binds]


def _norm(path: str) -> str:
    return os.path.normpath(path[2:] if path.startswith("./") else path)


def spec_from_model(c: cmodel.Compose, shipped: set[str]) -> OverrideSpec:
    """The override's content for compose model `c`; `shipped`: the catalog service's files (relative)."""
    shipped_dirs = {os.path.dirname(p) for p in shipped}
    for p in list(shipped_dirs):
        while p:
            p = os.path.dirname(p)
            shipped_dirs.add(p)
    slots = sorted(cmodel.port_slots(c), key=lambda s: (s.port.line, s.offset))  # in file order
    ports = tuple(PortMap(s.service, s.index, s.target, s.port.protocol, s.port.host_ip, s.port.line)
                  for s in slots)
    binds = []
    env_files = []
    own: list[str] = []
    for name, svc in c.services.items():
        for m in svc.volumes:
            if m.is_relative_bind:
                rel = _norm(m.source)
                if rel in shipped or rel in shipped_dirs or rel.startswith(".."):
                    continue  # configuration copied from the catalog (or refused by the catalog check)
                binds.append(RuntimeBind(name, m.source, rel, m.target, m.read_only, m.line))
        files = []
        for e in svc.env_files:
            p = _norm(e.path)
            if p in (_norm(x) for x in TINSNIP_ENV_FILES):
                continue
            files.append((e.path, e.required))
            if p in shipped and p not in own:
                own.append(p)
        env_files.append((name, tuple(files)))
    needs = []
    seen = set()
    for v in c.variables:
        if v.has_default or v.name in seen:
            continue
        seen.add(v.name)
        needs.append(Needed(v.name, v.line, c.source_line(v.line).strip()))
    return OverrideSpec(services=tuple(c.services), volumes=c.named_volumes(), ports=ports, binds=tuple(binds),
                        env_files=tuple(env_files), own_env_files=tuple(own), needs=tuple(needs))


def _q(value: str) -> str:
    """A YAML double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_override(spec: OverrideSpec, service: str, data_root: str, host_ports: list[int], label: str,
                    inputs: str) -> str:
    """docker-compose.override.yml. `host_ports`: the machine-env ports of the service, TIN_PORT_n = [n]."""
    out = [f"# Written by tinsnip at every deploy of {service}; edits here are overwritten.",
           f"# Named volumes and runtime binds of {service} live on the NAS under {data_root}; published ports are",
           "# the machine-env's own; env files: machine.env, .env, then the service's own. The label tells",
           "# tinsnip which files and settings the containers were made from."]
    if spec.services:
        out.append("services:")
    env_of = dict(spec.env_files)
    for s in spec.services:
        out.append(f"  {s}:")
        out.append("    labels:")
        out.append(f"      {label}: {_q(inputs)}")
        out.append("    env_file: !override")
        for ref in TINSNIP_ENV_FILES:
            out.append(f"      - {_q(ref)}")
        for path, required in env_of.get(s, ()):
            if required:
                out.append(f"      - {_q(path)}")
            else:
                out.append(f"      - path: {_q(path)}")
                out.append("        required: false")
        mine = [p for p in spec.ports if p.service == s]
        if mine:
            out.append("    ports: !override")
            for p in mine:
                out.append(f"      - target: {p.target if p.target.isdigit() else _q(p.target)}")
                out.append(f"        published: {_q(str(host_ports[p.index]))}")
                if p.host_ip:
                    out.append(f"        host_ip: {_q(p.host_ip)}")
                out.append(f"        protocol: {p.protocol}")
        binds = [b for b in spec.binds if b.service == s]
        if binds:
            out.append("    volumes:")
            for b in binds:
                out.append("      - type: bind")
                out.append(f"        source: {_q(f'{data_root}/{b.rel}')}")
                out.append(f"        target: {_q(b.target)}")
                if b.read_only:
                    out.append("        read_only: true")
    if spec.volumes:
        out.append("volumes:")
        for v in spec.volumes:
            out += [f"  {v}:", "    driver: local", "    driver_opts:", "      type: none", "      o: bind",
                    f"      device: {_q(f'{data_root}/{v}')}"]
    return "\n".join(out) + "\n"
