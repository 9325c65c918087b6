"""Replicas that span hosts, rendered for the Ansible path: groups from the inventory, each host's own server
spec (rank flags, private network, uid), the firewall rules of the egress lock, and the refusals."""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_render import CASES, _site, _weights
from toolkit.errors import RenderError
from toolkit.plan import planner
from toolkit.render.bundle import load_vars, render
from toolkit.render.multinode import SERVE_COMMAND, egress_uid
from toolkit.render.site import load_site

HOSTS = {f"node-{i}": {"ansible_host": f"203.0.113.{10 + i}"} for i in range(1, 5)}
PRIVATE = {f"node-{i}": f"10.0.0.{10 + i}" for i in range(1, 5)}


def _gv(hosts: dict) -> str:
    return "ansible_user: deploy\nselfhost_private_interface: ens5\n" + yaml.safe_dump(
        {"selfhost_private_addresses": {h: PRIVATE[h] for h in hosts}})


def _pp2():
    p = CASES["cpu-tiny"]()
    return p.model_copy(update={
        "hardware": p.hardware.model_copy(update={"pipeline_parallel_size": 2, "hosts_per_replica": 2}),
        "vllm": p.vllm.model_copy(update={"pipeline_parallel_size": 2})})


def _render(tmp, plan=None, hosts=None, gv=None):
    hosts = hosts if hosts is not None else dict(list(HOSTS.items())[:2])
    gv = gv if gv is not None else _gv(hosts)
    return render(plan or _pp2(), load_site(_site(tmp, hosts, gv)), tmp / "out", weights_source=_weights(tmp))


def _host_vars(bundle, host):
    return load_vars((bundle.path / "inventory" / "host_vars" / f"{host}.yml").read_text())


def _flag(argv, flag):
    return argv[argv.index(flag) + 1]


def test_rank_specs_are_written_per_host(tmp_path):
    b = _render(tmp_path)
    r0, r1 = _host_vars(b, "node-1"), _host_vars(b, "node-2")
    s0, s1 = r0["selfhost_server"], r1["selfhost_server"]
    for s, rank in ((s0, "0"), (s1, "1")):
        assert _flag(s["argv"], "--nnodes") == "2" and _flag(s["argv"], "--node-rank") == rank
        assert _flag(s["argv"], "--master-addr") == "10.0.0.11" and _flag(s["argv"], "--master-port") == "29500"
        assert _flag(s["argv"], "--distributed-executor-backend") == "mp"
        assert _flag(s["argv"], "--pipeline-parallel-size") == "2"
        assert s["network"] == "host" and s["user"] == f"{egress_uid(_pp2().name)}:{egress_uid(_pp2().name)}"
        assert s["env"]["GLOO_SOCKET_IFNAME"] == s["env"]["NCCL_SOCKET_IFNAME"] == "ens5"
        assert s["env"]["HF_HUB_OFFLINE"] == "1"
    assert s0["env"]["VLLM_HOST_IP"] == "10.0.0.11" and s1["env"]["VLLM_HOST_IP"] == "10.0.0.12"
    assert "--headless" not in s0["argv"] and s1["argv"][-1] == "--headless"
    for s, rank in ((s0, "0"), (s1, "1")):  # the group guard in front of vLLM's serve CLI, on every rank
        e = s["entrypoint"]
        assert e[:2] == ["python3", "-c"] and "RecreateGroupOnPodRestart" in e[2]
        assert e[e.index("--") + 1:] == SERVE_COMMAND
        assert _flag(e, "--rank") == rank and _flag(e, "--addresses") == "10.0.0.11,10.0.0.12"
        assert _flag(e, "--name") == f"{_pp2().name}/1" and _flag(e, "--port") == "29600"
        assert _flag(e, "--timeout") == "30"
    assert _flag(s0["argv"], "--host") == "127.0.0.1", "on the host network the API listens on loopback only"
    assert s0["image"] == s1["image"] and s0["mounts"] == s1["mounts"], "same model path and image on every node"
    assert s0["shm_size"] == s1["shm_size"] == "2g"
    assert "29500" in s1["healthcheck"]["test"][-1] and "/health" in s0["healthcheck"]["test"][-1]
    assert r0["selfhost_release"]["release"] != r1["selfhost_release"]["release"]
    assert r1["selfhost_node"] == {
        "group": 1, "rank": 1, "address": "10.0.0.12", "master_addr": "10.0.0.11", "members": ["node-1", "node-2"],
        "peers": ["10.0.0.11"], "egress_rules": r1["selfhost_node"]["egress_rules"],
        "egress_chain": f"SELFHOST-{egress_uid(_pp2().name)}", "egress_uid": egress_uid(_pp2().name),
        "egress_restore": r1["selfhost_node"]["egress_restore"]}
    # The record keeps the host's place and rules: a rollback knows its replica and re-applies them.
    assert r1["selfhost_release"]["node"] == r1["selfhost_node"]
    assert "node" not in r0["selfhost_release"] or r0["selfhost_release"]["node"]["rank"] == 0


