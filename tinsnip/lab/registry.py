"""The lab's container registry: Debian's docker-registry (the CNCF distribution registry) over TLS.

It runs in a network namespace of its own on the lab bridge, `tlK-reg` at 198.18.K.30, as two
registries of one process each:

    198.18.K.30:5000   open: the lab's images, and the Docker Hub mirror (library/busybox, ...)
    198.18.K.30:5001   private: htpasswd login (bcrypt); the user and password are in the lab's
                       tinsnip.env (TINSNIP_LAB_REGISTRY_USER / TINSNIP_LAB_REGISTRY_PASSWORD)

Its certificate comes from a throwaway CA made for each lab.up (key and certificates in
<lab dir>/registry/, the CA certificate also at <lab dir>/registry-ca.crt). Its storage is in the lab's
disks, so it starts empty each lab.up.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

OCTET = 30
OPEN_PORT = 5000
PRIVATE_PORT = 5001
USER = "tinsnip-lab"
USER_VAR = "TINSNIP_LAB_REGISTRY_USER"
PASSWORD_VAR = "TINSNIP_LAB_REGISTRY_PASSWORD"
CA_FILE = "registry-ca.crt"
# Docker Hub's names, pointed at the lab registry in the lab's hosts file (see hosts_line).
HUB_NAMES = ("docker.io", "registry-1.docker.io", "index.docker.io")


def addr(lab_id: int) -> str:
    return f"198.18.{lab_id}.{OCTET}"


def netns(lab_id: int) -> str:
    return f"tl{lab_id}-reg"


def veth(lab_id: int) -> str:
    return f"tl{lab_id}v-reg"


def open_registry(lab_id: int) -> str:
    return f"{addr(lab_id)}:{OPEN_PORT}"


def private_registry(lab_id: int) -> str:
    return f"{addr(lab_id)}:{PRIVATE_PORT}"


def hosts_line(lab_id: int) -> str:
    # dockerd resolves docker.io before it asks a mirror; in the lab nothing answers DNS, so each pull
    # would first stall 10 s (two lookups of 5 s). With these names in /etc/hosts the lookup is instant,
    # and a name the mirror lacks fails at once (nothing listens on 198.18.K.30:443) instead of after 20 s.
    return f"{addr(lab_id)}\t" + " ".join(HUB_NAMES)


def _run(argv, **kw) -> subprocess.CompletedProcess:
    from . import _run as run

    return run(argv, **kw)


def make_certs(d: Path, lab_id: int) -> None:
    """A throwaway CA and the registry's server certificate (P-256, valid 7 days), in d."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    ip = addr(lab_id)
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "7",
          "-subj", f"/CN=tinsnip lab {lab_id} throwaway CA", "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt")])
    _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={ip}",
          "-keyout", str(d / "server.key"), "-out", str(d / "server.csr")])
    (d / "server.ext").write_text(f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    _run(["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
          "-CAcreateserial", "-days", "7", "-extfile", str(d / "server.ext"), "-out", str(d / "server.crt")])
    # skopeo's --*-cert-dir wants the CA as ca.crt in a directory of its own (no server key beside it)
    (d / "certs").mkdir(exist_ok=True)
    (d / "certs" / "ca.crt").write_bytes((d / "ca.crt").read_bytes())


def htpasswd_line(user: str, password: str) -> str:
    """user:bcrypt-hash, as `htpasswd -B` writes it (the registry accepts only bcrypt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}"


def _config(lab_id: int, port: int, storage: Path, certs: Path, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",
        f"storage: {{filesystem: {{rootdirectory: {json.dumps(str(storage))}}}, delete: {{enabled: true}}}}",
        "http:",
        f"  addr: {addr(lab_id)}:{port}",
        f"  secret: {os.urandom(16).hex()}",
        f"  tls: {{certificate: {json.dumps(str(certs / 'server.crt'))}, key: {json.dumps(str(certs / 'server.key'))}}}",
    ]
    if htpasswd:
        lines += ["auth:", f"  htpasswd: {{realm: tinsnip-lab, path: {json.dumps(str(htpasswd))}}}"]
    return "\n".join(lines) + "\n"


def start(lab_dir: Path, disks: Path, lab_id: int, bridge: str, password: str) -> None:
    """The registry's netns on the lab bridge and its two registries, answering over TLS."""
    d = lab_dir / "registry"
    ns, ip = netns(lab_id), addr(lab_id)
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", veth(lab_id), "type", "veth", "peer", "name", "eth0",
          "address", f"02:1a:b0:12:{lab_id:02x}:{OCTET:02x}", "netns", ns])
    _run(["ip", "neigh", "flush", "to", ip, "dev", bridge], check=False)
    _run(["ip", "link", "set", veth(lab_id), "master", bridge, "up"])
    _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
    _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    fd = os.open(d / "htpasswd", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(htpasswd_line(USER, password) + "\n")
    for port, auth in ((OPEN_PORT, None), (PRIVATE_PORT, d / "htpasswd")):
        storage = disks / f"registry-{port}"
        storage.mkdir(parents=True, exist_ok=True)
        conf = d / f"config-{port}.yml"
        conf.write_text(_config(lab_id, port, storage, d, auth))
        conf.chmod(0o600)
        with open(d / f"registry-{port}.log", "wb") as log:
            subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "docker-registry", "serve", str(conf)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def wait(lab_dir: Path, lab_id: int, timeout: float = 20) -> float:
    """Until both registries answer a TLS handshake with the lab's CA."""
    ctx = ssl.create_default_context(cafile=str(lab_dir / "registry" / "ca.crt"))
    t0 = time.monotonic()
    for port in (OPEN_PORT, PRIVATE_PORT):
        while True:
            try:
                with socket.create_connection((addr(lab_id), port), timeout=1) as s:
                    with ctx.wrap_socket(s, server_hostname=addr(lab_id)):
                        break
            except (OSError, ssl.SSLError):
                if time.monotonic() - t0 > timeout:
                    from . import LabError

                    log = (lab_dir / "registry" / f"registry-{port}.log").read_text(errors="replace")[-1500:]
                    raise LabError(f"the lab registry did not answer on {addr(lab_id)}:{port} in {timeout:.0f} s:\n{log}") from None
                time.sleep(0.05)
    return time.monotonic() - t0


def stop(lab_id: int) -> None:
    """Stop the registries and remove their netns (and its veth). Safe when nothing runs."""
    ns = netns(lab_id)
    if Path("/run/netns", ns).exists():
        pids = _pids(ns)
        for p in pids:
            _kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while _pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in _pids(ns):
            _kill(p, signal.SIGKILL)
        while _pids(ns) and time.monotonic() < deadline + 2:
            time.sleep(0.05)
        _run(["ip", "netns", "del", ns])
    _run(["ip", "link", "del", veth(lab_id)], check=False)


def _pids(ns: str) -> list[int]:
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def write_authfile(path: Path, lab_id: int, password: str) -> None:
    """A containers-auth.json for skopeo (0600): the login travels in a file, never in argv."""
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {private_registry(lab_id): {"auth": token}}}, f)


def skopeo(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run(["skopeo", "--registries-conf", "/dev/null", *args], timeout=timeout)


def catalog(lab_dir: Path, lab_id: int) -> list[str]:
    """The open registry's repositories (a quick look for lab.status and tests)."""
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(lab_dir / CA_FILE))
    with urllib.request.urlopen(f"https://{open_registry(lab_id)}/v2/_catalog", context=ctx, timeout=5) as r:
        return json.load(r)["repositories"]
