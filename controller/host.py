"""The one os-ken app of the suite: it makes os-ken create the shared core (`CoreApp`).

osken-manager loads this module for every set of suite apps and hands the context the apps'
`SuiteApp` classes (`CoreApp.setup`); app files hold no os-ken code. Kept apart from
controller/shim.py because os-ken loads the first app class a module defines.
"""

from __future__ import annotations

from os_ken.base import app_manager
from os_ken.ofproto import ofproto_v1_3 as ofp

from controller.shim import CONTEXT, CoreApp


class SuiteHost(app_manager.OSKenApp):
    """Declares the shared CoreApp context; the suite's apps live inside it."""

    OFP_VERSIONS = [ofp.OFP_VERSION]
    _CONTEXTS = {CONTEXT: CoreApp}
