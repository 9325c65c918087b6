"""Pure parts of the mutating day-2 commands: release diff (flags one by one), name resolution, the lock
error mapping, the audit record shape and the rotated-key reader; and the lock/rotation scripts the
roles run on the hosts, run here against a temp dir."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from toolkit.operate import releases as ops
from toolkit.deploy.runner import DeployResult, FailedTask, HostStats
from toolkit.errors import ConfigError, DeployError, LockedError
from toolkit.render.deploy_vars import ServerSpec

ROOT = Path(__file__).resolve().parents[2]
LOCK_PY = ROOT / "playbooks" / "roles" / "selfhost_lock" / "files" / "lock.py"
KEYS_PY = ROOT / "playbooks" / "roles" / "selfhost_gateway" / "files" / "api_keys.py"

ARGV = ["--model", "/models/tiny", "--served-model-name", "tiny", "--max-model-len", "512", "--enforce-eager"]


def _release(argv=ARGV, image="vllm:0.32.0", weights="/opt/selfhost/tiny/weights/aaaaaaaaaaaa", env=None,
             digest="p1"):
    return {"plan_digest": digest, "images": {"vllm": image, "gateway": "nginx:1.27"},
            "vllm": {"argv": list(argv), "env": env or {"HF_HUB_OFFLINE": "1"}, "weights_dir": weights,
                     "model_mount": "/models/tiny", "served_model_name": "tiny", "image": image}}


def test_argv_flags_reads_values_switches_and_equals():
    assert ops.argv_flags(["serve", "--a", "1", "--b", "--c=x y", "--d", "--e"]) == {
        "(arg0)": "serve", "--a": "1", "--b": None, "--c": "x y", "--d": None, "--e": None}


def test_release_diff_names_each_changed_flag_image_model_and_env():
    cur = _release()
    new = _release(argv=["--model", "/models/tiny", "--served-model-name", "tiny", "--max-model-len", "4096",
                         "--enable-reasoning"], image="vllm:0.33.0", weights="/opt/selfhost/tiny/weights/bbbbbbbbbbbb",
                   env={"HF_HUB_OFFLINE": "1", "VLLM_X": "2"}, digest="p2")
    changes = {c.what: (c.kind, c.old, c.new) for c in ops.release_diff(cur, new)}
    assert changes == {
        "plan": ("~", "p1", "p2"),
        "image": ("~", "vllm:0.32.0", "vllm:0.33.0"),
        "model": ("~", "aaaaaaaaaaaa", "bbbbbbbbbbbb"),
        "flag --max-model-len": ("~", "512", "4096"),
        "flag --enforce-eager": ("-", "(on)", None),
        "flag --enable-reasoning": ("+", None, "(on)"),
        "env VLLM_X": ("+", None, "2"),
    }


def test_release_diff_same_release_is_empty_and_first_release_says_so():
    assert ops.release_diff(_release(), _release()) == []
    (first,) = ops.release_diff(None, _release())
    assert (first.what, first.kind, first.new) == ("release", "+", "p1 (first recorded release)")


def test_resolve_name():
    assert ops.resolve_name({"a": {"tiny": {}}, "b": {"tiny": {}}}, None) == "tiny"
    assert ops.resolve_name({"a": {"tiny": {}}}, "tiny") == "tiny"
    with pytest.raises(ConfigError, match="several deployments: big, tiny"):
        ops.resolve_name({"a": {"tiny": {}, "big": {}}}, None)
    with pytest.raises(ConfigError, match="keep no selfhost release"):
        ops.resolve_name({"a": {}}, None)
    with pytest.raises(ConfigError, match="no deployment 'x' on the hosts"):
        ops.resolve_name({"a": {"tiny": {}}}, "x")


LOCK_MSG = ("gpu-01 is locked by alice@ops since 2026-11-01T09:00:00Z running selfhost upgrade plan.yml -i prod; "
            "wait for it, or `selfhost unlock -i prod --host gpu-01` if that run died")


def test_a_failed_lock_task_is_a_locked_error_with_its_message():
    r = DeployResult(status="failed", rc=2, check=False, hosts={"gpu-01": HostStats(failed=1)},
                     failed=[FailedTask("gpu-01", "lock", "Check no other run holds the host lock", LOCK_MSG)])
    with pytest.raises(LockedError) as exc:
        r.raise_for_status()
    assert exc.value.message == LOCK_MSG
    assert exc.value.exit_code == 2 and isinstance(exc.value, DeployError)


def test_audit_record_shape_and_host_status():
    run = {"id": "r1", "who": "bob@ctl", "pid": 7, "command": "selfhost upgrade p.yml -i s", "since": "T0"}
    r = DeployResult(status="failed", rc=2, check=False,
                     hosts={"a": HostStats(ok=5, changed=3, failed=1), "b": HostStats(ok=9, changed=0)},
                     failed=[FailedTask("a", "setup", ops.STOP_TASK, "a: ... -- rolled back automatically to ...")])
    recs = ops.audit_records(r, invocation=run, plan_digest="p2", name="tiny")
    assert set(recs) == {"a", "b"}
    a = recs["a"]
    assert set(a) == {"when", "since", "who", "pid", "command", "run_id", "deployment", "plan_digest", "host",
                      "result", "changed"}
    assert (a["who"], a["command"], a["plan_digest"], a["result"], a["changed"]) == (
        "bob@ctl", "selfhost upgrade p.yml -i s", "p2", "rolled back", 3)
    assert recs["b"]["result"] == "ok" and recs["b"]["changed"] == 0
    json.dumps(recs)  # one JSON line each


def test_read_keys_takes_only_this_rotation(tmp_path):
    from toolkit.operate.operations import read_keys

    (tmp_path / "h1.conf").write_text('    "Bearer ' + "a" * 64 + '" 1;  # rotation=r2\n')
    (tmp_path / "h2.conf").write_text('    "Bearer ' + "b" * 64 + '" 1;  # rotation=old\n')
    assert read_keys(tmp_path, "r2") == {"h1": "a" * 64}
    # deploy/upgrade: every host's (first) key, with or without a rotation mark
    (tmp_path / "h3.conf").write_text('    "Bearer ' + "c" * 64 + '" 1;\n    "Bearer ' + "d" * 64 + '" 1;\n')
    assert read_keys(tmp_path) == {"h1": "a" * 64, "h2": "b" * 64, "h3": "c" * 64}


def _lock(mode, state, arg):
    out = subprocess.run([sys.executable, str(LOCK_PY), mode, str(state), json.dumps(arg)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_lock_script_is_atomic_reentrant_and_releases_only_its_own(tmp_path):
    me, other = {"id": "me", "who": "me@x"}, {"id": "other", "who": "o@y"}
    assert _lock("take", tmp_path, me) == {"held": False, "owner": me}
    assert _lock("take", tmp_path, me)["held"] is False, "re-entrant for the same run"
    assert _lock("take", tmp_path, other) == {"held": True, "owner": me}
    assert _lock("check", tmp_path, other)["held"] is True
    _lock("release", tmp_path, other)
    assert (tmp_path / "lock").is_dir(), "a run never releases someone else's lock"
    _lock("release", tmp_path, me)
    assert not (tmp_path / "lock").exists()
    _lock("take", tmp_path, other)
    assert _lock("force", tmp_path, {}) == {"held": True, "owner": other}
    assert not (tmp_path / "lock").exists()


def test_audit_appends_one_line_per_call_root_only(tmp_path):
    _lock("audit", tmp_path, {"n": 1})
    _lock("audit", tmp_path, {"n": 2})
    log = tmp_path / "audit.log"
    assert [json.loads(x)["n"] for x in log.read_text().splitlines()] == [1, 2]
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_rotate_script_adds_first_then_retires_the_old(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text('map_hash_bucket_size 128;\nmap $http_authorization $ok {\n    default 0;\n'
                    '    "Bearer ' + "0" * 64 + '" 1;\n}\n')
    run = lambda mode: {k: v for k, v in json.loads(subprocess.run(  # noqa: E731
        [sys.executable, str(KEYS_PY), "rotate-" + mode, str(conf), "r1", "default"],
        capture_output=True, text=True, check=True).stdout).items() if k in ("changed", "keys")}
    assert run("add") == {"changed": True, "keys": 2}
    assert run("add") == {"changed": False, "keys": 2}, "once per rotation"
    lines = conf.read_text().splitlines()
    assert lines[3].endswith("# rotation=r1") and "0" * 64 in lines[4]
    new = (tmp_path / "api-keys.conf.new").read_text()
    assert new.strip() == lines[3].strip()
    assert run("retire") == {"changed": True, "keys": 1}
    assert "0" * 64 not in conf.read_text() and conf.read_text().rstrip().endswith("}")
    assert oct(conf.stat().st_mode & 0o777) == "0o600"


def _docker_container_tasks() -> list[tuple[str, dict]]:
    """(file, task) for every community.docker.docker_container task under playbooks/, blocks included."""
    found = []

    def walk(tasks, rel):
        for t in tasks or []:
            if isinstance(t, dict):
                if "community.docker.docker_container" in t:
                    found.append((rel, t))
                for key in ("block", "rescue", "always", "tasks"):
                    walk(t.get(key), rel)
    for path in sorted((ROOT / "playbooks").rglob("*.yml")):
        walk(yaml.safe_load(path.read_text()), path.relative_to(ROOT / "playbooks").as_posix())
    return found


def test_exactly_one_docker_container_task_runs_the_server():
    """Deploy, automatic rollback and `selfhost rollback` all run the server through one task that takes the
    whole spec: no second copy that could set other options."""
    tasks = _docker_container_tasks()
    server = [(rel, t) for rel, t in tasks if "_selfhost_vllm_spec" in str(t)]
    assert [rel for rel, _ in server] == ["roles/selfhost_vllm/tasks/container.yml"]
    others = [rel for rel, t in tasks if (rel, t) not in server]
    assert others == ["destroy.yml", "roles/selfhost_gateway/tasks/main.yml",  # removal; the gateway
                      "roles/selfhost_router/tasks/main.yml"], others  # the hybrid router (site router/policy.yaml)
    (_, task), = server
    spec_fields = set(ServerSpec.model_fields)
    used = set(re.findall(r"_selfhost_vllm_spec\.(\w+)", str(task)))
    assert used == spec_fields, f"spec fields the task ignores: {spec_fields - used}; unknown: {used - spec_fields}"
    roles = ROOT / "playbooks" / "roles"
    assert "tasks_from: container.yml" in (roles / "selfhost_release" / "tasks" / "rollback.yml").read_text()
    assert "import_tasks: container.yml" in (roles / "selfhost_vllm" / "tasks" / "main.yml").read_text()
    # No playbook builds the server from the pieces the spec is made of.
    pieces = re.compile(r"selfhost_vllm_(argv|env|model_mount|cache_dir|cache_mount|gpus|ipc_host|healthcheck"
                        r"|health_start_period_s)\b|selfhost_health_(interval|timeout|retries)_s")
    users = sorted({p.relative_to(roles.parent).as_posix() for p in (ROOT / "playbooks").rglob("*.yml")
                    if pieces.search(p.read_text())} - {"roles/selfhost_gateway/defaults/main.yml",
                                                         "roles/selfhost_preflight/defaults/main.yml",
                                                         "roles/selfhost_router/defaults/main.yml"})
    assert users == [], users
    # One health wait for the server, shared (the router, a container of its own, waits for itself).
    waits = [p for p in (ROOT / "playbooks").rglob("*.yml") if "State.Health.Status" in p.read_text()
             and "until:" in p.read_text()]
    assert sorted(p.relative_to(roles).as_posix() for p in waits) == ["selfhost_router/tasks/main.yml",
                                                                      "selfhost_vllm/tasks/healthy.yml"]


def test_the_release_record_is_the_server_spec_plus_ids():
    from tests.unit.test_render import CASES, HOSTS, _site, _weights
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    dv = render(CASES["gpu-tp4-llama70b-h100"](), load_site(_site(tmp, HOSTS["gpu-tp4-llama70b-h100"])),
                tmp / "out", weights_source=_weights(tmp)).vars
    record = ops.expected_release(dv)
    assert record["vllm"] == dv.selfhost_server.model_dump(mode="json")
    assert record["release"] == dv.selfhost_release.release and len(record["release"]) == 16
    assert record["weights_dir"] == dv.selfhost_weights_dir and record["record_schema"] == 2
    # The id is the content hash of the record without it: the same bundle, the same release.
    body = json.dumps({k: v for k, v in record.items() if k != "release"}, sort_keys=True)
    assert record["release"] == hashlib.sha256(body.encode()).hexdigest()[:16]
    spec = dv.selfhost_server
    assert spec.ipc_mode == "host" and spec.shm_size is None  # host IPC: the host's /dev/shm, no size of ours
    assert [d.count for d in spec.device_requests] == [4]
    assert spec.labels == {"org.selfhost.name": "llama-70b", "org.selfhost.plan-digest": dv.selfhost_plan_digest}
    assert [(m.target, m.read_only) for m in spec.mounts] == [("/models/llama-3.1-70b", True), ("/var/cache/vllm", None)]
    assert spec.healthcheck.start_period == "900s"
    assert ops.release_diff(record, record) == []


def test_rollback_target_is_chosen_once_by_prefix_or_previous():
    recs = {"aaaa1111": {"plan_digest": "p1", "release": "aaaa1111"},
            "aaaa2222": {"plan_digest": "q2", "release": "aaaa2222"},
            "bbbb3333": {"plan_digest": "p1ff", "release": "bbbb3333"}}
    kept = {"records": recs, "previous": recs["aaaa2222"], "current": recs["bbbb3333"]}
    assert ops.rollback_target(kept, None) == "aaaa2222"
    assert ops.rollback_target(kept, "bbbb") == "bbbb3333"
    assert ops.rollback_target(kept, "q2") == "aaaa2222"
    assert ops.rollback_target(kept, "aaaa") is None, "ambiguous"
    assert ops.rollback_target(kept, "p1") is None, "a digest prefix shared by two releases is ambiguous too"
    assert ops.rollback_target({"records": recs}, None) is None
    assert ops.rollback_target({}, "x") is None


def test_release_diff_reads_records_of_the_older_schema():
    old = {"plan_digest": "p1", "images": {"gateway": "nginx:1.27"},
           "vllm": {"argv": ARGV, "env": {}, "weights_dir": "/w/aaa", "served_model_name": "tiny", "image": "v:1"}}
    new = {"plan_digest": "p1", "images": {"gateway": "nginx:1.27"}, "weights_dir": "/w/bbb",
           "served_model_name": "tiny", "vllm": {"argv": ARGV, "env": {}, "image": "v:1"}}
    assert [(c.what, c.old, c.new) for c in ops.release_diff(old, new)] == [("model", "aaa", "bbb")]
