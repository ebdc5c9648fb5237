"""The services app: weighted canaries behind virtual IPs, routed by Istio and Gateway API.

Run it with `osken-manager apps/services` (or `apps.services`).
The app is `Services`, in `apps/services/app.py`.
"""

from apps.services.app import Services

__all__ = ["Services"]
