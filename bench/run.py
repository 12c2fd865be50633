"""`make bench`: tinsnip against Ansible doing the same work on the same lab hosts, in the same run.

    python bench/run.py [--lab-id 5] [--lab-dir /tmp/tl5] [--rounds 5] [--rounds-20 3] [--keep]
                        [--only create,apply_20,cli_list] [--no-ansible]

Brings up its own lab (tinsnip.lab.up; taken down at the end unless --keep or it was already up),
installs ansible-core into bench/.work/venv (never a tinsnip dependency), then times, per round and
with the tools interleaved (the first tool alternates between rounds):

    create_fresh   machine.create gazette-prod on a fresh lab (NAS tree, export, machine.env, user,
                   subuids, linger, rootless Docker, fstab line, gate, mount, links)   | bench/ansible/machine.yml
    create_noop    the same again                                               | the same playbook again
    apply_20       machine.apply over an inventory of 20 machine-envs, 10 per Docker host, from fresh
    apply_20_noop  the same again
    cli_list       `inv --list` in the repo, beside a bare `inv --list` over a one-task tasks.py (floor)

Every timing is a whole CLI process, wall clock. Between fresh runs every trace of a machine-env is
removed from the hosts (see `reset`), without SSH, so the reset never shows in any count. Both tools'
end states are listed in a normalized form (`END_STATE_*`) and hashed; the bench fails when they
differ. Round trips and connections are counted twice: tinsnip's own count (its --json) and, for both
tools alike, the hosts' sshd logs (LogLevel VERBOSE: `Accepted publickey` = a connection,
`Starting session` = a round trip).

Writes bench/results.json and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
VENV = WORK / "venv"
ANSIBLE_DIR = HERE / "ansible"
ANSIBLE_REQUIREMENT = "ansible-core>=2.17,<2.20"
RESULTS = HERE / "results.json"
README = HERE / "README.md"
TABLE_BEGIN = "<!-- bench table: written by bench/run.py -->"
TABLE_END = "<!-- end of bench table -->"
DOCKER_HOSTS = ("docker1", "docker2")
HOSTS = ("nas", *DOCKER_HOSTS)
SHEET = "dynamicalsystem"
VOLUME = "/volume1"
SSHD_LOGLEVEL_CONF = "/etc/ssh/sshd_config.d/zz-bench-loglevel.conf"

# 20 machine-envs with reserved machine names, so both tools get the same numbers without a registry
# round (gazette=01, lldap=02, gateway=03): 10 on each Docker host.
ENVS_20 = ("prod", "test", "dev", "staging", "demo", "qa", "uat")
MACHINES_20 = tuple(f"{m}-{e}" for m in ("gazette", "lldap", "gateway") for e in ENVS_20)[:20]

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --- pure helpers (tests/unit/test_bench.py) ------------------------------------------------------


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def ratio(ansible_s: float | None, tinsnip_s: float | None) -> float | None:
    if not ansible_s or not tinsnip_s:
        return None
    return round(ansible_s / tinsnip_s, 2)


def placement_20(names: tuple[str, ...] = MACHINES_20) -> dict[str, str]:
    """machine-env → Docker host: alternating, so each host gets half."""
    return {name: DOCKER_HOSTS[i % len(DOCKER_HOSTS)] for i, name in enumerate(names)}


def count_sshd(log: str) -> dict[str, int]:
    """Connections and round trips (sessions) in a slice of sshd's VERBOSE log."""
    return {"connections": len(re.findall(r"Accepted publickey for ", log)),
            "round_trips": len(re.findall(r"Starting session: ", log))}


RECAP_RE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    """ansible-playbook's PLAY RECAP → {host: {ok, changed, unreachable, failed}}."""
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                         "failed": int(m.group(5))} for m in RECAP_RE.finditer(output)}


def tinsnip_counts(summary: dict) -> tuple[dict[str, int], dict[str, int], int]:
    """From tinsnip's --json: (round trips per host, connections per host, changed total)."""
    hosts = summary.get("hosts", {})
    rts = {h: v.get("round_trips", 0) for h, v in hosts.items()}
    conns = {h: v.get("connections", 0) for h, v in hosts.items()}
    return rts, conns, summary.get("totals", {}).get("changed", 0)


