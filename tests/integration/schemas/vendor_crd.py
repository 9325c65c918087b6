"""Turn an upstream CustomResourceDefinition into the JSON schema the manifest tests validate against.

    python tests/integration/schemas/vendor_crd.py CRD.yaml VERSION > tests/integration/schemas/KIND-VERSION.json

Takes `spec.versions[name=VERSION].schema.openAPIV3Schema` unchanged in meaning, with four edits
(see README.md): descriptions are dropped (size), `apiVersion`/`kind` are pinned to the CRD's, every
object that lists its `properties` (and does not say `x-kubernetes-preserve-unknown-fields`) rejects
other keys, as `kubectl apply --validate=strict` (the API server's strict field validation) does, and
Go's `(?i)` regex flag is spelt as letter classes (ECMAScript regexes have no inline flags).
"""

from __future__ import annotations

import json
import sys

import yaml


def ignore_case(pattern: str) -> str:
    """Go's `(?i)` flag (RE2; JSON schema's ECMAScript regexes have none) as letter classes: `a` → `[aA]`.
    Only for patterns without classes or escapes (the one upstream use: `^(?i)(abort|warn)?$`)."""
    body = pattern.replace("(?i)", "")
    if "[" in body or "\\" in body:
        raise SystemExit(f"cannot rewrite (?i) in {pattern!r} by hand-rolled rules; extend ignore_case")
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in body)


def strict(node):
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items() if k != "description"}
        if isinstance(out.get("pattern"), str) and "(?i)" in out["pattern"]:
            out["pattern"] = ignore_case(out["pattern"])
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def schema(crd: dict, version: str) -> dict:
    spec = crd["spec"]
    (ver,) = [v for v in spec["versions"] if v["name"] == version]
    body = strict(ver["schema"]["openAPIV3Schema"])
    body["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version}"}
    body["properties"]["kind"] = {"const": spec["names"]["kind"]}
    body["required"] = sorted({*body.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return {"$schema": "http://json-schema.org/draft-07/schema#",
            "title": f"{spec['names']['kind']} {spec['group']}/{version}", **body}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        crd = yaml.safe_load(f)
    json.dump(schema(crd, sys.argv[2]), sys.stdout, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")
