"""JSON Schemas of the routing documents users bring: the shapes their APIs define.

Each document is checked against its kind's schema before it is read, so a value of the wrong
type (a path written as a string, a port written as a name) is refused with file, line and field
instead of failing half-way through. The schemas give the shapes: types, required fields, ranges,
and the fields each object may have (anything else is an "unknown key" at its line). Which
fields the switch can honour is decided afterwards (routing.py): the L7 fields below are
known here, so that the reader can reject them by name.

Sources: Istio's networking/v1 API reference (VirtualService, DestinationRule), the Gateway
API v1 reference (HTTPRoute: PortNumber is an integer 1-65535, matches are objects; weight ranges
are checked by the reader), and Knative Serving's networking.knative.dev/v1alpha1 Ingress
(pkg/apis/networking/v1alpha1/ingress_types.go: percent 0-100, servicePort a port). Labels are
Kubernetes' map[string]string: strings only, as everywhere in the suite
(controller.config.LABELS).
"""

from __future__ import annotations

from apps.services.trafficpolicy import TRAFFIC_POLICY_SCHEMA
from controller.config import LABELS

GATEWAY_MAX_WEIGHT = 1_000_000

# Fields a switch cannot see or do, per place; naming them is the whole point.
HTTP_MATCH_L7 = {
    "uri": "the request URI",
    "scheme": "the URI scheme",
    "method": "the HTTP method",
    "authority": "the HTTP authority (Host)",
    "headers": "HTTP headers",
    "queryParams": "query parameters",
    "withoutHeaders": "HTTP headers",
    "ignoreUriCase": "the request URI",
    "gateways": "mesh gateways",
}
ISTIO_RULE_L7 = {
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirror_percent",
    "mirrorPercent",
    "corsPolicy",
    "headers",
}

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_OBJECT = {"type": "object"}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_STRING_MATCH = {
    "type": "object",
    "properties": {"exact": _STRING, "prefix": _STRING, "regex": _STRING},
}
_STRING_MATCHES = {"type": "object", "additionalProperties": _STRING_MATCH}
_METADATA = {
    "type": "object",
    "properties": {
        "name": _STRING,
        "namespace": _STRING,
        "labels": LABELS,
        "annotations": LABELS,
    },
}

# --- Istio networking.istio.io ---------------------------------------------------------------

_ISTIO_DESTINATION = {
    "type": "object",
    "required": ["host"],
    "additionalProperties": False,
    "properties": {
        "host": _STRING,
        "subset": _STRING,
        "port": {"type": "object", "properties": {"number": _PORT}},
    },
}
_ISTIO_ROUTE = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["destination"],
        "additionalProperties": False,
        "properties": {
            "destination": _ISTIO_DESTINATION,
            "weight": {"type": "integer", "minimum": 0},
            "headers": _OBJECT,
        },
    },
}
_ISTIO_HTTP_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": _STRING,
        "uri": _STRING_MATCH,
        "scheme": _STRING_MATCH,
        "method": _STRING_MATCH,
        "authority": _STRING_MATCH,
        "headers": _STRING_MATCHES,
        "withoutHeaders": _STRING_MATCHES,
        "queryParams": _STRING_MATCHES,
        "ignoreUriCase": {"type": "boolean"},
        "port": _PORT,
        "sourceLabels": LABELS,
        "sourceNamespace": _STRING,
        "gateways": _STRINGS,
        "statPrefix": _STRING,
    },
}
_ISTIO_L4_MATCH = {
    "type": "object",
    "properties": {
        "destinationSubnets": _STRINGS,
        "port": _PORT,
        "sourceLabels": LABELS,
        "sourceNamespace": _STRING,
        "sourceSubnet": _STRING,
        "gateways": _STRINGS,
    },
}


# A TCP match: the L4 fields, and the HTTP ones, which the reader rejects by name.
_ISTIO_TCP_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{key: {} for key in HTTP_MATCH_L7},
        **_ISTIO_L4_MATCH["properties"],
        "name": _STRING,
        "statPrefix": _STRING,
    },
}


# Istio's Percent ({value: 0-100}); httpactions.py reads a bare number too, and says the range.
_ISTIO_PERCENT = {"type": ["object", "number"], "properties": {"value": {"type": "number"}}}
_ISTIO_HEADER_OPERATIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "set": {"type": "object", "additionalProperties": _STRING},
        "add": {"type": "object", "additionalProperties": _STRING},
        "remove": _STRINGS,
    },
}
# The shapes of Istio's HTTPRoute actions (networking.istio.io/v1 HTTPRetry, HTTPFaultInjection,
# HTTPRewrite, Headers, HTTPMirrorPolicy), so a value of the wrong type is refused at its line;
# which of them the waypoint does is httpactions.py's to say.
_ISTIO_ACTIONS = {
    "retries": {
        "type": "object",
        "properties": {
            "attempts": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "perTryTimeout": _STRING,
            "retryOn": _STRING,
            "retryRemoteLocalities": {"type": "boolean"},
        },
    },
    "fault": {
        "type": "object",
        "properties": {
            "delay": {
                "type": "object",
                "properties": {"fixedDelay": _STRING, "percentage": _ISTIO_PERCENT},
            },
            "abort": {
                "type": "object",
                "properties": {
                    # Envoy's FaultAbort.http_status: [200, 600)
                    "httpStatus": {"type": "integer", "minimum": 200, "maximum": 599},
                    "percentage": _ISTIO_PERCENT,
                },
            },
        },
    },
    "mirror": _ISTIO_DESTINATION,
    "mirrors": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["destination"],
            "properties": {"destination": _ISTIO_DESTINATION, "percentage": _ISTIO_PERCENT},
        },
    },
    "mirrorPercentage": _ISTIO_PERCENT,
    "headers": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"request": _ISTIO_HEADER_OPERATIONS, "response": _ISTIO_HEADER_OPERATIONS},
    },
    "rewrite": {"type": "object", "properties": {"uri": _STRING, "authority": _STRING}},
}


