"""``python -m custom.monailabel app FOLDER``: write a MONAI Label app folder that serves this bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import fire
from custom.files import atomic_write

CUSTOM_PARENT = Path(__file__).resolve().parents[2]  # the folder holding the ``custom`` package

MAIN = '''"""MONAI Label app serving the pediatric skull CT bundle at {root}.

Written by ``python -m custom.monailabel app``; start it with
``monailabel start_server --app {app} --studies <folder of X-ray pairs>``.
"""

import sys

sys.path.insert(0, {root!r})

from custom.monailabel.app import PediatricSkullCT  # noqa: E402,F401  (MONAI Label finds the app class here)
'''


def app(folder: str, overwrite: bool = False) -> str:
    """Write ``FOLDER/main.py``, a MONAI Label app whose class is :class:`custom.monailabel.app.PediatricSkullCT`.

    Args:
        folder: the app folder (created; MONAI Label adds ``model/``, ``lib/``, ``logs/``, ``bin/``).
        overwrite: replace an existing ``main.py``. Defaults to False.

    Returns:
        the path of ``main.py``.

    Raises:
        FileExistsError: ``main.py`` exists and ``overwrite`` is False.
    """
    target = Path(folder).expanduser().resolve() / "main.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = MAIN.format(root=str(CUSTOM_PARENT), app=target.parent)
    atomic_write(target, lambda temporary: Path(temporary).write_text(text), overwrite)
    return str(target)


def main() -> None:
    try:
        fire.Fire({"app": app})
    except FileExistsError as error:
        sys.exit(f"error: {error} (pass --overwrite true to replace it)")


if __name__ == "__main__":
    main()
