"""The microsegmentation app: Kubernetes NetworkPolicy and Cilium L3/L4 in the switches.

Run it with `osken-manager apps/microseg` (or `apps.microseg`).
The app is `Microseg`, in `apps/microseg/app.py`.
"""

from apps.microseg.app import Microseg

__all__ = ["Microseg"]