def test_extravars_leave_the_spec_to_host_vars(tmp_path):
    """Extra vars beat host vars in Ansible: the per-host spec and record must not also be in extravars."""
    b = _render(tmp_path)
    ev = load_vars((b.path / "env" / "extravars").read_text())
    assert "selfhost_server" not in ev and "selfhost_release" not in ev
    mn = ev["selfhost_multinode"]
    assert [[m["name"] for m in g["members"]] for g in mn["groups"]] == [["node-1", "node-2"]]
    assert mn["interface"] == "ens5" and mn["egress_chain"] == f"SELFHOST-{mn['egress_uid']}"


def test_egress_rules_allow_only_loopback_replies_and_peers(tmp_path):
    b = _render(tmp_path)
    chain = f"SELFHOST-{egress_uid(_pp2().name)}"
    rules = _host_vars(b, "node-1")["selfhost_node"]["egress_rules"]
    assert [" ".join(r) for r in rules["iptables"]] == [
        f"-A {chain} -o lo -j ACCEPT",
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {chain} -d 10.0.0.12/32 -j ACCEPT",
        f"-A {chain} -j REJECT --reject-with icmp-host-unreachable"]
    assert rules["ip6tables"][-1][-3:] == ["REJECT", "--reject-with", "icmp6-addr-unreachable"]
    assert not any("-d" in r for r in rules["ip6tables"])


def test_four_hosts_make_two_groups_in_inventory_order(tmp_path):
    b = _render(tmp_path, hosts=HOSTS)
    ranks = {h: (_host_vars(b, h)["selfhost_node"]["group"], _host_vars(b, h)["selfhost_node"]["rank"])
             for h in HOSTS}
    assert ranks == {"node-1": (1, 0), "node-2": (1, 1), "node-3": (2, 0), "node-4": (2, 1)}
    assert _flag(_host_vars(b, "node-4")["selfhost_server"]["argv"], "--master-addr") == "10.0.0.13"
    assert _host_vars(b, "node-3")["selfhost_node"]["peers"] == ["10.0.0.14"]


def test_gateway_is_on_the_host_network_in_front_of_rank_0(tmp_path):
    conf = (_render(tmp_path).path / "files" / "gateway" / "nginx.conf").read_text()
    assert "listen 443 ssl;" in conf and "set $selfhost_upstream http://127.0.0.1:8000;" in conf


def test_too_few_hosts_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(RenderError) as e:
        _render(tmp_path, hosts=dict(list(HOSTS.items())[:1]))
    assert "needs 2 hosts per replica" in str(e.value) and "has 1" in str(e.value)
    assert "add 1 host" in e.value.fix
    assert not (tmp_path / "out").exists() and not (tmp_path / "site" / "pki").exists()


