"""The `tin` command: the same task tree as `inv` with tasks.py, installed with the package."""

from __future__ import annotations

from invoke import Program

from . import __version__
from .tasks import namespace

program = Program(namespace=namespace, version=__version__, name="tinsnip", binary="tin")


def main() -> None:
    program.run()
