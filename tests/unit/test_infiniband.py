"""InfiniBand for multi-node groups (issue 11): the preflight probe's findings read from a fake sysfs/dev tree,
what `selfhost render` decides per `selfhost_infiniband`, and where the role applies it. Not tested on InfiniBand
hardware: the probe reads the kernel's documented sysfs layout, and the role's decision is checked by value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_multinode_render import _gv, _host_vars, _render
from toolkit.render.bundle import load_vars

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "playbooks" / "roles" / "selfhost_preflight" / "files" / "host_probe.py"
ROLES = ROOT / "playbooks" / "roles"


def _fake_system(root: Path, ports: dict[str, dict[str, tuple[str, str]]], devices: list[str]) -> Path:
    """sysfs as the kernel lays it out: /sys/class/infiniband/<hca>/ports/<n>/{state,link_layer}; /dev/infiniband."""
    for hca, hca_ports in ports.items():
        for port, (state, layer) in hca_ports.items():
            d = root / "sys" / "class" / "infiniband" / hca / "ports" / port
            d.mkdir(parents=True)
            (d / "state").write_text(state + "\n")
            (d / "link_layer").write_text(layer + "\n")
    if devices:
        (root / "dev" / "infiniband").mkdir(parents=True)
        for dev in devices:
            (root / "dev" / "infiniband" / dev).write_text("")
    return root


def _probe(tmp: Path, system_root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.read_text(), str(tmp / "root"), "0", "", str(system_root)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["infiniband"]


def test_probe_reports_active_ports_and_devices(tmp_path):
    system = _fake_system(tmp_path / "sys-ok", {
        "mlx5_0": {"1": ("4: ACTIVE", "InfiniBand")},
        "mlx5_1": {"1": ("1: DOWN", "InfiniBand"), "2": ("4: ACTIVE", "Ethernet")},  # RoCE counts too
    }, ["uverbs0", "uverbs1", "rdma_cm"])
    ib = _probe(tmp_path, system)
    assert ib["active_ports"] == ["mlx5_0:1", "mlx5_1:2"]
    assert ib["devices"] == ["rdma_cm", "uverbs0", "uverbs1"] and ib["usable"] is True
    assert ib["hcas"][1] == {"name": "mlx5_1", "ports": [{"port": "1", "state": "DOWN", "link_layer": "InfiniBand"},
                                                          {"port": "2", "state": "ACTIVE", "link_layer": "Ethernet"}]}


@pytest.mark.parametrize("ports,devices", [
    ({}, []),                                                      # no RDMA at all (this machine, the test hosts)
    ({"mlx5_0": {"1": ("1: DOWN", "InfiniBand")}}, ["uverbs0"]),   # cable out
    ({"mlx5_0": {"1": ("4: ACTIVE", "InfiniBand")}}, []),          # no /dev/infiniband (uverbs not loaded)
])
def test_probe_finds_it_unusable(tmp_path, ports, devices):
    ib = _probe(tmp_path, _fake_system(tmp_path / "sys", ports, devices))
    assert ib["usable"] is False


def test_the_real_host_without_rdma_probes_cleanly(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE.read_text(), str(tmp_path), "0", ""], capture_output=True,
                         text=True, check=True).stdout
    assert set(json.loads(out)["infiniband"]) == {"hcas", "active_ports", "devices", "usable"}


@pytest.mark.parametrize("mode", ["auto", "on", "off"])
def test_render_carries_the_setting_and_off_disables_nccl_ib(tmp_path, mode):
    hosts = {"node-1": {"ansible_host": "203.0.113.11"}, "node-2": {"ansible_host": "203.0.113.12"}}
    b = _render(tmp_path, hosts=hosts, gv=_gv(hosts) + f"selfhost_infiniband: {mode}\n")
    ib = load_vars((b.path / "env" / "extravars").read_text())["selfhost_multinode"]["infiniband"]
    assert ib == {"mode": mode, "devices": ["/dev/infiniband:/dev/infiniband:rwm"], "ulimits": ["memlock:-1:-1"],
                  "capabilities": ["IPC_LOCK"], "env": {"NCCL_IB_DISABLE": "0"}, "hca_env": "NCCL_IB_HCA"}
    env = _host_vars(b, "node-2")["selfhost_server"]["env"]
    assert env.get("NCCL_IB_DISABLE") == ("1" if mode == "off" else None)
    assert env["NCCL_SOCKET_IFNAME"] == "ens5", "bootstrap stays on the private interface"


def test_a_wrong_setting_is_refused(tmp_path):
    from toolkit.errors import SelfhostError

    hosts = {"node-1": {"ansible_host": "203.0.113.11"}, "node-2": {"ansible_host": "203.0.113.12"}}
    with pytest.raises((SelfhostError, ValueError)):
        _render(tmp_path, hosts=hosts, gv=_gv(hosts) + "selfhost_infiniband: maybe\n")


def _task(path: Path, name: str) -> dict:
    return next(t for t in yaml.safe_load(path.read_text()) if t["name"] == name)


def test_the_role_applies_only_the_hosts_finding_and_the_record_keeps_it():
    main = ROLES / "selfhost_vllm" / "tasks" / "main.yml"
    decide = _task(main, "Decide whether the server uses InfiniBand (every node of the group has an active RDMA port)")
    text = json.dumps(decide)
    for name in ("devices", "ulimits", "capabilities", "env", "hca_env", "mode"):  # every value from the render
        assert f"_selfhost_vllm_ib_cfg.{name}" in text
    assert "active_ports" in text and "usable" in text and "NCCL" not in text, "no variable name decided here"
    run = (ROLES / "selfhost_vllm" / "tasks" / "container.yml").read_text()
    for opt in ("devices", "ulimits", "capabilities"):
        assert f'{opt}: "{{{{ _selfhost_vllm_ib_opts.{opt} | default(omit) }}}}"' in run
    assert "combine(_selfhost_vllm_ib_opts.env" in run
    assert "_selfhost_vllm_ib_found" in (ROLES / "selfhost_release" / "tasks" / "record.yml").read_text()
    assert "_selfhost_release_target.infiniband" in (ROLES / "selfhost_release" / "tasks" / "rollback.yml").read_text()
    group = (ROLES / "selfhost_preflight" / "tasks" / "group.yml").read_text()
    assert "name: infiniband" in group and "infiniband.mode" in group
