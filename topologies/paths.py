"""Where the labs find the repository and the traffic probe they run inside lab hosts."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "topologies", "probe.py")
