"""The IP firewall app: ordered rules, blocked sources, rate limits, schedules, XDP.

Run it with `osken-manager apps/firewall` (or `apps.firewall`).
The app is `Firewall`, in `apps/firewall/app.py`.
"""

from apps.firewall.app import Firewall

__all__ = ["Firewall"]
