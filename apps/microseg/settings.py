"""The config the microsegmentation app reads: `namespaces`, `endpoints` and `policies`.

`policies` lists files or folders (every *.yaml / *.yml in them, in name order) of YAML
documents, used unmodified. Each file and folder is watched: editing, adding or removing a
policy file reloads the config. The section is shared with the services app, which enforces the
Istio kinds in it (controller/policydocs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from apps.microseg.policy import Policy, check_unique, parse_policy
from controller.config import Config, Document, DocumentCache
from controller.endpoints import Endpoint, labels_of, parse_endpoints
from controller.flowlog import logging_on


@dataclass
class MicrosegSettings:
    namespaces: dict[str, tuple] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    log: bool = False  # the config has a flow_log: denies are logged (controller/flowlog.py)


def parse_namespaces(config: Config) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for i, spec in enumerate(config.section("namespaces") or []):
        if spec["name"] in out:
            raise config.error(("namespaces", i, "name"), f"namespace {spec['name']!r} twice")
        out[spec["name"]] = labels_of(spec.get("labels"))
    return out


def parse_microseg(
    section,
    config: Config,
    documents: DocumentCache,
    parse: Callable[[Document], list[Policy]] = parse_policy,
) -> MicrosegSettings:
    """Everything checked; the first problem is raised, located. `documents` keeps what the
    policy files parsed to (by `parse`, one function for the app's life), so a reload parses
    again only the files that changed."""
    settings = MicrosegSettings(
        parse_namespaces(config), parse_endpoints(config), log=logging_on(config)
    )
    for _, path in config.listed_files("policies"):
        settings.policies += documents.parsed(path, parse)
    check_unique(settings.policies)
    return settings
