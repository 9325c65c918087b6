"""roles/selfhost_router/files/router_secrets.py, run as the role runs it: secrets made once (0600, owned by the
router's uid), the gateway include in step with the secret, and a second run changes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "playbooks/roles/selfhost_router/files/router_secrets.py"


def _run(etc: Path, include: Path) -> dict:
    res = subprocess.run([sys.executable, str(SCRIPT), str(etc), str(os.getuid()), str(include)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def test_secrets_once_and_second_run_changes_nothing(tmp_path):
    etc, include = tmp_path / "etc", tmp_path / "router.conf"
    etc.mkdir()
    assert _run(etc, include) == {"router_changed": True, "gateway_changed": True}
    secret = (etc / "gateway.secret").read_text().strip()
    assert len(secret) == 64 and (etc / "site.secret").read_text().strip() != secret
    for f in (etc / "gateway.secret", etc / "site.secret", include):
        assert f.stat().st_mode & 0o777 == 0o600
    assert f'proxy_set_header X-Selfhost-Gateway-Secret "{secret}";' in include.read_text()
    assert _run(etc, include) == {"router_changed": False, "gateway_changed": False}
    include.write_text("stale\n")
    assert _run(etc, include) == {"router_changed": False, "gateway_changed": True}
    assert (etc / "gateway.secret").read_text().strip() == secret, "an existing secret is never replaced"
