"""A fleet over multi-node groups: 4 hosts and a 2-host plan are 2 replicas behind one endpoint.

The fleet's members are the groups' rank-0 hosts (the only ones with a gateway and the API); every rank-0 gateway
balances over every group's rank 0; headless ranks are not members. Keys, fleet-wide rotation (the ops bundle learns
the rank-0 hosts from the hosts' records), `status`'s fleet view (a group is one replica) and upgrade follow.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.unit.test_fleet import _blocks, _servers
from tests.unit.test_multinode_render import HOSTS, PRIVATE, _gv, _pp2, _render
from toolkit.errors import ConfigError, RenderError
from toolkit.operate import operations, releases
from toolkit.operate import status as st
from toolkit.render.bundle import FLEET_SAN, load_vars
from toolkit.render.multinode import NODE_RANK_LABEL
from toolkit.render.site import load_site

FLEET = "selfhost_fleet: true\n"


def _fleet(tmp, extra: str = "", hosts=HOSTS):
    b = _render(tmp, hosts=hosts, gv=_gv(hosts) + FLEET + extra)
    return b, (b.path / "files" / "gateway" / "nginx.conf").read_text()


# ---------------------------------------------------------------- render

def test_the_fleet_is_the_groups_rank_0_hosts_over_the_private_network(tmp_path):
    b, conf = _fleet(tmp_path)
    fleet = b.vars.selfhost_fleet
    assert [(m.name, m.address) for m in fleet.members] == [("node-1", PRIVATE["node-1"]), ("node-3", PRIVATE["node-3"])]
    assert fleet.first_host == "node-1" and fleet.ssl_name == FLEET_SAN
    [up] = _blocks(conf, "upstream selfhost_fleet")
    assert re.findall(r"server (\S+) ", up) == ["10.0.0.11:8444", "10.0.0.13:8444"], "headless ranks are no upstream"
    ev = load_vars((b.path / "env" / "extravars").read_text())
    assert [m["name"] for m in ev["selfhost_fleet"]["members"]] == ["node-1", "node-3"]
    assert [[m["name"] for m in g["members"]] for g in ev["selfhost_multinode"]["groups"]] == [
        ["node-1", "node-2"], ["node-3", "node-4"]]


def test_rank_0_gateway_on_the_host_network_listens_on_the_gateway_port_and_peers_reach_its_own_server(tmp_path):
    _, conf = _fleet(tmp_path, "selfhost_gateway_port: 8443\n")
    servers = _servers(conf)
    assert sorted(servers) == ["8443", "8444"], "public listener on the published port itself (host network)"
    peer = servers["8444"]
    assert "set $selfhost_upstream http://127.0.0.1:8000;" in peer, "a peer hop ends at this host's rank 0, on loopback"
    assert "https://selfhost_fleet" not in peer
    [loc] = _blocks(servers["8443"], "location /")
    assert "proxy_pass https://selfhost_fleet;" in loc and f"proxy_ssl_name {FLEET_SAN};" in loc


def test_fleet_peers_override_the_private_address(tmp_path):
    b, _ = _fleet(tmp_path, "selfhost_fleet_peers: {node-3: 192.0.2.33}\n")
    assert [m.address for m in b.vars.selfhost_fleet.members] == ["10.0.0.11", "192.0.2.33"]


def test_one_group_is_a_fleet_of_one_replica(tmp_path):
    b, conf = _fleet(tmp_path, hosts=dict(list(HOSTS.items())[:2]))
    assert [m.name for m in b.vars.selfhost_fleet.members] == ["node-1"]
    [up] = _blocks(conf, "upstream selfhost_fleet")
    assert re.findall(r"server (\S+) ", up) == ["10.0.0.11:8444"]


@pytest.mark.parametrize("setting, what", [("selfhost_fleet_port: 8000", "the plan's vLLM port"),
                                           ("selfhost_fleet_port: 29500", "selfhost_multinode_master_port")])
def test_a_peer_port_taken_on_the_host_network_is_refused(setting, what, tmp_path):
    with pytest.raises(RenderError) as e:
        _fleet(tmp_path, setting + "\n")
    assert what in str(e.value) and "selfhost_fleet_port" in e.value.fix
    assert not (tmp_path / "out").exists()


def test_the_router_is_still_refused_with_a_fleet(tmp_path):
    from tests.unit.test_render import _site, _weights
    from toolkit.render.bundle import render

    site = _site(tmp_path, HOSTS, _gv(HOSTS) + FLEET)
    (site / "router").mkdir()
    (site / "router" / "policy.yaml").write_text("rules: []\n")
    with pytest.raises(RenderError, match="not deployed with selfhost_fleet"):
        render(_pp2(), load_site(site), tmp_path / "out", weights_source=_weights(tmp_path))


# ---------------------------------------------------------------- rotate-keys: the ops bundle and the runs

def _infos(ranks: dict[str, str | None], name="tiny-cpu"):
    return {h: {name: {"current": {"release": "r1", "vllm": {"labels": ({NODE_RANK_LABEL: r} if r is not None
                                                                         else {})}}}} for h, r in ranks.items()}


GROUP_RANKS = {"node-1": "0", "node-2": "1", "node-3": "0", "node-4": "1"}


def test_serving_hosts_are_read_from_the_hosts_records():
    assert releases.serving_hosts(_infos(GROUP_RANKS), "tiny-cpu") == ["node-1", "node-3"]
    assert releases.serving_hosts(_infos({"a": None, "b": None}), "tiny-cpu") is None, "one-host replicas"
    infos = _infos(GROUP_RANKS)
    infos["node-3"]["tiny-cpu"]["current"]["vllm"]["labels"][NODE_RANK_LABEL] = 0  # a record read back as an int
    assert releases.serving_hosts(infos, "tiny-cpu") == ["node-1", "node-3"]


def test_ops_bundle_with_the_serving_hosts_carries_the_plan_bundles_fleet(tmp_path):
    b, _ = _fleet(tmp_path)
    site = load_site(tmp_path / "site")
    ops = load_vars((releases.ops_bundle(site, tmp_path / "ops", serving=["node-1", "node-3"])
                     / "env" / "extravars").read_text())
    assert ops["selfhost_fleet"] == load_vars((b.path / "env" / "extravars").read_text())["selfhost_fleet"]


def _rotate_cli(monkeypatch, tmp_path, gv: str, *args):
    import typer
    from typer.testing import CliRunner

    from tests.unit.test_render import _site
    from toolkit.commands import rotate_keys
    from toolkit.deploy import runner

    site = load_site(_site(tmp_path, HOSTS, _gv(HOSTS) + gv))
    monkeypatch.setattr(runner, "run", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("ran a playbook")))
    ops = tmp_path / "ops"
    monkeypatch.setattr(rotate_keys, "ops_setup",
                        lambda *a, **kw: (site, releases.ops_bundle(site, ops), {"id": "r"}, _infos(GROUP_RANKS),
                                          "tiny-cpu"))
    app = typer.Typer()
    rotate_keys.register(app)
    app.command("noop", hidden=True)(lambda: None)
    return CliRunner().invoke(app, ["rotate-keys", "-i", str(tmp_path), *args]), ops


def test_rotate_keys_of_a_fleet_of_groups_runs_on_the_rank_0_hosts_with_the_fleet_in_the_ops_bundle(
        monkeypatch, tmp_path):
    res, ops = _rotate_cli(monkeypatch, tmp_path, FLEET, "--grace", "5", "--dry-run", "--json")
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert (doc["fleet"], doc["hosts"]) == (True, ["node-1", "node-3"])
    add, _, retire = doc["operations"]
    assert add["limit"] == retire["limit"] == "node-1,node-3", "headless ranks have no gateway: not in the runs"
    fleet = load_vars((ops / "env" / "extravars").read_text())["selfhost_fleet"]
    assert [m["name"] for m in fleet["members"]] == ["node-1", "node-3"] and fleet["first_host"] == "node-1"


def test_rotate_keys_without_a_fleet_skips_headless_ranks_and_refuses_one_by_name(monkeypatch, tmp_path):
    res, _ = _rotate_cli(monkeypatch, tmp_path, "", "--dry-run", "--json")
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert doc["hosts"] == ["node-1", "node-3"] and doc["operations"][0]["limit"] == "node-1,node-3"
    res, _ = _rotate_cli(monkeypatch, tmp_path / "again", "", "--host", "node-2", "--dry-run", "--json")
    assert isinstance(res.exception, ConfigError), res.output + repr(res.exception)
    assert "headless rank" in res.exception.message and "node-1, node-3" in res.exception.fix


def test_rotate_keys_of_a_fleet_of_groups_refuses_host():
    with pytest.raises(ConfigError, match="one key set shared by node-1, node-3"):
        operations.rotate_keys(name="tiny-cpu", invocation={}, host="node-1", grace_s=1, rotation="r",
                               fleet=["node-1", "node-3"], serving=["node-1", "node-3"])


# ---------------------------------------------------------------- status: a group is one replica

def _host(name, rank, *, ok=True, finished=None, gateway=True):
    raw = {"vllm": {"State": {"Status": "running", "Health": {"Status": "healthy" if ok else "unhealthy"}},
                    "Args": [], "Labels": {NODE_RANK_LABEL: str(rank)}},
           "gateway": {"State": {"Status": "running", "Health": {"Status": "healthy"}}} if gateway else None,
           "metrics": (json.dumps([{"t": 0, "text": f'vllm:request_success_total{{finished_reason="stop"}} {finished}'}])
                       if finished is not None else "")}
    return st.shape_host(name, raw)


def test_a_headless_rank_is_healthy_without_a_gateway_or_metrics():
    h = _host("node-2", 1, gateway=False)
    assert h.node_rank == 1 and h.ok and h.error is None and h.gateway_state is None
    r0 = _host("node-1", 0, gateway=False, finished=3)
    assert not r0.ok and r0.gateway_state == "missing", "rank 0 needs its gateway"


def test_status_fleet_view_counts_groups(tmp_path):
    groups = [["node-1", "node-2"], ["node-3", "node-4"]]
    statuses = [_host("node-1", 0, finished=30), _host("node-2", 1, gateway=False),
                _host("node-3", 0, finished=10), _host("node-4", 1, ok=False, gateway=False)]
    view = st.fleet_view(statuses, groups)
    assert (view.healthy, view.total) == (1, 2), "a group with an unhealthy headless rank does not serve"
    assert view.served == {"node-1": 30.0, "node-3": 10.0} and view.share_pct == {"node-1": 75.0, "node-3": 25.0}
    assert view.replicas == {"node-1": ["node-1", "node-2"], "node-3": ["node-3", "node-4"]}
    b, _ = _fleet(tmp_path)
    assert st.is_fleet(b.path) and st.replica_groups(b.path) == groups


def test_status_report_names_each_replica_by_its_rank_0(capsys):
    from toolkit.commands import output

    view = st.fleet_view([_host("node-1", 0, finished=4), _host("node-2", 1, gateway=False)], [["node-1", "node-2"]])
    output.fleet_report(view)
    out = capsys.readouterr().out
    assert "1/1 replicas healthy" in out and "node-1 (+ node-2)" in out


# ---------------------------------------------------------------- upgrade: each host against its own rank

def test_upgrade_compares_each_host_with_its_own_ranks_record(tmp_path):
    b, _ = _fleet(tmp_path)
    for host in HOSTS:
        node = b.vars.selfhost_nodes[host]
        want = releases.expected_release(b.vars, host)
        assert want["release"] == node["selfhost_release"].release and want["vllm"]["labels"][NODE_RANK_LABEL] == \
            str(node["selfhost_node"].rank)
        assert releases.release_diff(want, want) == []
    assert releases.expected_release(b.vars)["release"] == b.vars.selfhost_release.release


def test_render_and_deploy_name_the_fleets_members(tmp_path):
    from toolkit.render.multinode import preview

    b, _ = _fleet(tmp_path)
    lines = preview(b.vars.selfhost_multinode, b.vars.selfhost_fleet)
    assert len(lines) == 3 and lines[0].startswith("replica 1: node-1 (rank 0")
    assert lines[-1] == ("fleet: one endpoint over 2 replica(s): every rank-0 gateway (node-1, node-3) balances over "
                         "all of them (peers on port 8444)")
    assert len(preview(b.vars.selfhost_multinode)) == 2
