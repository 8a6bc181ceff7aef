"""PSCT-Net bundle package: biplanar X-ray geometry, projector, physics and (later) networks.

The bundle configs in ``bundle/configs`` instantiate objects from this package; it never imports
from ``bundle/``.
"""

__version__ = "0.1.0"
