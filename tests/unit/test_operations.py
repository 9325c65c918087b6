"""What each day-2 command would run, as values (toolkit.operate.operations), and --dry-run never running it."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from toolkit.deploy import runner
from toolkit.operate import operations as ops
from toolkit.operate.releases import rollback_target

WHO = {"id": "r1", "who": "bob@ctl", "pid": 7, "command": "selfhost x", "since": "T0", "site": "sites/lab"}


def test_rollback_runs_rollback_yml_with_the_targets_chosen_in_python():
    kept = {"current": {"release": "r3"}, "previous": {"release": "r2"},
            "records": {"r2": {"plan_digest": "aa11"}, "r3": {"plan_digest": "bb22"}}}
    op = ops.rollback(name="tiny", invocation=WHO, host="gpu-01", to=None,
                      targets={"gpu-01": rollback_target(kept, None), "gpu-02": None})
    assert (op.command, op.playbook, op.limit, op.check, op.fetch_keys) == (
        "rollback", "rollback.yml", "gpu-01", False, False)
    assert op.extravars == {"selfhost_run": WHO, "selfhost_name": "tiny", "selfhost_rollback_to": "",
                            "selfhost_release_targets": {"gpu-01": "r2", "gpu-02": ""}}
    assert op.steps == ("lock", "release", "verify")


def test_destroy_and_purge():
    op = ops.destroy(name="tiny", invocation=WHO, host=None, purge=True)
    assert (op.playbook, op.limit, op.check) == ("destroy.yml", None, False)
    assert op.extravars == {"selfhost_run": WHO, "selfhost_name": "tiny", "selfhost_destroy_purge": True}
    assert ops.destroy(name="tiny", invocation=WHO, host="h", purge=False).extravars["selfhost_destroy_purge"] is False


def test_rotate_keys_is_add_wait_retire_of_one_rotation():
    add, wait, retire = ops.rotate_keys(name="tiny", invocation=WHO, host="gpu-02", grace_s=300, rotation="abc")
    assert isinstance(wait, ops.Wait) and wait.seconds == 300
    for op, phase in ((add, "add"), (retire, "retire")):
        assert (op.playbook, op.limit, op.command) == ("rotate_keys.yml", "gpu-02", "rotate-keys")
        assert op.extravars == {"selfhost_run": WHO, "selfhost_name": "tiny", "selfhost_rotation_id": "abc",
                                "selfhost_rotation_phase": phase}
    assert (add.fetch_keys, add.rotation) == (True, "abc"), "the new key is fetched once, at add"
    assert (retire.fetch_keys, retire.rotation) == (False, None)


def test_rotate_keys_of_a_fleet_is_add_wait_retire_on_every_host_together():
    add, wait, retire = ops.rotate_keys(name="tiny", invocation=WHO, host=None, grace_s=60, rotation="abc",
                                        fleet=["gpu-01", "gpu-02"])
    assert isinstance(wait, ops.Wait) and wait.seconds == 60 and "every host of the fleet" in wait.reason
    for op, phase in ((add, "add"), (retire, "retire")):
        assert (op.playbook, op.limit, op.command) == ("rotate_keys.yml", None, "rotate-keys"), "no --limit: all hosts"
        assert op.extravars == {"selfhost_run": WHO, "selfhost_name": "tiny", "selfhost_rotation_id": "abc",
                                "selfhost_rotation_phase": phase}
        assert op.title.endswith("on every host of the fleet (gpu-01, gpu-02)")
    assert (add.fetch_keys, add.rotation, retire.fetch_keys) == (True, "abc", False)


def test_rotate_keys_refuses_one_host_of_a_fleet():
    from toolkit.errors import ConfigError

    with pytest.raises(ConfigError, match="one key set shared by gpu-01, gpu-02") as err:
        ops.rotate_keys(name="tiny", invocation=WHO, host="gpu-02", grace_s=0, rotation="abc",
                        fleet=["gpu-01", "gpu-02"])
    assert "drop --host" in err.value.fix


def test_unlock_deploy_upgrade_and_check():
    op = ops.unlock(name="tiny", invocation=WHO, host="gpu-01")
    assert (op.playbook, op.limit, op.extravars) == ("unlock.yml", "gpu-01", {"selfhost_run": WHO, "selfhost_name": "tiny"})
    up = ops.upgrade(invocation=WHO)
    assert (up.playbook, up.limit, up.command, up.fetch_keys) == ("site.yml", None, "upgrade", True)
    assert up.extravars == {"selfhost_run": WHO, "selfhost_rollout_serial": 1,
                            "selfhost_rollout_max_fail_percentage": 0, "selfhost_rollout_auto_rollback": True}
    assert up.steps == ("lock", *runner.STEPS, "release")
    dep, pre = ops.deploy(limit="gpu-*", invocation=WHO), ops.deploy_preview(limit="gpu-*", invocation=WHO)
    assert (dep.playbook, dep.limit, dep.check, dep.fetch_keys) == ("site.yml", "gpu-*", False, True)
    assert (pre.playbook, pre.limit, pre.check, pre.fetch_keys) == ("site.yml", "gpu-*", True, False)
    assert dep.extravars == pre.extravars == {"selfhost_run": WHO}
    chk = ops.deploy_check(limit=None)
    assert (chk.playbook, chk.check, chk.extravars, chk.command) == ("check.yml", True, {}, "deploy --check")


def test_audit_appends_one_record_per_host_reached():
    op = ops.audit(records={"a": {"result": "ok"}, "b": {"result": "failed"}}, invocation=WHO, name=None)
    assert (op.playbook, op.limit) == ("audit.yml", "a,b")
    assert op.extravars == {"selfhost_audit_records": {"a": {"result": "ok"}, "b": {"result": "failed"}},
                            "selfhost_run": WHO}


def test_operations_are_json_values():
    steps = ops.rotate_keys(name="tiny", invocation=WHO, host=None, grace_s=5, rotation="abc")
    doc = json.loads(json.dumps(ops.describe(steps)))
    assert [d.get("playbook") or "wait" for d in doc] == ["rotate_keys.yml", "wait", "rotate_keys.yml"]
    assert doc[1] == {"wait_s": 5, "reason": steps[1].reason}


def test_execute_fetches_keys_into_a_folder_it_deletes(monkeypatch, tmp_path):
    seen = {}

    def fake_run(bundle, *, key_fetch_dir=None, **kw):
        seen.update(kw, key_dir=key_fetch_dir)
        (key_fetch_dir / "gpu-01.conf").write_text('"Bearer ' + "k" * 32 + '" 1;  # rotation=abc\n')
        return runner.DeployResult(status="successful", rc=0, check=False)

    monkeypatch.setattr(runner, "run", fake_run)
    add = ops.rotate_keys(name="tiny", invocation=WHO, host=None, grace_s=0, rotation="abc")[0]
    done = ops.execute(tmp_path, add)
    assert done.keys == {"gpu-01": "k" * 32} and not seen["key_dir"].exists()
    assert (seen["playbook"], seen["extravars"], seen["command"]) == ("rotate_keys.yml", add.extravars, "rotate-keys")


# ---------------------------------------------------------------- --dry-run never reaches the runner

def _never(*a, **kw):
    raise AssertionError("a --dry-run reached runner.run")


INFOS = {"gpu-01": {"tiny": {"current": {"release": "r3"}, "previous": {"release": "r2"},
                             "records": {"r2": {"plan_digest": "aa11"}, "r3": {"plan_digest": "bb22"}}}}}


@pytest.mark.parametrize("command,args,playbooks", [
    ("rollback", [], ["rollback.yml"]),
    ("destroy", ["--purge"], ["destroy.yml"]),
    ("rotate-keys", ["--grace", "7"], ["rotate_keys.yml", None, "rotate_keys.yml"]),
    ("unlock", ["--host", "gpu-01"], ["unlock.yml"]),
])
def test_dry_run_prints_the_operations_and_runs_nothing(monkeypatch, tmp_path, command, args, playbooks):
    import importlib

    module = importlib.import_module(f"toolkit.commands.{command.replace('-', '_')}")
    monkeypatch.setattr(runner, "run", _never)
    monkeypatch.setattr(module, "ops_setup", lambda *a, **kw: (None, tmp_path, WHO, INFOS, "tiny"))
    app = typer.Typer()
    module.register(app)
    app.command("noop", hidden=True)(lambda: None)  # keep `command` a subcommand
    res = CliRunner().invoke(app, [command, "-i", str(tmp_path), *args, "--dry-run", "--json"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert [o.get("playbook") for o in doc["operations"]] == playbooks
    assert all(o["extravars"]["selfhost_name"] == "tiny" for o in doc["operations"] if "playbook" in o)
    text = CliRunner().invoke(app, [command, "-i", str(tmp_path), *args, "--dry-run"])
    assert text.exit_code == 0 and f"would run {playbooks[0]}" in text.output
    assert text.output.rstrip().endswith("dry run: nothing changed")


def test_dry_run_rollback_shows_the_target_it_would_pass(monkeypatch, tmp_path):
    from toolkit.commands import rollback

    monkeypatch.setattr(runner, "run", _never)
    monkeypatch.setattr(rollback, "ops_setup", lambda *a, **kw: (None, tmp_path, WHO, INFOS, "tiny"))
    app = typer.Typer()
    rollback.register(app)
    app.command("noop", hidden=True)(lambda: None)
    res = CliRunner().invoke(app, ["rollback", "-i", str(tmp_path), "--to", "bb", "--dry-run", "--json"])
    doc = json.loads(res.output)
    assert doc["hosts"]["gpu-01"]["target"] == "r3"
    assert doc["operations"][0]["extravars"]["selfhost_release_targets"] == {"gpu-01": "r3"}
