"""Whose each config section is: the core's own, a loaded app's, or a suite app's not loaded.

What a config may hold depends on the apps loaded (each declares the sections it reads and their
JSON Schemas as class data, `SuiteApp.config_schemas`) and on nothing else: not on which modules
happen to have been imported. A section of one of the suite's own apps that is not loaded (say
`chains:` with only the firewall) is not an error: the config is shared by controllers that run
different apps, so it is logged as a warning that names the app that reads it, and left
unchecked. Any other key is an error, "unknown key", at its line.

>>> sorted(CORE_SCHEMAS)
['controller', 'discovery', 'endpoints', 'flow_log', 'namespaces']
>>> SUITE_SECTIONS["chains"]
'apps.chains'
"""

from __future__ import annotations

from types import MappingProxyType

from controller.endpoints import ENDPOINTS_SCHEMA, NAMESPACES_SCHEMA
from controller.flowlog import FLOW_LOG_SCHEMA
from controller.pipeline import SUITE_APPS

# The core's sections: what it reads itself, and the hosts and namespaces apps share.
CORE_SCHEMAS = MappingProxyType(
    {
        "namespaces": NAMESPACES_SCHEMA,
        "endpoints": ENDPOINTS_SCHEMA,
        "discovery": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "probation": {"type": "number", "minimum": 0, "maximum": 60},
                "lldp_interval": {"type": "number", "minimum": 0.1, "maximum": 3600},
            },
        },
        "controller": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "packet_in_rate": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                "packet_in_burst": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            },
        },
        "flow_log": FLOW_LOG_SCHEMA,  # controller/flowlog.py
    }
)

# The suite's own apps, by the sections they read, from the pipeline declaration's SUITE_APPS
# (tests/unit/test_app_contract.py keeps it true to the apps' class data). Only names: the core
# imports no app.
# A section that two apps share (`policies`) names both.
SUITE_SECTIONS = MappingProxyType(
    {
        section: " or ".join(m for m, read in SUITE_APPS.values() if section in read)
        for _, sections in SUITE_APPS.values()
        for section in sections
    }
)
