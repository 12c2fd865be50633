"""The deploy manifest: which files of a deployed service tinsnip copied from the catalog. Pure code.

A deploy of catalog service S onto machine-env M writes /mnt/M/.machine/deployed/S.files (on the
NAS, beside machine.env): one relative path per line, every file it copied into /mnt/M/service/S.
Only those files may be replaced or removed by a later deploy or a service.remove; any other file in
the service directory was written by the service (or by hand) and is never touched. A service
directory deployed before manifests existed has none: nothing in it is removed, and the next deploy
writes one.
"""

from __future__ import annotations

from ..smep import MachineEnv

HEADER = ("# Files tinsnip copied from the catalog into {dir}, kept by tinsnip: a deploy replaces or removes",
          "# only these; every other file there belongs to the service.")


def manifest_path(m: MachineEnv, service: str) -> str:
    return f"{m.mount}/.machine/deployed/{service}.files"


def deployed_dir(m: MachineEnv) -> str:
    return f"{m.mount}/.machine/deployed"


def parse_manifest(text: str | None) -> set[str] | None:
    """The paths a manifest lists; None when there is no manifest."""
    if text is None:
        return None
    return {line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def render_manifest(service_dir: str, files) -> str:
    head = [h.format(dir=service_dir) for h in HEADER]
    return "\n".join([*head, *sorted(files)]) + "\n"


def stale_files(manifest: set[str] | None, present: set[str], wanted: set[str]) -> list[str]:
    """Files a previous deploy copied, still present, that the catalog no longer ships."""
    if manifest is None:
        return []
    return sorted((manifest & present) - wanted)


def foreign_files(manifest: set[str] | None, present: set[str], wanted: set[str], tinsnip: set[str]) -> list[str]:
    """Files in the service directory tinsnip did not put there (kept by every deploy and remove)."""
    ours = (manifest or set()) | wanted | tinsnip
    return sorted(present - ours)
