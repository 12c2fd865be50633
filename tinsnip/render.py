"""Jinja over templates/: StrictUndefined, and a template error names the template and the line."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from .errors import InputError

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@cache
def _env():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, /, **values) -> str:
    import jinja2

    try:
        return _env().get_template(template).render(**values)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template {exc.name or template}, line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise InputError(f"template {template}: {exc.message}") from None
    except jinja2.TemplateNotFound:
        raise InputError(f"template {template} not found in {TEMPLATES}") from None
