"""Test hook: keep the raw per-host answers of a read-only playbook as a unit-test case.

With `SELFHOST_CAPTURE_DIR` set in the environment (the e2e suite sets it around the commands whose
answers it keeps; nobody sets it in production), `readout.gather` writes what ansible-runner returned —
the run's status, per-host stats, failed tasks and each host's reported variable — to
`$SELFHOST_CAPTURE_DIR/<name>.json`, `<name>` being `SELFHOST_CAPTURE_AS` or the playbook's stem.
The unit tests of status/doctor/logs replay these files through the same parsers, so they test
payloads a real run produced rather than dicts written by hand.

Secrets are scrubbed before anything is written: values under key-like names, `Bearer …` tokens and
key/token/password assignments inside strings. Without the variable this module does nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

DIR_ENV = "SELFHOST_CAPTURE_DIR"
NAME_ENV = "SELFHOST_CAPTURE_AS"
SCRUBBED = "[SCRUBBED]"

_SECRET_NAME = re.compile(r"(?i)(api[_-]?key|token|secret|password|passwd|private)")
_SECRET_TEXT = (
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|authorization|token|password|secret)[\"']?\s*[:=]\s*[\"']?)"
               r"(?!\[SCRUBBED)[^\s\"',}]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL),
)


def scrub(value: Any) -> Any:
    """A copy of `value` (JSON-like) with secret-looking entries replaced by `[SCRUBBED]`."""
    if isinstance(value, dict):
        return {k: SCRUBBED if _SECRET_NAME.search(str(k)) and isinstance(v, str) and v else scrub(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        for pattern in _SECRET_TEXT:
            value = pattern.sub(lambda mt: (mt.group(1) if mt.groups() else "") + SCRUBBED, value)
        return value
    return value


def record(playbook: str, var: str, hosts: list[str], result: Any, values: dict[str, Any]) -> Path | None:
    """Write one capture when `SELFHOST_CAPTURE_DIR` is set; the file written, or None."""
    where = os.environ.get(DIR_ENV)
    if not where:
        return None
    name = os.environ.get(NAME_ENV) or Path(playbook).stem
    run = asdict(result)
    case = {
        "playbook": playbook,
        "var": var,
        "hosts": hosts,
        "result": {k: run[k] for k in ("status", "rc", "check", "hosts", "failed")},
        "values": values,
    }
    path = Path(where) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scrub(case), indent=1, sort_keys=True) + "\n")
    return path
