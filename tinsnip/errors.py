"""tinsnip's own errors. The task layer turns them into a message and an exit code, no traceback."""


class TinsnipError(Exception):
    """An error tinsnip can explain to its user; `code` is the process exit code."""

    code = 1

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InputError(TinsnipError):
    """Bad input or configuration (a name, an env, hosts.yaml): exit 2, nothing touched."""

    code = 2


class RemoteError(TinsnipError):
    """A remote step failed, or a host could not be reached: exit 1."""

    code = 1
