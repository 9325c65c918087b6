"""Helpers shared by the router tests: a policy with its secret files in a temporary folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from router.policy import Policy, parse_policy

CARD = "4539 1488 0343 6467"          # synthetic, Luhn-valid (Visa test range)
IBAN = "GB82 WEST 1234 5698 7654 32"  # the standard example IBAN (mod-97 valid)
NHS = "943 476 5919"                  # mod-11 valid
SSN = "536-22-1234"


def secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def policy_dict(tmp: Path, **over: Any) -> dict[str, Any]:
    base = {
        "local": {"base_url": "http://127.0.0.1:9/v1", "default_model": "local-model"},
        "remote": {"base_url": "http://127.0.0.1:10/v1", "api_key_file": str(secret(tmp / "remote.key", "sk-remote-TESTKEY")),
                   "aliases": {"frontier": "outside-model"}},
        "gateway": {"secret_file": str(secret(tmp / "gateway.secret", "gw-secret"))},
        "site_secret_file": str(secret(tmp / "site.secret", "site-secret")),
        "callers": {"remote_allowed": ["research"], "local_only": ["legal"]},
        "data_sources": {"local_only": ["hr-records", "Patients DB"]},
        "detect": {"identifiers": ["CREDIT_CARD", "IBAN_CODE", "UK_NHS", "US_SSN"], "code_names": ["Bluebird", "Project Nightjar"],
                   "patterns": {"ticket": r"\bACME-\d{6}\b"}},
        "audit": {"path": str(tmp / "audit.jsonl")},
    }
    return _merge(base, over)


def make_policy(tmp: Path, **over: Any) -> Policy:
    return parse_policy(policy_dict(tmp, **over))


def write_policy(tmp: Path, **over: Any) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(policy_dict(tmp, **over)))
    return path
