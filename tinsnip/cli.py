"""The `tin` command: the same task tree as `inv` with tasks.py, installed with the package."""

from __future__ import annotations

from invoke import Program
from invoke.exceptions import Exit, ParseError

from . import __version__
from .tasks import namespace


class TinProgram(Program):
    """invoke's Program, with command-line syntax errors reported as input errors (exit 2)."""

    def _input_error(self, exc: ParseError) -> Exit:
        return Exit(f"tin: {exc} (see `tin --list` and `tin TASK --help`)", code=2)

    def parse_core(self, argv):
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise self._input_error(exc) from None

    def parse_tasks(self):
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise self._input_error(exc) from None

    def parse_cleanup(self):
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise self._input_error(exc) from None


program = TinProgram(namespace=namespace, version=__version__, name="tinsnip", binary="tin")


def main() -> None:
    program.run()