def test_a_host_count_that_is_not_a_multiple_is_refused(tmp_path):
    with pytest.raises(RenderError, match="not a multiple of 2"):
        _render(tmp_path, hosts=dict(list(HOSTS.items())[:3]))


def test_the_private_interface_is_required(tmp_path):
    with pytest.raises(RenderError, match="selfhost_private_interface"):
        _render(tmp_path, gv="ansible_user: deploy\n")


def test_a_private_address_is_required_when_ansible_host_is_a_name(tmp_path):
    hosts = {"a": {"ansible_host": "a.lab.internal"}, "b": {"ansible_host": "b.lab.internal"}}
    with pytest.raises(RenderError, match="no private IP address"):
        _render(tmp_path, hosts=hosts, gv="ansible_user: deploy\nselfhost_private_interface: eth1\n")


def test_deepseek_r1_on_two_h100_hosts_requests_8_gpus_per_host(tmp_path):
    plan = planner.plan(planner.PlanRequest(model="deepseek-ai/DeepSeek-R1", gpus=["H100-SXM"])).plan
    b = _render(tmp_path, plan=plan)
    for host in ("node-1", "node-2"):
        s = _host_vars(b, host)["selfhost_server"]
        assert s["device_requests"][0]["count"] == 8 and s["ipc_mode"] == "host"
        assert _flag(s["argv"], "--tensor-parallel-size") == "8" and _flag(s["argv"], "--nnodes") == "2"
    assert load_vars((b.path / "env" / "extravars").read_text())["selfhost_preflight_gpu_count"] == 8


def test_one_host_replicas_have_no_host_vars(tmp_path):
    b = render(CASES["cpu-tiny"](), load_site(_site(tmp_path, dict(list(HOSTS.items())[:2]))), tmp_path / "out",
               weights_source=_weights(tmp_path))
    assert not any(f.startswith("inventory/host_vars") for f in b.files)
    assert "selfhost_multinode" not in (b.path / "env" / "extravars").read_text()


def test_the_guard_settings_come_from_the_site(tmp_path):
    hosts = dict(list(HOSTS.items())[:2])
    b = _render(tmp_path, gv=_gv(hosts) + "selfhost_multinode_guard_port: 29700\n"
                                          "selfhost_multinode_guard_timeout_s: 12\n")
    e = _host_vars(b, "node-2")["selfhost_server"]["entrypoint"]
    assert _flag(e, "--port") == "29700" and _flag(e, "--timeout") == "12"
    mn = load_vars((b.path / "env" / "extravars").read_text())["selfhost_multinode"]
    assert (mn["guard_port"], mn["guard_timeout_s"]) == (29700, 12)


@pytest.mark.parametrize("setting, message", [
    ("selfhost_multinode_guard_port: 29500", "must differ from selfhost_multinode_master_port"),
    ("selfhost_multinode_guard_timeout_s: 1", "from 5 to 3600"),
])
def test_bad_guard_settings_are_refused(tmp_path, setting, message):
    hosts = dict(list(HOSTS.items())[:2])
    with pytest.raises(Exception, match=message):
        _render(tmp_path, gv=_gv(hosts) + setting + "\n")


def test_a_router_with_a_replica_over_hosts_is_refused_before_anything_is_written(tmp_path):
    """Rank 0 serves on the host network; the router sits on the deployment's internal Docker network: refused
    with the fix named (Kubernetes, where the router reaches the LeaderWorkerSet's Service, is the way)."""
    site = _site(tmp_path, dict(list(HOSTS.items())[:2]), _gv(dict(list(HOSTS.items())[:2])))
    (site / "router").mkdir()
    (site / "router" / "policy.yaml").write_text("remote: null\n")
    with pytest.raises(RenderError) as e:
        render(_pp2(), load_site(site), tmp_path / "out", weights_source=_weights(tmp_path))
    assert "replica that spans hosts" in str(e.value) and "--target kubernetes" in e.value.fix
    assert not (tmp_path / "out").exists()