def _istio_rules(match: dict, closed: bool = True) -> dict:
    """Rules of an Istio route list; `closed`: no fields but the known ones (and the L7 ones,
    which the reader rejects by name or gives the waypoint)."""
    rule = {
        "type": "object",
        "properties": {
            **{key: {} for key in ISTIO_RULE_L7},
            **_ISTIO_ACTIONS,
            "name": _STRING,
            "match": {"type": "array", "items": match},
            "route": _ISTIO_ROUTE,
            "timeout": _STRING,
        },
    }
    if closed:
        rule["additionalProperties"] = False
    return {"type": "array", "items": rule}


VIRTUAL_SERVICE = {
    "type": "object",
    "properties": {
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "hosts": _STRINGS,
                "gateways": _STRINGS,
                "exportTo": _STRINGS,
                "http": _istio_rules(_ISTIO_HTTP_MATCH),
                "tcp": _istio_rules(_ISTIO_TCP_MATCH),
                "tls": _istio_rules(_ISTIO_L4_MATCH, closed=False),  # refused whole: TLS
            },
        },
    },
}

DESTINATION_RULE = {
    "type": "object",
    "properties": {
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["host"],
            "properties": {
                "host": _STRING,
                "trafficPolicy": TRAFFIC_POLICY_SCHEMA,
                "exportTo": _STRINGS,
                "workloadSelector": _OBJECT,
                "subsets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": _STRING,
                            "labels": LABELS,
                            "trafficPolicy": TRAFFIC_POLICY_SCHEMA,
                        },
                    },
                },
            },
        },
    },
}

# --- Gateway API gateway.networking.k8s.io -----------------------------------------------------

_NAME_VALUE_MATCH = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name", "value"],
        "properties": {
            "type": {"enum": ["Exact", "RegularExpression"]},
            "name": _STRING,
            "value": _STRING,
        },
    },
}
_FILTERS = {"type": "array", "items": {"type": "object", "properties": {"type": _STRING}}}

HTTP_ROUTE = {
    "type": "object",
    "properties": {
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "group": _STRING,
                            "kind": _STRING,
                            "namespace": _STRING,
                            "name": _STRING,
                            "sectionName": _STRING,
                            "port": _PORT,
                        },
                    },
                },
                "hostnames": _STRINGS,
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": _STRING,
                            "matches": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "properties": {
                                                "type": {
                                                    "enum": [
                                                        "Exact",
                                                        "PathPrefix",
                                                        "RegularExpression",
                                                    ]
                                                },
                                                "value": _STRING,
                                            },
                                        },
                                        "headers": _NAME_VALUE_MATCH,
                                        "queryParams": _NAME_VALUE_MATCH,
                                        "method": _STRING,
                                    },
                                },
                            },
                            "filters": _FILTERS,
                            "backendRefs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "group": _STRING,
                                        "kind": _STRING,
                                        "name": _STRING,
                                        "namespace": _STRING,
                                        "port": _PORT,
                                        "weight": {
                                            "type": "integer",
                                            "minimum": 0,
                                            "maximum": GATEWAY_MAX_WEIGHT,
                                        },
                                        "filters": _FILTERS,
                                    },
                                },
                            },
                            "timeouts": _OBJECT,
                        },
                    },
                },
            },
        },
    },
}

# --- Knative networking.knative.dev ------------------------------------------------------------

# Fields of a Knative Ingress path and split a switch cannot honour: named when refused.
KNATIVE_PATH_L7 = {
    "headers": "a match on HTTP headers",
    "appendHeaders": "a header edit (appendHeaders)",
    "rewriteHost": "a Host rewrite (rewriteHost)",
    "timeout": "a request timeout",
    "retries": "request retries",
}
KNATIVE_SPLIT_L7 = {"appendHeaders": "a header edit (appendHeaders)"}

_KNATIVE_SPLIT = {
    "type": "object",
    "required": ["serviceName"],
    "additionalProperties": False,
    "properties": {
        **{key: {} for key in KNATIVE_SPLIT_L7},
        "serviceName": _STRING,
        "serviceNamespace": _STRING,
        "servicePort": _PORT,
        "percent": {"type": "integer", "minimum": 0, "maximum": 100},
    },
}
_KNATIVE_PATH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        **{key: {} for key in KNATIVE_PATH_L7},
        "path": _STRING,
        "splits": {"type": "array", "items": _KNATIVE_SPLIT},
    },
}

# Knative Serving's networking.knative.dev/v1alpha1 Ingress (the KIngress its net-* plugins
# read): rules of hosts and HTTP paths, each path a percent split over services.
KNATIVE_INGRESS = {
    "type": "object",
    "properties": {
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "tls": {"type": "array"},
                "httpOption": _STRING,
                "visibility": _STRING,
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "hosts": _STRINGS,
                            "visibility": {"enum": ["ExternalIP", "ClusterLocal"]},
                            "http": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"paths": {"type": "array", "items": _KNATIVE_PATH}},
                            },
                        },
                    },
                },
            },
        },
    },
}
