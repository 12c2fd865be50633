"""The lab's application images, built on this machine from Debian's packages, with no network in the lab.

One slim Debian 12 root filesystem (mmdebstrap, minbase) is built once; each application goes into a
copy of it (apt in a chroot, scripts in images/ beside this file), and umoci turns each copy into an
image of one OCI layout. The layout is cached (`$TINSNIP_LAB_CACHE`, else `.lab/cache`), keyed on
this file and its scripts: a second `ensure()` returns at once. `lab.up` pushes the layout into the
lab registry with skopeo, under the lab's names and under Docker Hub's (the registry is the lab's
Docker Hub mirror), so a compose file that says `image: postgres:15` pulls from it.

`release()` pushes a new image for a tag that exists (a good one, or one that starts and then fails
its health check, because its server never runs), so updates can be shown with real digests.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent / "images"
SUITE = "bookworm"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Keep the images slim: no docs, man pages or locales (kept in dpkg's config, so later installs stay slim).
DPKG_EXCLUDES = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
                 "path-include=/usr/share/locale/locale.alias", "path-exclude=/usr/share/info/*",
                 "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright")
NO_JIT = ("path-exclude=/usr/lib/x86_64-linux-gnu/libLLVM-*\\npath-exclude=/usr/lib/x86_64-linux-gnu/libz3.so*\\n"
          "path-exclude=/usr/lib/postgresql/*/lib/bitcode/*\\npath-exclude=/usr/lib/postgresql/*/lib/llvmjit*\\n")


@dataclass(frozen=True)
class Image:
    key: str  # the tag in the OCI layout
    name: str  # the lab's name, e.g. lab/postgres:15
    hub: tuple[str, ...]  # Docker Hub names served by the mirror
    packages: tuple[str, ...]
    pre: str = "true"  # shell run in the chroot before apt (users with fixed ids, dpkg excludes)
    post: str = ""  # shell run on this machine after apt, with $D the root filesystem
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (f"PATH={PATH}",)
    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    workdir: str = ""
    stopsignal: str = ""
    labels: dict = field(default_factory=dict, hash=False)


IMAGES = (
    Image("postgres-15", "lab/postgres:15", ("library/postgres:15", "library/postgres:15-bookworm"),
          ("postgresql-15",),
          pre=("groupadd -r -g 999 postgres && useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres"
               " && mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf"
               f" && printf '{NO_JIT}' > /etc/dpkg/dpkg.cfg.d/90-no-jit"),
          post=('install -m 755 "$HERE/postgres-entrypoint.sh" "$D/usr/local/bin/docker-entrypoint.sh"; '
                'install -d -o 999 -g 999 -m 700 "$D/var/lib/postgresql/data"; install -d -o 999 -g 999 -m 2775 "$D/run/postgresql"; '
                'install -d "$D/docker-entrypoint-initdb.d"'),
          entrypoint=("docker-entrypoint.sh",), cmd=("postgres",),
          env=(f"PATH=/usr/lib/postgresql/15/bin:{PATH}", "PGDATA=/var/lib/postgresql/data", "LANG=C.UTF-8"),
          volumes=("/var/lib/postgresql/data",), ports=("5432/tcp",), stopsignal="SIGINT"),
    Image("redis-7", "lab/redis:7", ("library/redis:7", "library/redis:7-bookworm"), ("redis-server",),
          pre="groupadd -r -g 999 redis && useradd -r -g redis -u 999 -d /var/lib/redis -s /usr/sbin/nologin redis",
          post='install -d -o 999 -g 999 -m 755 "$D/data"',
          cmd=("redis-server", "--protected-mode", "no"), volumes=("/data",), ports=("6379/tcp",), workdir="/data"),
    Image("nginx-1.22", "lab/nginx:1.22", ("library/nginx:1.22", "library/nginx:stable"), ("nginx-light",),
          post=('ln -sf /dev/stdout "$D/var/log/nginx/access.log"; ln -sf /dev/stderr "$D/var/log/nginx/error.log"; '
                'mkdir -p "$D/usr/share/nginx/html"; printf "<h1>nginx in the tinsnip lab</h1>\\n" > "$D/usr/share/nginx/html/index.html"; '
                "sed -i 's#root /var/www/html;#root /usr/share/nginx/html;#' \"$D/etc/nginx/sites-available/default\""),
          cmd=("nginx", "-g", "daemon off;"), ports=("80/tcp",), stopsignal="SIGQUIT"),
)


def by_name(name: str) -> Image:
    for image in IMAGES:
        if name in (image.name, image.key, *image.hub):
            return image
    raise KeyError(name)


def cache_dir(explicit: Path | str | None = None) -> Path:
    return Path(explicit or os.environ.get("TINSNIP_LAB_CACHE") or ".lab/cache").absolute()


def cache_key() -> str:
    """What the cached layout was built from: this module and its scripts (and the suite)."""
    h = hashlib.sha256(SUITE.encode())
    for f in [Path(__file__), *sorted(HERE.iterdir())]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _mirror() -> str:
    try:
        for line in Path("/etc/apt/sources.list.d/debian.sources").read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    from . import LabError

    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise LabError(f"`{' '.join(argv[:4])}` failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-1500:]}")
    return r


def layout_path(cache: Path) -> Path:
    return cache / "oci"


def manifest(cache: Path | str | None = None) -> dict | None:
    """What the cache holds (build.json), or None when it is missing or stale."""
    f = cache_dir(cache) / "build.json"
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("key") == cache_key() and layout_path(f.parent).is_dir() else None


def ensure(cache: Path | str | None = None, log=print, rebuild: bool = False) -> Path:
    """The OCI layout of every lab image, built once per machine (under a lock: labs starting at once
    build it once) and never left half-written (built aside, then renamed)."""
    d = cache_dir(cache)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not rebuild and manifest(d):
            return layout_path(d)
        log(f"building the lab's images from Debian's packages into {d} (once per machine)")
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="build-", dir=d))
        try:
            info = _build(work, log)
            info.update(key=cache_key(), seconds=round(time.monotonic() - t0, 1),
                        layout_bytes=_du(work / "oci"), built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            shutil.rmtree(layout_path(d), ignore_errors=True)
            os.rename(work / "oci", layout_path(d))
            (d / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"built {len(IMAGES)} images in {info['seconds']} s; layout {info['layout_bytes'] // 2**20} MiB")
        return layout_path(d)


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _build(work: Path, log) -> dict:
    mirror, base = _mirror(), work / "base"
    argv = ["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            "--aptopt=Acquire::Languages \"none\"", "--aptopt=APT::Install-Recommends \"false\""]
    argv += [f"--dpkgopt={o}" for o in DPKG_EXCLUDES]
    t = time.monotonic()
    _run([*argv, SUITE, str(base), mirror], timeout=900)
    (base / "etc/resolv.conf").write_text("")
    log(f"base root filesystem: {time.monotonic() - t:.1f} s")
    oci = work / "oci"
    _run(["umoci", "init", "--layout", str(oci)])
    versions: dict[str, dict[str, str]] = {}
    for image in IMAGES:
        t = time.monotonic()
        root = work / image.key
        _run(["bash", str(HERE / "chroot-install.sh"), str(base), str(root), image.pre, *image.packages], timeout=900)
        if image.post:
            _run(["bash", "-euo", "pipefail", "-c", image.post], env={"PATH": PATH, "D": str(root), "HERE": str(HERE)})
        q = _run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}=${Version}\\n", *image.packages])
        versions[image.key] = dict(line.split("=", 1) for line in q.stdout.split())
        ref = f"{oci}:{image.key}"
        _run(["umoci", "new", "--image", ref])
        _run(["umoci", "insert", "--image", ref, str(root), "/"], timeout=600)
        _run(["umoci", "config", "--image", ref, *_config_args(image)])
        shutil.rmtree(root)
        log(f"{image.name}: {time.monotonic() - t:.1f} s ({', '.join(f'{k} {v}' for k, v in versions[image.key].items())})")
    _run(["umoci", "gc", "--layout", str(oci)])
    return {"suite": SUITE, "mirror": mirror, "versions": versions,
            "images": {i.key: {"name": i.name, "hub": list(i.hub)} for i in IMAGES}}


def _config_args(image: Image) -> list[str]:
    args = []
    if image.entrypoint:
        args += [f"--config.entrypoint={w}" for w in image.entrypoint]
    args += [f"--config.cmd={w}" for w in image.cmd]
    args += [f"--config.env={e}" for e in image.env]
    args += [f"--config.volume={v}" for v in image.volumes]
    args += [f"--config.exposedports={p}" for p in image.ports]
    if image.workdir:
        args.append(f"--config.workingdir={image.workdir}")
    if image.stopsignal:
        args.append(f"--config.stopsignal={image.stopsignal}")
    args += [f"--config.label=org.tinsnip.lab.image={image.name}"]
    return args


def skopeo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return _run(["skopeo", "--registries-conf", "/dev/null", *args], timeout=timeout)


def push(layout: Path, registry: str, cert_dir: Path | str, *, names="all", authfile: Path | None = None) -> dict:
    """Copy each image to the registry under its lab name and its Docker Hub names. Docker's v2
    schema 2 manifests, which every Docker engine reads. Returns seconds and digests."""
    t0 = time.monotonic()
    auth = ["--dest-authfile", str(authfile)] if authfile else []
    digests = {}
    for image in IMAGES:
        if names != "all" and image.name not in names:
            continue
        targets = [image.name, *image.hub]
        digest_file = Path(tempfile.mktemp(prefix="digest-"))
        try:
            for i, target in enumerate(targets):
                src = f"oci:{layout}:{image.key}"
                skopeo("copy", "-q", "--format", "v2s2", "--dest-cert-dir", str(cert_dir), *auth,
                       *(["--digestfile", str(digest_file)] if i == 0 else []), src, f"docker://{registry}/{target}")
            digests[image.name] = digest_file.read_text().strip()
        finally:
            digest_file.unlink(missing_ok=True)
    return {"seconds": round(time.monotonic() - t0, 2), "digests": digests}


def archive(layout: Path, name: str, dest: Path) -> Path:
    """A `docker load`-able tar of one image, for hosts that cannot pull."""
    image = by_name(name)
    dest.unlink(missing_ok=True)
    skopeo("copy", "-q", f"oci:{layout}:{image.key}", f"docker-archive:{dest}:{image.name}")
    return dest


def release(layout: Path, registry: str, cert_dir: Path | str, name: str, *, healthy: bool, tag: str | None = None) -> str:
    """Push a new image for `name`'s existing tag (or `tag`): healthy, a release marker added; not
    healthy, the same files but a command that never starts the server, so its health check fails.
    Built from the cached layout in seconds. Returns the new digest."""
    image = by_name(name)
    work = Path(tempfile.mkdtemp(prefix="release-"))
    try:
        oci = work / "oci"
        shutil.copytree(layout, oci)
        ref = f"{oci}:{image.key}"
        stamp = f"{time.time():.6f}"
        marker = work / "marker" / "etc"
        marker.mkdir(parents=True)
        (marker / "tinsnip-lab-release").write_text(f"{stamp} {'good' if healthy else 'broken'}\n")
        _run(["umoci", "insert", "--image", ref, str(marker / "tinsnip-lab-release"), "/etc/tinsnip-lab-release"])
        if not healthy:
            _run(["umoci", "config", "--image", ref, "--clear=config.entrypoint", "--clear=config.cmd",
                  "--config.entrypoint=sh", "--config.cmd=-c",
                  "--config.cmd=echo 'this release is broken: its server does not start' >&2; exec sleep infinity"])
        digest_file = work / "digest"
        target = tag or image.name
        skopeo("copy", "-q", "--format", "v2s2", "--dest-cert-dir", str(cert_dir), "--digestfile", str(digest_file),
               f"oci:{oci}:{image.key}", f"docker://{registry}/{target}")
        for hub in (image.hub if tag is None else ()):
            skopeo("copy", "-q", "--format", "v2s2", "--dest-cert-dir", str(cert_dir), f"oci:{oci}:{image.key}",
                   f"docker://{registry}/{hub}")
        return digest_file.read_text().strip()
    finally:
        shutil.rmtree(work, ignore_errors=True)
