"""Settings: flags beat the environment (TINSNIP_*), which beats config files, which beat hosts.yaml.

Config files are dotenv files of TINSNIP_* variables: `tinsnip.env` beside the inventory, then
`$XDG_CONFIG_HOME/tinsnip/tinsnip.env`. They are where a sudo password may live outside the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from . import inventory as inventory_mod
from . import smep
from .errors import InputError

DEFAULT_INVENTORY = "hosts.yaml"


def _user_config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tinsnip" / "tinsnip.env"


def inventory_path(flag: str | None) -> Path:
    if flag is not None:
        check_inventory_flag(flag)
    return Path(flag or os.environ.get("TINSNIP_INVENTORY") or DEFAULT_INVENTORY)


def check_inventory_flag(flag: str) -> Path:
    """An --inventory given on the command line must name a readable file (exit 2 otherwise)."""
    if not flag.strip():
        raise InputError("empty --inventory: give the inventory file, or leave the flag out for "
                         "TINSNIP_INVENTORY, then ./hosts.yaml")
    if any(ord(ch) < 32 for ch in flag):
        raise InputError(f"invalid --inventory {flag!r}: a file name has no control characters")
    path = Path(flag)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise InputError(f"--inventory {flag}: {what}; give the inventory file (hosts.yaml)")
    return path


@dataclass
class Settings:
    inventory: inventory_mod.Inventory
    sheet: str
    values: dict[str, str] = field(default_factory=dict)  # merged TINSNIP_* values (env wins)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)

    def sudo_password(self, host: inventory_mod.Host) -> str | None:
        """The sudo password for a host: per-host variable, then the NAS one, then the shared one."""
        keys = [f"TINSNIP_SUDO_PASSWORD_{host.name.upper().replace('-', '_')}"]
        if host.role == "nas":
            keys.append("TINSNIP_NAS_SUDO_PASSWORD")
        keys.append("TINSNIP_SUDO_PASSWORD")
        for key in keys:
            if self.values.get(key):
                return self.values[key]
        return None

    def secrets(self) -> list[str]:
        return [v for k, v in self.values.items() if "PASSWORD" in k and v]


def config_values(inventory_file: Path) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in (_user_config_file(), inventory_file.parent / "tinsnip.env"):
        if source.is_file():
            merged.update({k: v for k, v in dotenv_values(source).items() if k.startswith("TINSNIP_") and v is not None})
    merged.update({k: v for k, v in os.environ.items() if k.startswith("TINSNIP_")})
    return merged


def load(inventory: str | None = None, sheet: str | None = None) -> Settings:
    path = inventory_path(inventory)
    inv = inventory_mod.load(path)
    values = config_values(path)
    chosen = sheet or values.get("TINSNIP_SHEET") or inv.sheet
    smep.check_name(chosen, "sheet")
    return Settings(inventory=inv, sheet=chosen, values=values)


def check_sheet_flag(sheet: str | None) -> str | None:
    if sheet is None:
        return None
    if sheet == "":
        raise InputError("empty --sheet: give a sheet name, or leave the flag out for the inventory's sheet")
    return smep.check_name(sheet, "sheet")
