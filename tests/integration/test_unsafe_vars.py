"""Strings from plan.yml, the site or the command line reach Ansible as data, never as templates.

A real ansible-playbook run on localhost (through `toolkit.deploy.runner`, as every selfhost command
runs): a Jinja payload in env/extravars (written by the renderer) and in the run-time vars arrives
literally, and the command in the payload never runs. The control run (plain YAML) shows the payload
would run otherwise, so the test cannot pass by accident.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from toolkit.deploy import runner as deployer
from toolkit.render.bundle import unsafe_yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROBE = """- hosts: inference
  gather_facts: false
  tasks:
    - name: Write what arrived
      ansible.builtin.copy:
        dest: "{{ selfhost_probe_out }}/{{ item.key }}.txt"
        content: "{{ item.value }}"
        mode: "0600"
      loop:
        - {key: bundle, value: "{{ selfhost_vllm_served_model_name }}"}
        - {key: nested, value: "{{ selfhost_vllm_argv[1] }}"}
        - {key: runtime, value: "{{ selfhost_logs_since }}"}
    - name: Serialize the run record as the lock and audit roles do
      ansible.builtin.copy:
        dest: "{{ selfhost_probe_out }}/run.json"
        content: "{{ {'who': selfhost_run.who | default('x'), 'command': selfhost_run.command} | to_nice_json }}"
        mode: "0600"
"""


def _payload(marker: Path) -> str:
    return "{{ lookup('pipe', 'touch " + str(marker) + "') }}x"


def _bundle(tmp: Path, dump, marker: Path) -> Path:
    b = tmp / "bundle"
    shutil.copytree(ROOT / "playbooks", b / "project")
    (b / "project" / "probe.yml").write_text(PROBE)
    (b / "inventory").mkdir(parents=True)
    (b / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "auto",
    }}}}))
    (b / "env").mkdir()
    (tmp / "out").mkdir()
    (b / "env" / "extravars").write_text(dump({
        "selfhost_probe_out": str(tmp / "out"),
        "selfhost_vllm_served_model_name": _payload(marker),
        "selfhost_vllm_argv": ["--served-model-name", _payload(marker)],
    }))
    return b


def test_jinja_in_extravars_arrives_literally_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bundle = _bundle(tmp_path, unsafe_yaml, marker)
    run = {**deployer.invocation("selfhost logs"), "command": "selfhost logs --since " + _payload(marker)}
    result = deployer.run(bundle, playbook="probe.yml",
                          extravars={"selfhost_logs_since": _payload(marker), "selfhost_run": run})
    assert result.ok, result.failed
    assert not marker.exists(), "a Jinja payload ran on the control node"
    for name in ("bundle", "nested", "runtime"):
        assert (tmp_path / "out" / f"{name}.txt").read_text() == _payload(marker)
    import json
    assert json.loads((tmp_path / "out" / "run.json").read_text())["command"] == run["command"]  # still data


def test_control_plain_yaml_would_run_the_payload(tmp_path):
    """Without `!unsafe` the same file runs the payload: the tag is what stops it."""
    marker = tmp_path / "pwned"
    bundle = _bundle(tmp_path, lambda d: yaml.safe_dump(d), marker)
    deployer.run(bundle, playbook="probe.yml", extravars={"selfhost_logs_since": "-"})
    assert marker.exists()


def test_rendered_bundle_extravars_are_all_unsafe(tmp_path):
    """The renderer's env/extravars: every string value is `!unsafe`, keys stay plain, and it loads back."""
    from toolkit.render.bundle import load_vars

    data = {"a": "{{ x }}", "b": ["", "y"], "c": {"d": "z", "e": 1, "f": True, "g": None}}
    text = unsafe_yaml(data)
    assert load_vars(text) == data
    # Strings that could hold Jinja (a `{`) are `!unsafe`; the others are single-quoted strings, since
    # ansible-core 2.19 re-types an `!unsafe` scalar ('1' -> 1, '' -> None).
    for line in text.splitlines():
        value = None
        if ": " in line and not line.rstrip().endswith(":"):
            value = line.split(": ", 1)[1]
        elif line.lstrip().startswith("- "):
            value = line.lstrip()[2:]
        if value is None or value in ("1", "true", "null"):
            continue
        assert value.startswith("!unsafe '") if "{" in value else value.startswith("'"), line


TYPES = """- hosts: inference
  gather_facts: false
  tasks:
    - name: Write the type and text of what arrived
      ansible.builtin.copy:
        dest: "{{ selfhost_probe_out }}/types.json"
        content: "{{ {'empty': [selfhost_logs_since | type_debug, selfhost_logs_since | string],
                      'digits': [selfhost_logs_tail | type_debug, selfhost_logs_tail | string],
                      'decimal': [selfhost_x | type_debug, selfhost_x | string]} | to_json }}"
        mode: "0600"
"""


def test_plain_strings_keep_their_type_and_text(tmp_path):
    """'' stays '' and '1' / '0.90' stay strings (an `!unsafe` tag would make them None / 1 / 0.9 in
    ansible-core 2.19: `docker logs --since None` was the symptom)."""
    import json

    bundle = _bundle(tmp_path, unsafe_yaml, tmp_path / "unused")
    (bundle / "project" / "types.yml").write_text(TYPES)
    result = deployer.run(bundle, playbook="types.yml",
                          extravars={"selfhost_logs_since": "", "selfhost_logs_tail": "1", "selfhost_x": "0.90"})
    assert result.ok, result.failed
    got = json.loads((tmp_path / "out" / "types.json").read_text())
    assert got == {"empty": ["str", ""], "digits": ["str", "1"], "decimal": ["str", "0.90"]}, got
