"""ansible-runner runs the shipped playbooks against localhost in check mode.

Proves the playbooks parse, the roles' argument specs accept the renderer's variable names, and
the read-only preflight checks run for real (OS, memory, CPU flags, disk, port) through
`toolkit.deploy.runner` — without Docker or SSH.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from toolkit.deploy import runner as deployer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _bundle(tmp: Path, **overrides) -> Path:
    b = tmp / "bundle"
    shutil.copytree(ROOT / "playbooks", b / "project")
    (b / "inventory").mkdir(parents=True)
    (b / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "auto",
    }}}}))
    extravars = {
        "selfhost_name": "it", "selfhost_plan_digest": "0" * 16, "selfhost_device": "cpu",
        "selfhost_root": str(tmp / "root"),
        "selfhost_preflight_min_memory_gib": 0.5, "selfhost_preflight_min_disk_gib": 0.01,
        "selfhost_preflight_cpu_flags": [],
        "selfhost_gateway_port": 18443, "selfhost_gateway_container": "it-gateway",
        "selfhost_check_verify": False,
        **overrides,
    }
    (b / "env").mkdir()
    (b / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    (b / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_ROLES_PATH": "roles"}))
    return b


def test_preflight_runs_read_only_on_localhost(tmp_path):
    events = []
    result = deployer.run(_bundle(tmp_path), check=True, playbook="check.yml", on_event=events.append)
    assert result.ok, result.failed
    assert result.hosts["localhost"].failed == 0
    assert result.total_changed == 0  # read-only
    ran = {e.task for e in events if e.status == "ok"}
    assert "Check the host has enough memory" in ran
    assert "Check there is enough free disk for the weights and images" in ran
    assert "Check the gateway port is free or held by our gateway" in ran
    assert not (tmp_path / "root").exists()  # nothing created


def test_preflight_failure_names_the_fix(tmp_path):
    result = deployer.run(_bundle(tmp_path, selfhost_preflight_min_memory_gib=1.0e6), check=True,
                          playbook="check.yml")
    assert result.status == "failed"
    [failed] = result.failed
    # Every check is recorded first; one assert then names each failed check with its fix.
    assert failed.step == "preflight" and failed.task == "Fail when a preflight check failed"
    assert "[memory]" in failed.message and "To fix: add memory" in failed.message
    assert "[disk]" not in failed.message
    with pytest.raises(Exception) as exc:
        result.raise_for_status()
    assert getattr(exc.value, "exit_code", None) == 2


def test_site_playbook_parses(tmp_path):
    """The full site.yml (all seven roles) passes ansible-playbook --syntax-check."""
    import os
    import subprocess
    import sys

    b = _bundle(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_ROLES_PATH": str(b / "project" / "roles")}
    res = subprocess.run(["ansible-playbook", "--syntax-check", "-i", str(b / "inventory"), "site.yml"],
                         cwd=b / "project", capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


LOCK_PROBE = """---
- name: Take and release the host lock (what every mutating playbook does first and last)
  hosts: all
  gather_facts: false
  tasks:
    - name: Take the host lock
      ansible.builtin.import_role:
        name: selfhost_lock
    - name: Release the host lock
      ansible.builtin.import_role:
        name: selfhost_lock
        tasks_from: release.yml
