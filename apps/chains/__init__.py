"""The service chains app: traffic classes steered through containerized VNFs in order.

Run it with `osken-manager apps/chains` (or `apps.chains`).
The app is `ServiceChains`, in `apps/chains/app.py`.
"""

from apps.chains.app import ServiceChains

__all__ = ["ServiceChains"]
