"""The multi-node egress lock survives a reboot (issue 11): the restore files are serialized from the same rules
the role puts in the kernel, and the boot unit runs before Docker (systemd: fails closed; SysV: X-Start-Before).
tests/integration/test_egress_boot_restore.py runs the restore in a fresh network namespace."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.unit.test_multinode_render import _host_vars, _render
from toolkit.render.multinode import egress_restore, egress_rules

ROOT = Path(__file__).resolve().parents[2]
VLLM = ROOT / "playbooks" / "roles" / "selfhost_vllm"


def test_restore_file_is_the_chain_its_rules_and_the_jump():
    rules = egress_rules("SELFHOST-61234", ["10.0.0.12", "fd00::2"])
    files = egress_restore("SELFHOST-61234", 61234, rules)
    assert set(files) == {"iptables", "ip6tables"}
    v4 = files["iptables"].splitlines()
    assert v4[1:3] == ["*filter", ":SELFHOST-61234 - [0:0]"]
    assert v4[3:-2] == [" ".join(r) for r in rules["iptables"]]
    assert v4[-2:] == ["-I OUTPUT 1 -m owner --uid-owner 61234 -j SELFHOST-61234", "COMMIT"]
    assert "-d fd00::2/128" in files["ip6tables"] and "10.0.0.12" not in files["ip6tables"]


def test_each_rank_gets_its_own_restore_file_from_its_own_peers(tmp_path):
    b = _render(tmp_path)
    for host, peer in (("node-1", "10.0.0.12"), ("node-2", "10.0.0.11")):
        node = _host_vars(b, host)["selfhost_node"]
        assert node["egress_restore"] == egress_restore(node["egress_chain"], node["egress_uid"], node["egress_rules"])
        assert f"-d {peer}/32 -j ACCEPT" in node["egress_restore"]["iptables"]


def test_boot_units_start_before_docker_and_the_role_installs_them():
    unit = (VLLM / "files" / "selfhost-egress.service").read_text()
    assert "Before=docker.service" in unit and "RequiredBy=docker.service" in unit, "systemd: fail closed"
    assert "ExecStart=/usr/local/sbin/selfhost-egress-restore /etc/selfhost/egress" in unit
    init = (VLLM / "files" / "selfhost-egress.init").read_text()
    assert "# X-Start-Before:    docker" in init and "/usr/local/sbin/selfhost-egress-restore" in init
    boot = yaml.safe_load((VLLM / "tasks" / "egress_boot.yml").read_text())
    unit_tasks = yaml.safe_load((VLLM / "tasks" / "egress_boot_unit.yml").read_text())
    whens = {t["name"]: t.get("when") for t in unit_tasks}
    assert whens["Enable the boot unit (systemd)"][0] == "ansible_service_mgr == 'systemd'"
    assert whens["Enable the boot script (SysV init)"] == "ansible_service_mgr != 'systemd'"
    assert any(t.get("ansible.builtin.import_tasks") == "egress_boot_unit.yml" for t in boot)
    write = next(t for t in boot if t["name"] == "Write the server's firewall rules for the next boot")
    assert write["loop"] == "{{ _selfhost_vllm_node.egress_restore | dict2items }}", "data from the render only"
    assert "egress_boot.yml" in (VLLM / "tasks" / "egress.yml").read_text()
    destroy = (ROOT / "playbooks" / "destroy.yml").read_text()
    assert '/etc/selfhost/egress/{{ selfhost_name }}.{{ item }}' in destroy
    assert "loop: [iptables, ip6tables, router.iptables]" in destroy


def test_the_router_keeps_its_allow_list_for_the_boot_unit():
    """The router's egress chain is forgotten by a reboot too, while Docker restarts the router: its role
    writes the same rules for the boot unit (egress_allow.py's BOOT_FILE) and installs that unit."""
    router = yaml.safe_load((ROOT / "playbooks" / "roles" / "selfhost_router" / "tasks" / "main.yml").read_text())
    allow = next(t for t in router if t["name"].startswith("Allow the egress network to reach only the closed API"))
    assert "selfhost_name ~ '.router.iptables'" in allow["ansible.builtin.script"]["cmd"]
    names = [t["name"] for t in router]
    unit = next(t for t in router if "ansible.builtin.include_role" in t)
    assert unit["ansible.builtin.include_role"] == {"name": "selfhost_vllm", "tasks_from": "egress_boot_unit.yml"}
    assert names.index(unit["name"]) < names.index("Run the router"), "the unit is in place before the router runs"
