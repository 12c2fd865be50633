"""invoke entry point: `inv --list` shows tinsnip's task tree (the same one `tin` serves)."""

from tinsnip.tasks import namespace as ns  # noqa: F401
