"""playbooks/keys.yml through the one executor, against localhost (no Docker, no SSH): `keys list` reports the
labels of the host's api-keys.conf (never a key), and a refused change names its reason (the keys script's
refusals are not hidden by no_log). Add/revoke with a real gateway: tests/e2e/test_router_deploy.py."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_playbooks_localhost import _bundle
from toolkit.operate import operations as ops

pytestmark = pytest.mark.integration

KEYS_PY = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "selfhost_gateway" / "files" / "api_keys.py"
WHO = {"id": "r", "user": "t"}


def test_keys_list_and_a_refused_revoke_on_localhost(tmp_path):
    gw = tmp_path / "gw"
    gw.mkdir()
    conf = gw / "api-keys.conf"
    subprocess.run([sys.executable, str(KEYS_PY), "create", str(conf), "site-x"], check=True, capture_output=True)
    subprocess.run([sys.executable, str(KEYS_PY), "add", str(conf), "t1", "site-x", "team-a"], check=True,
                   capture_output=True)
    state = tmp_path / "state" / "it"
    state.mkdir(parents=True)
    (state / "current").write_text(json.dumps({"gateway": {"dir": str(gw), "container": "it-none-gateway",
                                                           "mount": "/etc/selfhost/gateway"}}))
    b = _bundle(tmp_path, selfhost_release_root=str(tmp_path / "state"), selfhost_gateway_caller_label="site-x",
                selfhost_lock_state_dir=str(tmp_path / "lock"))
    done = ops.execute(b, ops.keys_list(name="it", invocation=WHO, host=None))
    assert done.result.ok and done.reports["localhost"]["labels"] == {
        "site-x": {"keys": 1, "site_default": False, "tags": []},
        "team-a": {"keys": 1, "site_default": False, "tags": ["issued=t1"]}}
    keys = re.findall(r'"Bearer ([0-9a-f]{64})"', conf.read_text())
    assert len(keys) == 2 and not any(k in json.dumps(done.reports) for k in keys)
    before = conf.read_text()
    done = ops.execute(b, ops.keys_revoke(name="it", invocation=WHO, host=None, label="nobody"))
    [failed] = done.result.failed
    assert "no key has the label 'nobody' (labels: site-x, team-a)" in failed.message
    assert conf.read_text() == before
