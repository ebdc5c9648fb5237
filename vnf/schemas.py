"""JSON Schemas of the Kubernetes documents a VNF manifest holds: their shapes, checked before
they are read (controller.config.Document.validate), so a value of the wrong type is refused
with file, line and field.

Sources: Kubernetes API reference v1.30, apps/v1 Deployment (DeploymentSpec, PodTemplateSpec,
Container, EnvVar, ConfigMapKeySelector, ResourceRequirements) and v1 ConfigMap (`data` is
map[string]string). Only the fields the VNF runtime reads are typed here; what the schema
cannot say well (a DNS label, the replicas range, one container per pod, quantities, the
selector matching the labels) is checked by vnf/manifest.py with its own message.
"""

from __future__ import annotations

from controller.config import LABELS

_STRING = {"type": "string"}


def _object(properties: dict, *required: str, nullable: bool = False) -> dict:
    """An object schema with `properties`, the `required` keys, and null allowed if `nullable`
    (YAML's empty value, read as "not given")."""
    schema = {"type": ["object", "null"] if nullable else "object", "properties": properties}
    return {**schema, "required": list(required)} if required else schema


_QUANTITIES = _object(
    {"memory": {"type": ["string", "number"]}, "cpu": {"type": ["string", "number"]}},
    nullable=True,
)
_KEY_REF = _object({"name": _STRING, "key": _STRING}, "name", "key", nullable=True)
ENV_VAR = _object(
    {
        "name": _STRING,
        "value": {"type": ["string", "null"]},  # null: the empty string, as the API server reads it
        "valueFrom": _object({"configMapKeyRef": _KEY_REF}, nullable=True),
    },
    "name",
)
_CAPABILITIES = _object({"add": {"type": ["array", "null"], "items": _STRING}}, nullable=True)
CONTAINER = _object(
    {
        "name": _STRING,
        "image": _STRING,
        "securityContext": _object({"capabilities": _CAPABILITIES}, nullable=True),
        "env": {"type": ["array", "null"], "items": ENV_VAR},
        "resources": _object({"limits": _QUANTITIES, "requests": _QUANTITIES}, nullable=True),
    },
    "name",
    "image",
)
_POD_TEMPLATE = _object(
    {
        "metadata": _object({"labels": LABELS}, nullable=True),
        "spec": _object({"containers": {"type": "array", "items": CONTAINER}}, "containers"),
    },
    "spec",
)
DEPLOYMENT = _object(
    {
        "metadata": _object({"name": _STRING, "namespace": _STRING}, "name"),
        "spec": _object(
            {
                "replicas": {"type": "integer"},
                "selector": _object({"matchLabels": LABELS}, nullable=True),
                "template": _POD_TEMPLATE,
            },
            "template",
        ),
    },
    "metadata",
    "spec",
)
CONFIGMAP = _object(
    {
        "metadata": _object({"name": _STRING}, "name"),
        "data": {"type": ["object", "null"], "additionalProperties": _STRING},
    },
    "metadata",
)
