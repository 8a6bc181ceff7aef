"""Errors in what the user gave, and how bundle runs report them: one line, no traceback.

A :class:`UserError` is a problem the user can fix without reading code: an unreadable or unsuitable
input, a missing file, an output folder that cannot take the results, settings that do not fit the
weights. Each subclass is also the built-in exception it refines (``InvalidInputError`` is a
``ValueError``, ``MissingInputError`` a ``FileNotFoundError``, ...), so callers that catch the
built-ins keep working.

:func:`report_user_errors` (an early step of every workflow's ``initialize``) makes a
``python -m monai.bundle run ...`` process that ends in a user error print one line on stderr,
``error: <message>``, and exit with status 1, instead of MONAI's 250-line chain that ends in "Failed to
evaluate ConfigExpression". ``--debug true`` keeps the full traceback. Any other exception (a
programming error) keeps its traceback too.
"""

from __future__ import annotations

import sys
from types import TracebackType

DEBUG_HINT = "run with --debug true for the traceback"


class UserError(Exception):
    """A problem with the inputs, outputs, weights or settings a user gave; its message says how to fix it."""


class InvalidInputError(UserError, ValueError):
    """An input file, datalist or setting that exists but cannot be used (unreadable, wrong shape, ...)."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the run needs is not there."""


class OutputFolderError(UserError, OSError):
    """The output folder cannot be created or written to."""


class ExistingOutputError(UserError, FileExistsError):
    """A result would replace an earlier one, and overwriting was not asked for."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The first :class:`UserError` in ``error``'s chain of causes and contexts, or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (line breaks become ``; ``)."""
    return "; ".join(part.strip() for part in str(error).splitlines() if part.strip())


def report_user_errors(debug: bool = False) -> bool:
    """In a ``python -m monai.bundle`` process, report uncaught user errors in one line on stderr.

    Installs a ``sys.excepthook`` that prints ``error: <message> (run with --debug true ...)`` for an
    exception whose chain holds a :class:`UserError`; the process then exits with status 1 as for
    any uncaught exception. Other exceptions go to the previous hook with their traceback. Nothing is
    installed with ``debug``, or in any other process (a script, a test, a MONAI Label server), which
    keeps its usual tracebacks.

    Returns:
        Whether the hook was installed.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if debug or spec is None or spec.name != "monai.bundle.__main__":
        return False
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        user = user_error_in(error)
        if user is None:
            previous(kind, error, traceback)
            return
        sys.stderr.flush()
        sys.stderr.write(f"error: {one_line(user)} ({DEBUG_HINT})\n")

    sys.excepthook = hook
    return True


__all__ = [
    "DEBUG_HINT",
    "ExistingOutputError",
    "InvalidInputError",
    "MissingInputError",
    "OutputFolderError",
    "UserError",
    "one_line",
    "report_user_errors",
    "user_error_in",
]