"""


@pytest.mark.parametrize("check", [True, False], ids=["check-mode", "live"])
def test_host_lock_free_then_held(tmp_path, check):
    """A free lock passes (the preview of a first deploy runs in check mode); a held one names its holder."""
    import json

    state = tmp_path / "state"
    b = _bundle(tmp_path, selfhost_lock_state_dir=str(state))
    (b / "project" / "lock_probe.yml").write_text(LOCK_PROBE)
    run = {"selfhost_run": deployer.invocation("selfhost deploy plan.yml -i sites/lab", site="sites/lab")}
    result = deployer.run(b, check=check, playbook="lock_probe.yml", extravars=run)
    assert result.ok, [f.message for f in result.failed]
    assert not (state / "lock").exists(), "released (or never taken in check mode)"

    (state / "lock").mkdir(parents=True)
    (state / "lock" / "owner.json").write_text(json.dumps({"id": "run-0", "who": "alice@ops", "since": "earlier",
                                                           "command": "selfhost upgrade"}))
    result = deployer.run(b, check=check, playbook="lock_probe.yml", extravars=run)
    [failed] = result.failed
    assert failed.message.startswith("localhost is locked by alice@ops since earlier running selfhost upgrade; "
                                     "wait for it, or `selfhost unlock -i sites/lab --host localhost`"), failed.message
    assert json.loads((state / "lock" / "owner.json").read_text())["id"] == "run-0", "their lock is left alone"


ADAPTER_PROBE = """---
- name: Ship the LoRA adapters (the weights role's adapter tasks)
  hosts: all
  gather_facts: false
  tasks:
    - name: Ship and verify the adapters
      ansible.builtin.import_role:
        name: selfhost_weights
        tasks_from: adapters.yml
  handlers:
    - name: Weights changed
      ansible.builtin.debug:
        msg: restart the server
      listen: selfhost weights changed
"""


def test_adapters_are_copied_root_owned_and_verified(tmp_path):
    """Live on localhost: the adapter lands in its content-addressed dir (0644/0755) and passes its manifest;
    a source changed after render fails the check with the fix, and the first copy is left as it was."""
    import hashlib
    import os
    import stat

    from toolkit.render.manifest import HashCache, manifest

    src = tmp_path / "ad" / "support"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}\n')
    (src / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    text = manifest(src, HashCache(tmp_path / "cache.json"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    dest = tmp_path / "root" / "it" / "adapters" / digest / "support"
    art = {"name": "support", "source": str(src), "manifest": "files/adapters/support.sha256", "digest": digest,
           "dir": str(dest), "mount": "/adapters/support"}
    b = _bundle(tmp_path, selfhost_weights_adapters=[art])
    (b / "files" / "adapters").mkdir(parents=True)
    (b / "files" / "adapters" / "support.sha256").write_text(text)
    (b / "project" / "adapter_probe.yml").write_text(ADAPTER_PROBE)
    result = deployer.run(b, check=False, playbook="adapter_probe.yml")
    assert result.ok, [f.message for f in result.failed]
    assert (dest / "adapter_model.safetensors").read_bytes() == b"x" * 1000
    for f in dest.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755 and dest.stat().st_uid == os.getuid()
    assert Path(f"{dest}.sha256").read_text() == text

    (src / "adapter_model.safetensors").write_bytes(b"y" * 1000)  # changed after render
    result = deployer.run(b, check=False, playbook="adapter_probe.yml")
    assert not result.ok
    assert any("match the manifest" in f.message and "re-render" in f.message for f in result.failed), \
        [f.message for f in result.failed]


def test_route_audit_fetches_and_verifies_the_hosts_log(tmp_path):
    """playbooks/route_audit.yml copies <root>/<name>/router/audit.jsonl to the control node; the CLI's
    verification runs on the copy (intact: ok; an edited line: broken); no log: the host is named."""
    import json

    from router.audit import AuditLog
    from toolkit.commands.route import fetch_reports

    b = _bundle(tmp_path)
    reports, errors = fetch_reports(b, ["localhost"], 30)
    assert not reports and "no audit log" in errors["localhost"]

    log = tmp_path / "root" / "it" / "router" / "audit.jsonl"
    audit = AuditLog(log)
    for route in ("local", "remote", "local"):
        audit.append({"caller": "t", "route": route, "findings": {}})
    reports, errors = fetch_reports(b, ["localhost"], 30)
    assert not errors and reports["localhost"]["ok"] and reports["localhost"]["records"] == 3

    lines = log.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["caller"] = "someone-else"
    log.write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    reports, _ = fetch_reports(b, ["localhost"], 30)
    assert not reports["localhost"]["ok"] and reports["localhost"]["first_bad_line"] == 1


WEIGHTS_PROBE = """---
- name: Ship and verify the weights (the weights role alone)
  hosts: all
  gather_facts: false
  tasks:
    - name: Ship and verify the weights
      ansible.builtin.import_role:
        name: selfhost_weights
  handlers:
    - name: Weights changed
      ansible.builtin.debug:
        msg: restart the server
      listen: selfhost weights changed
"""


def test_weights_are_hashed_only_when_their_stat_moved(tmp_path):
    """Live on localhost: the first run copies and hashes every file; a re-run hashes none, copies
    nothing (one check instead of the copy steps) and changes nothing; a file corrupted in place with
    its size and mtime put back (rsync's quick check cannot see it) is still caught through its
    ctime, removed, copied again and verified; a full verify hashes all."""
    import json
    import os

    from toolkit.render.manifest import HashCache, manifest

    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (src / "model.safetensors").write_bytes(bytes(range(256)) * 4096)
    dest = tmp_path / "root" / "it" / "weights"
    b = _bundle(tmp_path, selfhost_weights_source=str(src), selfhost_weights_manifest="files/weights.sha256",
                selfhost_weights_dir=str(dest))
    (b / "files").mkdir()
    (b / "files" / "weights.sha256").write_text(manifest(src, HashCache(tmp_path / "cache.json")))
    (b / "project" / "weights_probe.yml").write_text(WEIGHTS_PROBE)
    total = sum(p.stat().st_size for p in src.iterdir())

    def deploy(**extravars):
        checks: list[dict] = []
        ran: list[str] = []

        def keep(event):
            data = event.get("event_data") or {}
            if event.get("event") == "runner_on_ok":
                ran.append(data.get("task", ""))
                if data.get("task", "").startswith(("Verify the weights", "Check whether the host already holds")):
                    checks.append(json.loads(data["res"]["stdout"]))
        result = deployer.run(b, playbook="weights_probe.yml", extravars=extravars, on_raw_event=keep)
        assert result.ok, [f.message for f in result.failed]
        return result, checks, ran

    nothing_there = {"bad": [], "hashed": 0, "trusted": 0, "hashed_bytes": 0, "in_place": False}
    result, checks, ran = deploy()
    assert checks == [nothing_there, {"bad": [], "hashed": 2, "trusted": 0, "hashed_bytes": total}]
    result, checks, ran = deploy()
    assert result.total_changed == 0
    assert checks == [{"bad": [], "hashed": 0, "trusted": 2, "hashed_bytes": 0, "in_place": True}]
    assert "Copy the weights manifest" not in ran, "nothing to ship: the copy steps are skipped"
    stamp = Path(f"{dest}.verified.json")
    recorded = stamp.stat().st_mtime_ns
    preview = deployer.run(b, check=True, playbook="weights_probe.yml")
    assert preview.ok and preview.total_changed == 0 and stamp.stat().st_mtime_ns == recorded, "check mode writes nothing"

    target = dest / "model.safetensors"
    before = target.stat()
    os.chmod(target, 0o644)
    with open(target, "r+b") as f:
        f.seek(4096)
        f.write(b"corrupt!")
    os.chmod(target, 0o444)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as they were
    result, checks, ran = deploy()
    assert result.total_changed > 0
    assert checks[0]["bad"] == ["model.safetensors"] and checks[0]["trusted"] == 1 and not checks[0]["in_place"]
    assert checks[-1] == {"bad": [], "hashed": 1, "trusted": 1, "hashed_bytes": 1024 * 1024}, "the fresh copy passed"
    assert target.read_bytes() == (src / "model.safetensors").read_bytes()

    result, checks, ran = deploy(selfhost_weights_verify_full=True)
    assert result.total_changed == 0
    assert checks == [{"bad": [], "hashed": 2, "trusted": 0, "hashed_bytes": total, "in_place": True}]

    dest.chmod(0o755)
    (dest / "stray.bin").write_bytes(b"not in the manifest")
    dest.chmod(0o555)
    result, checks, ran = deploy()
    assert not checks[0]["in_place"] and not (dest / "stray.bin").exists(), "a file the manifest lacks is removed"


FACTS_PROBE = """---
- name: Read a fact the way site.yml does (no gather_facts, so the runner's smart gathering decides)
  hosts: all
  gather_subset: [min, network]
  tasks:
    - name: Show the distribution
      ansible.builtin.debug:
        msg: "{{ ansible_facts['distribution'] }}"
"""


def test_facts_are_gathered_once_for_two_runs_of_a_bundle(tmp_path):
    """A deploy's preview and its run (or a re-run soon after) gather the facts once: the cache outlives
    ansible-runner's per-run folder."""
    b = _bundle(tmp_path)
    (b / "project" / "facts_probe.yml").write_text(FACTS_PROBE)
    gathered = []
    for check in (True, False):
        events: list = []
        result = deployer.run(b, check=check, playbook="facts_probe.yml", on_event=events.append)
        assert result.ok, result.failed
        gathered.append(sum(e.task == "Gathering Facts" and e.status == "ok" for e in events))
    assert gathered == [1, 0]
