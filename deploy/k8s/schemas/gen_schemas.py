#!/usr/bin/env python3
"""Writes the minimal openAPI-v3 (JSON Schema) of the monitoring.coreos.com/v1 CRDs used here.

Hand-written from the Prometheus Operator API (v0.7x-0.8x, pkg/apis/monitoring/v1): the fields
guard's manifests can use, with the types, patterns and required keys of the real CRDs, and
additionalProperties: false so a misspelt field fails validation (the API server would silently
prune it). Regenerate with `python deploy/k8s/schemas/gen_schemas.py`.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DURATION = {
    "type": "string",
    "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
    "(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
INT_OR_STR = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
SECRET_KEY = {
    "type": "object",
    "required": ["key"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"},
        "name": {"type": "string"},
        "optional": {"type": "boolean"},
    },
}
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {
                        "type": "string",
                        "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                    },
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
RELABEL = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sourceLabels": {
                "type": "array",
                "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
            },
            "separator": {"type": "string"},
            "targetLabel": {"type": "string"},
            "regex": {"type": "string"},
            "modulus": {"type": "integer", "format": "int64"},
            "replacement": {"type": "string"},
            "action": {
                "type": "string",
                "enum": [
                    "replace",
                    "Replace",
                    "keep",
                    "Keep",
                    "drop",
                    "Drop",
                    "hashmod",
                    "HashMod",
                    "labelmap",
                    "LabelMap",
                    "labeldrop",
                    "LabelDrop",
                    "labelkeep",
                    "LabelKeep",
                    "lowercase",
                    "Lowercase",
                    "uppercase",
                    "Uppercase",
                    "keepequal",
                    "KeepEqual",
                    "dropequal",
                    "DropEqual",
                ],
            },
        },
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STR_MAP,
        "annotations": STR_MAP,
    },
}

ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "port": {"type": "string"},
        "targetPort": INT_OR_STR,
        "path": {"type": "string"},
        "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "tlsConfig": {"type": "object"},
        "bearerTokenFile": {"type": "string"},
        "bearerTokenSecret": SECRET_KEY,
        "authorization": {"type": "object"},
        "basicAuth": {"type": "object"},
        "oauth2": {"type": "object"},
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "metricRelabelings": RELABEL,
        "relabelings": RELABEL,
        "proxyUrl": {"type": "string"},
        "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
    },
}

SERVICE_MONITOR = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "ServiceMonitor (monitoring.coreos.com/v1)",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {"type": "array", "items": ENDPOINT},
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "sampleLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "targetLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "labelLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "labelNameLengthLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "labelValueLengthLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "keepDroppedTargets": {"type": "integer", "format": "int64", "minimum": 0},
                "scrapeClass": {"type": "string", "minLength": 1},
                "scrapeProtocols": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "enum": [
                            "PrometheusProto",
                            "OpenMetricsText0.0.1",
                            "OpenMetricsText1.0.0",
                            "PrometheusText0.0.4",
                            "PrometheusText1.0.0",
                        ],
                    },
                },
                "attachMetadata": {"type": "object", "properties": {"node": {"type": "boolean"}}},
            },
        },
    },
}

RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": INT_OR_STR,
        "for": DURATION,
        "keep_firing_for": {"type": "string", "minLength": 1},
        "labels": STR_MAP,
        "annotations": STR_MAP,
    },
    "oneOf": [
        {"required": ["record"], "not": {"required": ["alert"]}},
        {"required": ["alert"], "not": {"required": ["record"]}},
    ],
}
PROMETHEUS_RULE = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "PrometheusRule (monitoring.coreos.com/v1)",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "query_offset": DURATION,
                            "limit": {"type": "integer"},
                            "labels": STR_MAP,
                            "partial_response_strategy": {
                                "type": "string",
                                "pattern": "^([Aa][Bb][Oo][Rr][Tt]|[Ww][Aa][Rr][Nn])?$",
                            },
                            "rules": {"type": "array", "items": RULE},
                        },
                    },
                }
            },
        },
    },
}

if __name__ == "__main__":
    for name, schema in [
        ("servicemonitor_v1.json", SERVICE_MONITOR),
        ("prometheusrule_v1.json", PROMETHEUS_RULE),
    ]:
        (HERE / name).write_text(json.dumps(schema, indent=2) + "\n")
        print("wrote", name)
