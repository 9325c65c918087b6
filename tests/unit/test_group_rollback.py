"""Multi-node replicas roll back as one (issue 11): which hosts go together, what the preview shows, what the
playbooks do with it, and the upgrade's automatic rollback taking the whole replica."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from toolkit.deploy import runner
from toolkit.errors import ConfigError
from toolkit.operate import operations as ops
from toolkit.operate import releases

ROOT = Path(__file__).resolve().parents[2]
WHO = {"id": "r1", "who": "bob@ctl", "pid": 7, "command": "selfhost x", "since": "T0", "site": "sites/lab"}


def _node(group: int, rank: int, members: list[str]) -> dict:
    return {"group": group, "rank": rank, "members": members, "egress_chain": "SELFHOST-1", "egress_uid": 1}


def _infos(groups: list[list[str]], *, node_in: str = "r1") -> dict:
    """Each host keeps r1 (previous) and r2 (current); the replica is recorded in `node_in`."""
    infos = {}
    for g, members in enumerate(groups, 1):
        for rank, h in enumerate(members):
            rec = {"plan_digest": "p", "node": _node(g, rank, members)}
            infos[h] = {"tiny": {"current": {"release": "r2"}, "previous": {"release": "r1"},
                                 "records": {"r1": rec if node_in == "r1" else {"plan_digest": "p"}, "r2": rec}}}
    return infos


def test_replicas_roll_back_in_batches_of_their_size():
    infos = _infos([["a", "b"], ["c", "d"]])
    groups, serial = releases.rollback_groups(infos, "tiny", {h: "r1" for h in infos}, ["a", "b", "c", "d"])
    assert serial == 2
    assert groups["b"] == {"group": 1, "rank": 1, "members": ["a", "b"]}
    assert groups["c"] == {"group": 2, "rank": 0, "members": ["c", "d"]}


def test_one_host_replicas_keep_one_host_at_a_time():
    infos = {h: {"tiny": {"records": {"r1": {"plan_digest": "p"}}}} for h in ("a", "b")}
    assert releases.rollback_groups(infos, "tiny", {"a": "r1", "b": "r1"}, ["a", "b"]) == ({}, 1)


def test_host_naming_one_rank_is_refused_with_the_whole_replica_as_fix():
    infos = {"b": _infos([["a", "b"]])["b"]}  # --host b: only b was read
    with pytest.raises(ConfigError) as e:
        releases.rollback_groups(infos, "tiny", {"b": "r1"}, ["a", "b"])
    assert "rank 1 of replica 1 (a, b)" in str(e.value) and e.value.fix.startswith("pass --host a,b")


def test_a_host_without_target_is_grouped_by_its_current_release():
    infos = _infos([["a", "b"]])
    groups, serial = releases.rollback_groups(infos, "tiny", {"a": "r1", "b": None}, ["a", "b"])
    assert serial == 2 and set(groups) == {"a", "b"}


def test_records_that_disagree_on_the_replica_are_refused():
    infos = _infos([["a", "b"]])
    infos["b"]["tiny"]["records"]["r1"] = {"plan_digest": "p", "node": _node(1, 0, ["b", "a"])}
    with pytest.raises(ConfigError, match="different groups"):
        releases.rollback_groups(infos, "tiny", {"a": "r1", "b": "r1"}, ["a", "b"])


def test_replicas_out_of_inventory_order_are_refused():
    infos = _infos([["a", "b"]])
    with pytest.raises(ConfigError, match="out of inventory order"):
        releases.rollback_groups(infos, "tiny", {"a": "r1", "b": "r1"}, ["b", "a"])


def test_the_operation_carries_the_replicas_and_the_batch():
    groups = {"a": {"group": 1, "rank": 0, "members": ["a", "b"]}, "b": {"group": 1, "rank": 1, "members": ["a", "b"]}}
    op = ops.rollback(name="tiny", invocation=WHO, host=None, to=None, targets={"a": "r1", "b": "r1"},
                      groups=groups, serial=2)
    assert op.extravars["selfhost_rollback_groups"] == groups and op.extravars["selfhost_rollback_serial"] == 2
    assert "replica" in op.title
    plain = ops.rollback(name="tiny", invocation=WHO, host=None, to=None, targets={"a": "r1"})
    assert "selfhost_rollback_serial" not in plain.extravars and plain.title == "rollback (one host at a time)"


def _never(*a, **kw):
    raise AssertionError("a dry run ran a playbook")


def test_dry_run_shows_the_replica_and_refuses_part_of_it(monkeypatch, tmp_path):
    from toolkit.commands import rollback

    class Site:
        hosts = [type("H", (), {"name": n})() for n in ("a", "b")]

    infos = _infos([["a", "b"]])
    monkeypatch.setattr(runner, "run", _never)
    monkeypatch.setattr(rollback, "ops_setup", lambda *a, **kw: (Site, tmp_path, WHO, infos, "tiny"))
    app = typer.Typer()
    rollback.register(app)
    app.command("noop", hidden=True)(lambda: None)
    res = CliRunner().invoke(app, ["rollback", "-i", str(tmp_path), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["groups"] == ["replica 1: a (rank 0), b (rank 1) roll back together: every rank stops, each starts "
                             "its own release, then a (rank 0) must be healthy and verified"]
    assert doc["operations"][0]["extravars"]["selfhost_rollback_serial"] == 2
    text = CliRunner().invoke(app, ["rollback", "-i", str(tmp_path), "--dry-run"])
    assert "replica 1: a (rank 0), b (rank 1) roll back together" in text.output
    monkeypatch.setattr(rollback, "ops_setup", lambda *a, **kw: (Site, tmp_path, WHO, {"b": infos["b"]}, "tiny"))
    refused = CliRunner().invoke(app, ["rollback", "-i", str(tmp_path), "--host", "b", "--dry-run"])
    assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError)
    assert "pass --host a,b" in refused.exception.fix


def _tasks(path: str) -> list[dict]:
    return yaml.safe_load((ROOT / "playbooks" / path).read_text())


def test_rollback_playbook_batches_by_replica_and_passes_each_hosts_place():
    play, = _tasks("rollback.yml")
    assert play["serial"] == "{{ selfhost_rollback_serial | default(1) }}"
    text = (ROOT / "playbooks" / "rollback.yml").read_text()
    assert "selfhost_rollback_groups" in text and "_selfhost_release_node" in text


def test_release_rollback_checks_every_rank_then_stops_all_before_any_starts():
    names = [t["name"] for t in _tasks("roles/selfhost_release/tasks/rollback.yml")]
    order = ["Note this rank can go back (multi-node)",
             "Check every rank of the replica can go back before any is stopped",
             "Stop every rank's server before any starts again (a rank left running would join the other release)",
             "Put back the release's own firewall rules (multi-node, where the server is on the host network)",
             "Run the inference server of the release and wait until it is healthy",
             "Verify the rolled-back release end to end through the gateway",
             "Verify a headless rank of the rolled-back release is cut off from the outside"]
    assert [n for n in names if n in order] == order
    checks = [i for i, n in enumerate(names) if n.startswith("Check the release") or n.startswith("Check every read")]
    assert max(checks) < names.index(order[0]), "every per-host check runs before the replica's gate"


def test_upgrade_fails_every_rank_of_a_replica_before_recording_so_all_roll_back():
    """site.yml: a rank whose peer failed fails the replica gate before `record`, so the rescue (automatic
    rollback) runs on every rank, in the same batch, with the host's place passed to rollback.yml."""
    play, = _tasks("site.yml")
    block = next(t for t in play["tasks"] if "block" in t)
    names = [t["name"] for t in block["block"]]
    gate = names.index("Check every rank of the replica is up and verified")
    assert names.index("Note this rank is up and verified (multi-node)") < gate < names.index(
        "Record the verified release (current; the one it replaces becomes previous)")
    assert gate > names.index("Verify the deployment end to end through the gateway")
    rescue = next(t for t in block["rescue"] if t["name"] == "Roll the host back to its last good release")
    run = rescue["block"][0]
    assert run["vars"]["_selfhost_release_node"] == "{{ selfhost_node | default(none) }}"
