"""The command-line tools, each ``python -m custom.cli.<tool>``: phantoms, samples, export, speed, benchmark.

Nothing in the package imports them. Each runs its commands through :func:`run_commands`, so a
mistake in what the user gave (a bad value, a missing input, an existing output) ends in one line on
stderr with exit status 1, as the bundle's workflows do (:mod:`custom.errors`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import fire
from custom.errors import one_line

USER_MISTAKES = (ValueError, FileExistsError, FileNotFoundError)  # the user errors of custom.errors included


def run_commands(
    commands: Callable | dict[str, Callable],
    mistakes: tuple[type[BaseException], ...] = USER_MISTAKES,
    **fire_options: Any,
) -> None:
    """Run ``commands`` (a function, or commands by name) with python-fire; ``mistakes`` end in one line.

    A long-running tool whose own ``ValueError`` deserves a traceback narrows ``mistakes`` to
    :class:`~custom.errors.UserError`.
    """
    try:
        fire.Fire(commands, **fire_options)
    except mistakes as error:
        sys.exit(f"error: {one_line(error)}")


__all__ = ["USER_MISTAKES", "run_commands"]
