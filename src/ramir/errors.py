"""The errors ramir raises for problems a user can fix (not bugs).

Every such error derives from :class:`RamirError` and, in addition, from the built-in
exception it has always been (``ConfigError`` is still a ``ValueError``, an unknown
registry name still a ``KeyError``), so ``except ValueError`` code keeps working.

The command line prints a :class:`RamirError` as one line (``ramir COMMAND: error: ...``)
and lets any other exception (a bug) show its traceback. This module imports nothing, so
that any module of ramir can import it.
"""

from __future__ import annotations

__all__ = [
    "RamirError",
    "UsageError",
    "UnknownNameError",
    "InvalidArgumentError",
    "ResourceError",
    "CheckpointError",
    "Stopped",
]


class RamirError(Exception):
    """Base class of ramir's user-facing errors: bad input, a missing or broken file, a
    machine that lacks what a job needs. Its message is meant to be read by the user."""


class UsageError(RamirError, ValueError):
    """Arguments (on the command line or to a function) that cannot work together."""


class UnknownNameError(RamirError, KeyError):
    """A name that is not among the choices (a model, a layer, a dataset...).

    Unlike a plain ``KeyError``, ``str()`` is the message itself, not its ``repr``.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(RamirError, TypeError):
    """A value of the wrong type for a named argument (``embed_dim='abc'``)."""


class ResourceError(RamirError, RuntimeError):
    """The machine lacks what the job needs: a GPU, enough memory, an optional package."""


class CheckpointError(RamirError, ValueError):
    """A checkpoint cannot be read or does not fit the model; the message says why.

    Here, not in :mod:`ramir.checkpoint`, so that a backbone's own checkpoint detection
    (in :mod:`ramir.models`, below the checkpoint readers) can raise it too.
    """


class Stopped(BaseException):
    """The process was asked to stop (SIGTERM: by ``torchrun`` because another process of
    the run failed, or by the user); the message says what is kept and how to resume.

    Like ``KeyboardInterrupt`` it is not an ``Exception``, so that no ``except
    Exception`` on the way (an image reader that turns any failure into "cannot read
    image") can mistake it for a problem of the current file and carry on. The command
    line prints it as an error and exits with 143 (128 + SIGTERM).
    """
