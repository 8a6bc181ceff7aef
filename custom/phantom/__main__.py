"""``python -m custom.phantom generate|validate|fit``: see :mod:`custom.phantom.cli`."""

from custom.phantom.cli import main

main()
