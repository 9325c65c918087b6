"""The gateway role's fleet rotation (rotate_keys.yml with `selfhost_gateway_fleet`), run by real Ansible on two
inventory hosts that are both this machine (each with its own gateway folder), fed the fleet value the ops
bundle carries (`releases.ops_bundle`, the same as `render`'s).

Proves the key-set logic without Docker: the first host changes its file once, every host then holds the same
bytes before any reload, the new key is fetched from the first host only, a second run of a phase changes
nothing, retire leaves only the new key everywhere, and a run limited to one host is refused. The gateway
container is a `docker` on PATH that records what it is asked (`nginx -t`, `nginx -s reload`); real nginx
reloading under a client loop is tests/e2e/test_fleet.py.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_render import _site
from toolkit.operate.releases import ops_bundle
from toolkit.render.bundle import load_vars
from toolkit.render.site import load_site

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OLD = "0123456789abcdef0123456789abcdef"
KEYS = 'map $http_authorization $selfhost_api_key_ok {\n    default 0;\n    "Bearer %s" 1;\n}\n' % OLD
PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: selfhost_gateway
        tasks_from: rotate_keys.yml
      vars:
        selfhost_gateway_dir: "{{ gwdir }}"
        selfhost_gateway_container: it-gateway
        selfhost_gateway_mount: /etc/selfhost/gateway
        selfhost_gateway_rotation_phase: "{{ phase }}"
        selfhost_gateway_rotation_id: rot1
        selfhost_gateway_key_fetch_dir: "{{ fetch_dir }}"
"""


@pytest.fixture()
def lab(tmp_path):
    hosts = {"gpu-01": {"ansible_host": "10.0.0.11"}, "gpu-02": {"ansible_host": "10.0.0.12"}}
    site = load_site(_site(tmp_path, hosts, "ansible_user: deploy\nselfhost_fleet: true\n"))
    fleet_vars = load_vars((ops_bundle(site, tmp_path / "ops") / "env" / "extravars").read_text())
    (tmp_path / "bin").mkdir()
    docker = tmp_path / "bin" / "docker"
    docker.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/docker.log\n')
    docker.chmod(0o755)
    inventory = {"all": {"hosts": {}}}
    for name in hosts:
        (tmp_path / name).mkdir()
        (tmp_path / name / "api-keys.conf").write_text(KEYS)
        inventory["all"]["hosts"][name] = {"ansible_connection": "local", "gwdir": str(tmp_path / name),
                                           "ansible_python_interpreter": sys.executable}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "vars.yml").write_text(yaml.safe_dump({"selfhost_name": "tiny", **fleet_vars,
                                                       "fetch_dir": str(tmp_path / "fetch")}))
    return tmp_path


def _play(lab: Path, phase: str, *extra: str) -> subprocess.CompletedProcess:
    (lab / "docker.log").write_text("")
    shutil.rmtree(lab / "fetch", ignore_errors=True)
    env = {"PATH": f"{lab / 'bin'}:/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(ROOT / "playbooks" / "roles"),
           "ANSIBLE_NOCOLOR": "1", "HOME": str(lab), "ANSIBLE_LOCAL_TEMP": str(lab / ".ansible")}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(lab / "hosts.yml"),
                           str(lab / "play.yml"), "-e", f"@{lab / 'vars.yml'}", "-e", f"phase={phase}", *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def _keys(lab: Path, host: str) -> list[str]:
    return re.findall(r'"Bearer ([^"]+)"', (lab / host / "api-keys.conf").read_text())


def test_fleet_rotation_one_key_set_on_every_host(lab):
    res = _play(lab, "add")
    assert res.returncode == 0, res.stdout[-3000:]
    k1, k2 = _keys(lab, "gpu-01"), _keys(lab, "gpu-02")
    assert k1 == k2 and len(k1) == 2 and k1[1] == OLD, "the new key first, the old one still there, on both hosts"
    new = k1[0]
    assert [p.name for p in (lab / "fetch").iterdir()] == ["gpu-01.conf"], "fetched once, from the first host"
    assert new in (lab / "fetch" / "gpu-01.conf").read_text()
    assert not list(lab.glob("gpu-0*/api-keys.conf.new")), "the host's copy of the new key is deleted"
    assert (lab / "docker.log").read_text().count("-s reload") == 2, "both gateways reload at add"

    again = _play(lab, "add")
    assert again.returncode == 0 and _keys(lab, "gpu-01") == k1
    assert "-s reload" not in (lab / "docker.log").read_text(), "a second add changes nothing"
    assert not (lab / "fetch").exists()

    res = _play(lab, "retire")
    assert res.returncode == 0, res.stdout[-3000:]
    assert _keys(lab, "gpu-01") == _keys(lab, "gpu-02") == [new]
    assert (lab / "docker.log").read_text().count("-s reload") == 2

    one = _play(lab, "retire", "--limit", "gpu-02")
    assert one.returncode != 0 and "is a fleet with one key set" in one.stdout