def machine_envs(names: list[str], placement: dict[str, str], addr: dict[str, str], sheet_number: int = 1):
    """The vars Ansible's playbook needs for each machine-env, from tinsnip's own SMEP numbers."""
    from tinsnip import smep

    out = []
    for name in names:
        machine, env = smep.parse_machine_env(name)
        m = smep.MachineEnv(SHEET, sheet_number, machine, smep.RESERVED_MACHINES[machine], env, VOLUME)
        host = placement[name]
        out.append({"name": m.name, "machine": m.machine, "env": m.env, "sheet": m.sheet,
                    "sheet_number": m.sheet_number, "machine_number": m.machine_number,
                    "env_number": m.env_number, "uid": m.uid, "gid": m.gid, "home": m.home,
                    "nas_path": m.nas_path, "mount": m.mount, "gate": m.gate, "mount_point": m.mount_point,
                    "docker_host": m.docker_host,
                    "subid_start": m.subid_start, "host": host, "client": addr[host]})
    return out


def normalize_listing(text: str) -> str:
    """Whitespace-insensitive, order-insensitive form of an end-state listing."""
    lines = {" ".join(line.split()) for line in text.splitlines()}
    return "\n".join(sorted(line for line in lines if line)) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def table(results: dict) -> str:
    """The README table, from results.json's scenarios."""
    head = ("| scenario | tinsnip s | Ansible s | ratio | tinsnip round trips (per host) | tinsnip connections "
            "| Ansible round trips (sshd log) | same end state |\n|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, s in results["scenarios"].items():
        def per_host(d):
            return " · ".join(f"{h} {n}" for h, n in sorted((d or {}).items())) or "–"

        def num(v, unit=""):
            return "–" if v is None else f"{v}{unit}"
        t = num(s.get("tinsnip_s"))
        if name == "cli_list" and s.get("floor_s") is not None:
            t += f" (floor {s['floor_s']})"
        same = s.get("same_end_state")
        rows.append(f"| {name} | {t} | {num(s.get('ansible_s'))} | {num(s.get('ratio'), '×')} | "
                    f"{per_host(s.get('round_trips'))} | {per_host(s.get('connections'))} | "
                    f"{per_host(s.get('ansible_round_trips'))} | {'–' if same is None else ('yes' if same else 'NO')} |")
    return head + "\n".join(rows) + "\n"


def check_targets(results: dict) -> dict:
    """Issue 9's targets, judged from the results: {target: {"value": ..., "met": bool}}."""
    sc = results["scenarios"]
    out: dict[str, dict] = {}

    def put(name, value, met):
        out[name] = {"value": value, "met": bool(met)}

    if "create_noop" in sc:
        s = sc["create_noop"]
        conns, rts = s.get("connections") or {}, s.get("round_trips") or {}
        put("create_noop: 1 connection per host", conns, conns and all(v == 1 for v in conns.values()))
        put("create_noop: <= 2 round trips per host", rts, rts and all(v <= 2 for v in rts.values()))
        put("create_noop: ratio >= 10", s.get("ratio"), (s.get("ratio") or 0) >= 10)
    if "create_fresh" in sc:
        s = sc["create_fresh"]
        rts = s.get("round_trips") or {}
        put("create_fresh: <= 8 round trips per host", rts, rts and all(v <= 8 for v in rts.values()))
        put("create_fresh: ratio >= 3", s.get("ratio"), (s.get("ratio") or 0) >= 3)
    for name, one in (("apply_20", "create_fresh"), ("apply_20_noop", "create_noop")):
        if name in sc and one in sc:
            rts, base = sc[name].get("round_trips") or {}, sc[one].get("round_trips") or {}
            worst = max(base.values()) if base else None
            put(f"{name}: round trips per host <= 2x one machine-env's ({one}: max {worst})", rts,
                rts and worst and all(v <= 2 * worst for v in rts.values()))
    if "apply_20_noop" in sc:
        put("apply_20_noop: ratio >= 5", sc["apply_20_noop"].get("ratio"), (sc["apply_20_noop"].get("ratio") or 0) >= 5)
    if "cli_list" in sc:
        v = sc["cli_list"].get("vs_floor")
        put("cli_list: within 1.5x of its floor", v, v is not None and v <= 1.5)
    return out


def targets_text(targets: dict) -> str:
    return "".join(f"- {'met' if t['met'] else '**not met**'}: {name} (measured: {t['value']})\n"
                   for name, t in targets.items())


def update_readme(text: str, tbl: str, meta: str) -> str:
    block = f"{TABLE_BEGIN}\n{meta}\n\n{tbl}{TABLE_END}"
    if TABLE_BEGIN in text and TABLE_END in text:
        before, rest = text.split(TABLE_BEGIN, 1)
        after = rest.split(TABLE_END, 1)[1]
        return before + block + after
    return text.rstrip("\n") + "\n\n" + block + "\n"


# --- the lab --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Lab:
    dir: Path
    id: int
    addr: dict[str, str] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.dir / "hosts.yaml"

    def x(self, host: str, script: str, check: bool = True, timeout: float = 300) -> str:
        """Run a shell script as root inside a lab host, without SSH (so no sshd log line, no count)."""
        from tinsnip import lab

        r = lab.host_exec(self.id, host, ["bash", "-c", script], check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"bench: on {host}: exit {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}")
        return r.stdout.decode(errors="replace")

    def password(self) -> str:
        for line in (self.dir / "tinsnip.env").read_text().splitlines():
            if line.startswith("TINSNIP_NAS_SUDO_PASSWORD="):
                return line.split("=", 1)[1]
        raise SystemExit("bench: no TINSNIP_NAS_SUDO_PASSWORD in the lab's tinsnip.env")


def lab_up(lab_dir: Path, lab_id: int) -> tuple[Lab, bool]:
    from tinsnip import lab as labmod

    st = labmod.status(lab_dir, lab_id)
    was_up = st["up"]
    if not was_up:
        log(f"lab {lab_id} up in {lab_dir}")
        labmod.up(lab_dir, lab_id)
        st = labmod.status(lab_dir, lab_id)
    lab = Lab(Path(lab_dir), lab_id, {h: v["address"] for h, v in st["hosts"].items()})
    return lab, was_up


def sshd_verbose(lab: Lab) -> None:
    """LogLevel VERBOSE on every lab host, so sshd logs each session (a round trip)."""
    for h in HOSTS:
        lab.x(h, f"echo 'LogLevel VERBOSE' > {SSHD_LOGLEVEL_CONF}")
    lab.x("nas", "kill -HUP 1")  # sshd is the NAS's PID 1: it re-reads its config by re-executing
    for h in DOCKER_HOSTS:
        lab.x(h, "systemctl reload ssh")
    time.sleep(0.5)


def sshd_mark(lab: Lab) -> dict[str, object]:
    marks: dict[str, object] = {"nas": (lab.dir / "state/nas/init.log").stat().st_size}
    for h in DOCKER_HOSTS:
        out = lab.x(h, "journalctl -t sshd -n 0 --show-cursor --no-pager")
        marks[h] = out.strip().rsplit("cursor: ", 1)[-1]
    return marks


def sshd_counts(lab: Lab, marks: dict[str, object]) -> dict[str, dict[str, int]]:
    with open(lab.dir / "state/nas/init.log", "rb") as f:
        f.seek(int(marks["nas"]))
        counts = {"nas": count_sshd(f.read().decode(errors="replace"))}
    for h in DOCKER_HOSTS:
        text = lab.x(h, f"journalctl -t sshd --after-cursor={shq(str(marks[h]))} -o cat --no-pager")
        counts[h] = count_sshd(text)
    return counts


def shq(s: str) -> str:
    import shlex

    return shlex.quote(s)


# --- resetting and listing the hosts ----------------------------------------------------------------

SNAPSHOT = "/root/.bench-pristine"

SNAPSHOT_SCRIPT = f"""
mkdir -p {SNAPSHOT}
for f in /etc/exports /etc/fstab /etc/subuid /etc/subgid; do
  [ -e {SNAPSHOT}/$(basename $f) ] || cp -p $f {SNAPSHOT}/ 2>/dev/null || : > {SNAPSHOT}/$(basename $f)
done
"""

# Every trace of a machine-env on a Docker host: its user's systemd (and rootless dockerd), linger,
# mounts, gates, links, fstab line, user, group, home, subuid/subgid lines.
RESET_DOCKER = f"""
users=$(awk -F: '$3>=10000 && $3<60000 {{print $1}}' /etc/passwd)
for u in $users; do loginctl disable-linger "$u" 2>/dev/null; done
for u in $users; do systemctl stop "user@$(id -u "$u").service" 2>/dev/null & done; wait
for u in $users; do pkill -KILL -u "$u" 2>/dev/null; done
findmnt -rn -o TARGET | grep -E '^(/mnt/|/var/lib/tinsnip/)' | sort -r | while read -r m; do umount -l "$m"; done
for u in $users; do userdel -r -f "$u" >/dev/null 2>&1; groupdel "$u" 2>/dev/null; done
rm -rf /mnt/*-* /var/lib/tinsnip/mounts /var/lib/systemd/linger/* /var/lock/tinsnip.lock*
for f in fstab subuid subgid; do cp -p {SNAPSHOT}/$f /etc/$f; done
systemctl daemon-reload
"""

RESET_NAS = f"""
rm -rf {VOLUME}/{SHEET} {VOLUME}/*/station /var/lock/tinsnip.lock*
cp -p {SNAPSHOT}/exports /etc/exports
exportfs -ra
"""


def reset(lab: Lab) -> None:
    """Back to a fresh lab: Docker hosts first (they hold mounts of the NAS's tree), then the NAS."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda h: lab.x(h, RESET_DOCKER), DOCKER_HOSTS))
    lab.x("nas", RESET_NAS)


def end_state_nas(mes: list[dict]) -> str:
    lines = []
    for m in mes:
        p = m["nas_path"]
        parent, grand = p.rsplit("/", 1)[0], p.rsplit("/", 2)[0]
        paths = [grand, parent, p] + [f"{p}/{d}" for d in ("data", "config", "state", "service", ".machine")]
        q = " ".join(shq(x) for x in paths)
        lines.append(f"stat -c 'tree %n %u:%g %a %F' {q} 2>&1")
        lines.append(f"awk -v p={shq(p)} '$1==p' /etc/exports | sed 's/#.*//' | sed 's/^/export /'")
        lines.append(f"exportfs -v | tr -s ' \\t\\n' ' ' | grep -o {shq(p + ' ')}'[^ ]*([^)]*)' | sed 's/^/active /'")
        env = f"{p}/.machine/machine.env"
        lines.append(f"stat -c 'file %n %u:%g %a' {shq(env)} 2>&1; echo \"sha {env} $(sha256sum < {shq(env)} | cut -c1-16)\"")
    return "\n".join(lines) + "\n"


def end_state_docker(mes: list[dict]) -> str:
    lines = []
    for m in mes:
        u, uid, home, mnt, gate, point = m["name"], m["uid"], m["home"], m["mount"], m["gate"], m["mount_point"]
        run_as = f"runuser -u {u} -- env XDG_RUNTIME_DIR=/run/user/{uid} DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{uid}/bus"
        lines += [
            f"getent passwd {u} | cut -d: -f1,3,4,6 | sed 's/^/passwd /'",
            f"getent group {u} | cut -d: -f1,3 | sed 's/^/group /'",
            f"echo \"lock {u} $(passwd -S {u} | cut -d' ' -f2)\"",
            f"grep '^{u}:' /etc/subuid | sed 's/^/subuid /'; grep '^{u}:' /etc/subgid | sed 's/^/subgid /'",
            f"awk -v m={mnt} -v p={point} '$2==m || $2==p' /etc/fstab | sed 's/^/fstab /'",
            f"echo \"mounted {point} $(findmnt -rn -o FSTYPE --mountpoint {point})\"",
            f"findmnt -rn -o TARGET | grep -x {mnt} | sed 's/^/mounted on the link path /'",
            f"echo \"link {mnt} -> $(readlink {mnt})\"",
            f"stat -c 'gate %n %U:%G %a' {gate.rsplit('/', 1)[0]} {gate}",
            f"stat -c 'mountpoint %n %u:%g %a' {point}",
            f"test -e /var/lib/systemd/linger/{u} && echo 'linger {u}'",
            f"for l in {home}/.local/share/{SHEET}/@{m['machine']} {home}/.config/{SHEET}/@{m['machine']} "
            f"{home}/.local/state/{SHEET}/@{m['machine']} {home}/service; do "
            f"echo \"link $l -> $(readlink $l) $(stat -c %U:%G $l)\"; done",
            f"echo \"rootless {u} $({run_as} systemctl --user is-enabled docker 2>&1) "
            f"$({run_as} systemctl --user is-active docker 2>&1)\"",
            f"echo \"daemon.json {u} $(sha256sum < {home}/.config/docker/daemon.json | cut -c1-16)\"",
            f"for f in {home}/.config/systemd/user/docker.service.d/*; do echo \"drop-in $f $(sha256sum < $f | cut -c1-16)\"; done",
            f"stat -c 'home %n %U:%G %a' {home}",
            f"echo \"docker info {u} $({run_as} DOCKER_HOST={m['docker_host']} docker info --format '{{{{.SecurityOptions}}}}' "
            f"2>&1 | grep -o rootless)\"",
        ]
    return "\n".join(lines) + "\n"


def end_state(lab: Lab, mes: list[dict]) -> str:
    parts = [f"## nas\n{normalize_listing(lab.x('nas', end_state_nas(mes), check=False))}"]
    for h in DOCKER_HOSTS:
        mine = [m for m in mes if m["host"] == h]
        if mine:
            parts.append(f"## {h}\n{normalize_listing(lab.x(h, end_state_docker(mine), check=False))}")
    return "".join(parts)


# --- the tools ----------------------------------------------------------------------------------------


def ensure_ansible() -> Path:
    playbook = VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        log(f"installing {ANSIBLE_REQUIREMENT} into {VENV} (the bench's own environment)")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin/pip"), "install", "-q", ANSIBLE_REQUIREMENT], check=True)
    return playbook


@dataclass
class Timed:
    seconds: float
    rc: int
    out: str
    err: str


LOADS: list[float] = []  # the machine's 1-minute load average before each timed run


def timed(argv: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 900) -> Timed:
    LOADS.append(round(os.getloadavg()[0], 2))
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    return Timed(round(time.perf_counter() - t0, 3), r.returncode, r.stdout, r.stderr)


def tinsnip(args: list[str], inventory: Path) -> tuple[Timed, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINSNIP_")}
    t = timed([sys.executable, "-m", "tinsnip", *args, f"--inventory={inventory}", "--json"], env=env, cwd=REPO)
    try:
        summary = json.loads(t.out[t.out.index("{"):])
    except ValueError:
        summary = {}
    if t.rc != 0:
        log(f"tinsnip {' '.join(args)} failed (exit {t.rc}): {t.err[-1500:]} {t.out[-1500:]}")
    return t, summary


@dataclass
class AnsibleSide:
    lab: Lab
    playbook_bin: Path
    work: Path

    def write_inventory(self) -> Path:
        d = self.lab.dir
        common = (f"ansible_python_interpreter=/usr/bin/python3\nansible_ssh_private_key_file={d}/id_ed25519\n"
                  f"ansible_ssh_common_args='-o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes'")
        text = (f"[storage]\nnas ansible_host={self.lab.addr['nas']} ansible_user=admin\n\n[docker_hosts]\n"
                + "".join(f"{h} ansible_host={self.lab.addr[h]} ansible_user=root\n" for h in DOCKER_HOSTS)
                + f"\n[all:vars]\n{common}\n")
        path = self.work / "inventory.ini"
        path.write_text(text)
        secret = self.work / "become.json"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"ansible_become_password": self.lab.password()}, f)
        return path

    def run(self, vars_file: Path) -> Timed:
        """One ansible-playbook process on fresh SSH connections (its ControlMaster closed afterwards)."""
        control = Path(tempfile.mkdtemp(prefix="cp", dir=self.work))
        env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCAL_TEMP": str(self.work / "tmp"), "ANSIBLE_HOME": str(self.work / "home")}
        t = timed([str(self.playbook_bin), "-i", str(self.work / "inventory.ini"), "-e", f"@{vars_file}",
                   "-e", f"@{self.work / 'become.json'}", str(ANSIBLE_DIR / "machine.yml")], env=env)
        for sock in control.iterdir():
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "x"], capture_output=True)
        shutil.rmtree(control, ignore_errors=True)
        if t.rc != 0:
            log(f"ansible-playbook failed (exit {t.rc}):\n{t.out[-3000:]}\n{t.err[-1500:]}")
        return t


# --- scenarios ----------------------------------------------------------------------------------------


@dataclass
class Cell:
    times: list[float] = field(default_factory=list)
    round_trips: dict[str, int] = field(default_factory=dict)
    connections: dict[str, int] = field(default_factory=dict)
    sshd: dict[str, dict[str, int]] = field(default_factory=dict)
    end_states: list[str] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    failures: int = 0


def ansible_vars(lab: Lab, mes: list[dict], tinsnip_files: dict) -> dict:
    return {"sheet": SHEET, "volume": VOLUME, "repo": str(REPO), "machine_envs": mes, **tinsnip_files}


def tinsnip_side_files(lab: Lab) -> dict:
    """What tinsnip writes beside the numbers (NAS address, fstab options, the rootless daemon's
    daemon.json and docker.service drop-in), taken from its planner's pure helpers, so the playbook
    is held to the same bytes."""
    from tinsnip import inventory as inv_mod
    from tinsnip.plans import machine as pm

    inv = inv_mod.load(lab.inventory)
    me = pm.dropin_path(_probe_machine_env())
    return {"nas_host": inv.nas.address, "fstab_options": pm.FSTAB_OPTIONS,
            "daemon_json": {h: pm.daemon_json(inv.docker_hosts[h]) for h in DOCKER_HOSTS},
            "dropin": {h: pm.dropin(inv.docker_hosts[h]) for h in DOCKER_HOSTS},
            "dropin_name": me.rsplit("/", 1)[1]}


def _probe_machine_env():
    from tinsnip import smep

    return smep.MachineEnv(SHEET, 1, "gazette", 1, "prod", VOLUME)


def run_pair(lab: Lab, ans: AnsibleSide | None, rounds: int, fresh: Cell, noop: Cell, afresh: Cell, anoop: Cell,
             tin_args: list[str], inventory: Path, mes: list[dict], vars_file: Path, noop_runs: int) -> None:
    """`rounds` rounds; each: for each tool (first tool alternating), reset → fresh → end state → no-ops."""
    for i in range(rounds):
        order = ["tinsnip", "ansible"] if i % 2 == 0 else ["ansible", "tinsnip"]
        for tool in order:
            if tool == "ansible" and ans is None:
                continue
            reset(lab)
            cells = (fresh, noop) if tool == "tinsnip" else (afresh, anoop)
            for k in range(1 + noop_runs):
                cell = cells[0] if k == 0 else cells[1]
                marks = sshd_mark(lab)
                if tool == "tinsnip":
                    t, summary = tinsnip(tin_args, inventory)
                    rts, conns, changed = tinsnip_counts(summary)
                    cell.round_trips, cell.connections = rts, conns
                    cell.changed.append(changed)
                else:
                    t = ans.run(vars_file)
                    recap = parse_recap(t.out)
                    cell.changed.append(sum(v["changed"] for v in recap.values()))
                cell.sshd = sshd_counts(lab, marks)
                if t.rc != 0:
                    cell.failures += 1
                    continue
                cell.times.append(t.seconds)
                log(f"round {i + 1} {tool} {'fresh' if k == 0 else 'no-op'}: {t.seconds:.2f}s "
                    f"changed={cell.changed[-1]} sshd={cell.sshd}")
                if k == 0:
                    cell.end_states.append(end_state(lab, mes))


def scenario(cell: Cell, acell: Cell | None) -> dict:
    t = median(cell.times)
    a = median(acell.times) if acell else None
    out = {"tinsnip_s": t, "ansible_s": a, "ratio": ratio(a, t), "round_trips": cell.round_trips,
           "connections": cell.connections,
           "sshd_round_trips": {h: c["round_trips"] for h, c in cell.sshd.items()},
           "runs": len(cell.times), "tinsnip_runs_s": cell.times, "tinsnip_changed": cell.changed,
           "tinsnip_failures": cell.failures}
    if acell is not None:
        out.update({"ansible_runs_s": acell.times, "ansible_changed": acell.changed,
                    "ansible_failures": acell.failures,
                    "ansible_round_trips": {h: c["round_trips"] for h, c in acell.sshd.items()},
                    "ansible_connections": {h: c["connections"] for h, c in acell.sshd.items()}})
    return out


def compare_end_states(name: str, cell: Cell, acell: Cell | None) -> dict:
    states = set(cell.end_states)
    out = {"end_state": {"tinsnip": sorted(digest(s) for s in states)}}
    WORK.mkdir(exist_ok=True)
    for s in states:
        (WORK / f"end-{name}-tinsnip-{digest(s)}.txt").write_text(s)
    if acell is not None and acell.end_states:
        astates = set(acell.end_states)
        for s in astates:
            (WORK / f"end-{name}-ansible-{digest(s)}.txt").write_text(s)
        out["end_state"]["ansible"] = sorted(digest(s) for s in astates)
        out["same_end_state"] = len(states) == 1 and states == astates
    return out


def bench_machine(lab: Lab, ans: AnsibleSide | None, name: str, names: list[str], placement: dict[str, str],
                  inventory: Path, tin_args: list[str], rounds: int, noop_runs: int) -> dict:
    mes = machine_envs(names, placement, lab.addr)
    vars_file = WORK / f"vars-{name}.json"
    vars_file.write_text(json.dumps(ansible_vars(lab, mes, tinsnip_side_files(lab)), indent=2))
    cells = [Cell(), Cell(), Cell(), Cell()]
    run_pair(lab, ans, rounds, *cells, tin_args, inventory, mes, vars_file, noop_runs)
    fresh, noop, afresh, anoop = cells
    with_a = ans is not None
    noop_name = "create_noop" if name == "create" else f"{name}_noop"
    fresh_name = "create_fresh" if name == "create" else name
    return {
        fresh_name: {**scenario(fresh, afresh if with_a else None),
                     **compare_end_states(fresh_name, fresh, afresh if with_a else None)},
        noop_name: scenario(noop, anoop if with_a else None),
    }


def bench_cli(rounds: int) -> dict:
    floor_dir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    (floor_dir / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef hello(c):\n    \"\"\"Say hello.\"\"\"\n")
    inv = [sys.executable, "-m", "invoke", "--list"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINSNIP_")}
    tin, floor, tin_help = [], [], []
    for _ in range(rounds):
        for which in ("tin", "floor", "help"):
            if which == "tin":
                t = timed(inv, env=env, cwd=REPO)
                tin.append(t.seconds)
            elif which == "floor":
                t = timed(inv, env=env, cwd=floor_dir)
                floor.append(t.seconds)
            else:
                t = timed([sys.executable, "-m", "tinsnip", "--help"], env=env, cwd=REPO)
                tin_help.append(t.seconds)
            if t.rc != 0:
                raise SystemExit(f"bench: {which} --list failed: {t.err[-1000:]}")
    fabric = timed([sys.executable, "-c", "import sys, tinsnip.tasks; "
                    "sys.exit(1 if 'fabric' in sys.modules or 'paramiko' in sys.modules else 0)"], env=env, cwd=REPO)
    shutil.rmtree(floor_dir, ignore_errors=True)
    t, f = median(tin), median(floor)
    return {"tinsnip_s": t, "floor_s": f, "ansible_s": None, "ratio": None, "round_trips": {}, "connections": {},
            "vs_floor": round(t / f, 2) if t and f else None, "tin_help_s": median(tin_help),
            "fabric_loaded_at_start": fabric.rc != 0, "runs": rounds}


def apply_inventory(lab: Lab) -> Path:
    """A copy of the lab's inventory whose machines: are the 20 machine-envs (beside tinsnip.env)."""
    import yaml

    data = yaml.safe_load(lab.inventory.read_text())
    data["machines"] = placement_20()
    path = lab.dir / "bench-20.yaml"
    path.write_text("# bench: the lab inventory with 20 machine-envs (written by bench/run.py)\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


def write_outputs(results: dict, out: Path) -> str:
    """results.json with the targets judged, and (for bench/results.json) the README's table."""
    results["targets"] = check_targets(results)
    out.write_text(json.dumps(results, indent=2) + "\n")
    meta = results.get("meta", {})
    tbl = table(results) + "\nTargets (issue 9):\n\n" + targets_text(results["targets"])
    meta_line = (f"Measured {meta.get('date')} on {meta.get('cpus')} CPUs (1-minute load average while timing: "
                 f"median {meta.get('load_1min_median')}, max {meta.get('load_1min_max')}), Python "
                 f"{meta.get('python')}, {meta.get('ansible', 'Ansible not run')}; medians of {meta.get('rounds')} "
                 f"rounds ({meta.get('rounds_20')} for apply_20), {meta.get('noop_runs')} no-op runs after each "
                 f"fresh create ({meta.get('noop_runs_20')} after each apply_20).")
    if out == RESULTS:
        README.write_text(update_readme(README.read_text() if README.exists() else "# bench\n", tbl, meta_line))
    return tbl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lab-id", type=int, default=int(os.environ.get("TINSNIP_BENCH_LAB_ID", "5")))
    p.add_argument("--lab-dir", default=os.environ.get("TINSNIP_BENCH_LAB_DIR"))
    p.add_argument("--rounds", type=int, default=5, help="rounds for create_* and cli_list (each tool once per round)")
    p.add_argument("--rounds-20", type=int, default=2, help="rounds for apply_20*")
    p.add_argument("--noop-runs", type=int, default=2, help="no-op runs after each fresh create")
    p.add_argument("--noop-runs-20", type=int, default=1, help="no-op runs after each fresh apply_20")
    p.add_argument("--only", default="create,apply_20,cli_list")
    p.add_argument("--no-ansible", action="store_true")
    p.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    p.add_argument("--output", default=str(RESULTS))
    p.add_argument("--table-only", action="store_true", help="rewrite the README table from results.json, run nothing")
    a = p.parse_args(argv)
    if a.table_only:
        print(write_outputs(json.loads(RESULTS.read_text()), RESULTS))
        return 0
    only = set(a.only.split(","))
    lab_dir = Path(a.lab_dir or f"/tmp/tl{a.lab_id}")
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.time()

    results = {"scenarios": {}}
    meta = {}
    lab = None
    was_up = True
    try:
        if "cli_list" in only:
            log("cli_list")
            results["scenarios"]["cli_list"] = bench_cli(max(a.rounds, 7))
        if only & {"create", "apply_20"}:
            lab, was_up = lab_up(lab_dir, a.lab_id)
            ans = None
            if not a.no_ansible:
                ans = AnsibleSide(lab, ensure_ansible(), WORK)
                ans.write_inventory()
                meta["ansible"] = subprocess.run([str(VENV / "bin/ansible"), "--version"], capture_output=True,
                                                 text=True).stdout.splitlines()[0]
            for h in HOSTS:
                lab.x(h, SNAPSHOT_SCRIPT)
            sshd_verbose(lab)
            if "create" in only:
                log("create_fresh / create_noop")
                results["scenarios"].update(bench_machine(
                    lab, ans, "create", ["gazette-prod"], {"gazette-prod": "docker1"}, lab.inventory,
                    ["machine.create", "--service=gazette", "--env=prod", "--yes"], a.rounds, a.noop_runs))
            if "apply_20" in only:
                log("apply_20 / apply_20_noop")
                inv20 = apply_inventory(lab)
                results["scenarios"].update(bench_machine(
                    lab, ans, "apply_20", list(MACHINES_20), placement_20(), inv20,
                    ["machine.apply", "--yes"], a.rounds_20, a.noop_runs_20))
            reset(lab)
    finally:
        (lab_dir / "bench-20.yaml").unlink(missing_ok=True)
        if lab is not None and not a.keep and not was_up:
            from tinsnip import lab as labmod

            log("lab down")
            labmod.down(lab.dir, lab.id)
    meta.update({"load_1min_median": median(LOADS), "load_1min_max": max(LOADS, default=None),
                 "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)) + " UTC",
                 "seconds": round(time.time() - started), "python": sys.version.split()[0],
                 "cpus": os.cpu_count(), "rounds": a.rounds, "rounds_20": a.rounds_20, "noop_runs": a.noop_runs,
                 "noop_runs_20": a.noop_runs_20})
    results["meta"] = meta
    out = Path(a.output)
    if out.exists() and out == RESULTS and a.only != "create,apply_20,cli_list":
        old = json.loads(out.read_text())  # a partial run keeps the other scenarios' last results
        old["scenarios"].update(results["scenarios"])
        old["meta"] = meta
        results = old
    print(write_outputs(results, out))
    bad = [n for n, s in results["scenarios"].items() if s.get("same_end_state") is False]
    if bad:
        log(f"END STATES DIFFER in {', '.join(bad)}: see bench/.work/end-*.txt")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
