"""API keys with caller labels: the gateway role's keys script (run on temp files, as root runs it on a host),
the keys operations, the CLI's dry runs, and what the key fetch shows once."""
from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.errors import ConfigError
from toolkit.operate import operations as ops

ROOT = Path(__file__).resolve().parents[2]
KEYS_PY = ROOT / "playbooks" / "roles" / "selfhost_gateway" / "files" / "api_keys.py"
FLEET_PY = ROOT / "playbooks" / "roles" / "selfhost_gateway" / "files" / "fleet_keys.py"
WHO = {"id": "run-1", "user": "ops"}
LEGACY = ('# selfhost API keys (root-only): one quoted Authorization value per line, then 1.\n'
          'map_hash_bucket_size 128;\nmap $http_authorization $selfhost_api_key_ok {\n    default 0;\n'
          '    "Bearer ' + "0" * 64 + '" 1;\n}\n')
KEY_LINE = re.compile(r'"Bearer ([0-9a-f]{64})" (1|"[^"]*");')


def keys(*args, check=True) -> dict | subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, str(KEYS_PY), *map(str, args)], capture_output=True, text=True, check=False)
    if not check:
        return res
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def labels_of(conf: Path) -> list[str]:
    return [v for _, v in KEY_LINE.findall(conf.read_text())]


def test_create_writes_one_labelled_key_root_only_and_never_overwrites(tmp_path):
    conf = tmp_path / "api-keys.conf"
    assert keys("create", conf, "team-a") == {"changed": True}
    text = conf.read_text()
    assert 'default "";' in text and labels_of(conf) == ['"team-a"']
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert keys("create", conf, "other") == {"changed": False} and conf.read_text() == text


def test_add_labels_once_per_tag_shows_the_key_once_and_never_prints_it(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    out = keys("add", conf, "t1", "default", "team-a")
    assert out["changed"] and out["keys"] == 2 and out["labels"] == ["default", "team-a"]
    assert keys("add", conf, "t1", "default", "team-a")["changed"] is False, "a re-run of one `keys add` adds nothing"
    new = (tmp_path / "api-keys.conf.new").read_text()
    [(key, value)] = KEY_LINE.findall(new)
    assert value == '"team-a"' and new.rstrip().endswith("# issued=t1") and key in conf.read_text()
    assert key not in json.dumps(out)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "api-keys.conf.new").stat().st_mode) == 0o600
    assert "0" * 64 in conf.read_text(), "the old (value 1) key keeps working"


@pytest.mark.parametrize("label", ["", "1", "0", "bad label", 'x";', "a" * 129])
def test_bad_labels_are_refused(tmp_path, label):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    res = keys("add", conf, "t1", "default", label, check=False)
    assert res.returncode != 0 and "label" in res.stderr and conf.read_text() == LEGACY


def test_add_refuses_while_the_gateway_config_predates_labels(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    (tmp_path / "nginx.conf").write_text("if ($selfhost_api_key_ok != 1) { return 401; }\n")
    res = keys("add", conf, "t1", "default", "team-a", check=False)
    assert res.returncode != 0 and "deploy" in res.stderr and conf.read_text() == LEGACY
    (tmp_path / "nginx.conf").write_text('if ($selfhost_caller = "") { return 401; }\n')
    assert keys("add", conf, "t1", "default", "team-a")["changed"]


def test_list_counts_labels_and_tags_and_treats_1_as_the_site_default(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    keys("add", conf, "t1", "site", "team-a")
    keys("add", conf, "t2", "site", "team-a")
    out = keys("list", conf, "", "site")
    assert out["keys"] == 3 and out["changed"] is False
    assert out["labels"] == {"site": {"keys": 1, "site_default": True, "tags": []},
                             "team-a": {"keys": 2, "site_default": False, "tags": ["issued=t2", "issued=t1"]}}
    assert not re.search(r"[0-9a-f]{64}", json.dumps(out)), "never a key"


def test_revoke_drops_every_key_of_a_label_but_never_the_last_key(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    keys("add", conf, "t1", "default", "team-a")
    keys("add", conf, "t2", "default", "team-a")
    res = keys("revoke", conf, "", "default", "nobody", check=False)
    assert res.returncode != 0 and "no key has the label 'nobody'" in res.stderr
    out = keys("revoke", conf, "", "default", "team-a")
    assert out["changed"] and out["keys"] == 1 and out["labels"] == ["default"]
    res = keys("revoke", conf, "", "default", "default", check=False)
    assert res.returncode != 0 and "every key" in res.stderr and "0" * 64 in conf.read_text()


def test_rotation_keeps_each_label_and_the_1_of_old_keys(tmp_path):
    conf = tmp_path / "api-keys.conf"
    conf.write_text(LEGACY)
    keys("add", conf, "t1", "default", "team-a")
    keys("add", conf, "t2", "default", "legal")
    before = KEY_LINE.findall(conf.read_text())
    out = keys("rotate-add", conf, "r1", "default")
    assert out["changed"] and out["keys"] == 6 and out["added"] == ["default", "legal", "team-a"]
    assert keys("rotate-add", conf, "r1", "default")["changed"] is False, "once per rotation"
    new = KEY_LINE.findall((tmp_path / "api-keys.conf.new").read_text())
    assert sorted(v for _, v in new) == ['"legal"', '"team-a"', "1"], "a value-1 key's successor keeps its 1"
    out = keys("rotate-retire", conf, "r1", "default")
    assert out["changed"] and out["keys"] == 3
    after = KEY_LINE.findall(conf.read_text())
    assert sorted(after) == sorted(new) and not set(before) & set(after)
    assert conf.read_text().rstrip().endswith("}")
    res = keys("rotate-retire", conf, "r9", "default", check=False)
    assert res.returncode != 0 and "refusing to remove every key" in res.stderr


def test_fleet_keys_are_labelled_too(tmp_path):
    res = subprocess.run([sys.executable, str(FLEET_PY), str(tmp_path), "team-x"], capture_output=True, text=True,
                         check=True)
    assert json.loads(res.stdout)["created"] == ["api-keys.conf", "fleet-secret.conf"]
    assert labels_of(tmp_path / "api-keys.conf") == ['"team-x"']


def test_read_keys_takes_labels_and_tags(tmp_path):
    (tmp_path / "gpu-01.conf").write_text('    "Bearer ' + "a" * 64 + '" "team-a";  # rotation=r1\n'
                                          '    "Bearer ' + "b" * 64 + '" 1;  # rotation=r1\n'
                                          '    "Bearer ' + "c" * 64 + '" "team-b";  # issued=t1\n')
    assert ops.read_keys(tmp_path, "r1") == {"gpu-01": "a" * 64}
    assert ops.read_keys(tmp_path, "t1") == {"gpu-01": "c" * 64}
    assert ops.read_labelled_keys(tmp_path, "r1", "site") == {"gpu-01": {"team-a": "a" * 64, "site": "b" * 64}}
    (tmp_path / "gpu-02.conf").write_text('map {\n    default "";\n    "Bearer ' + "d" * 64 + '" "default";\n}\n')
    assert ops.read_keys(tmp_path)["gpu-02"] == "d" * 64, "a deploy-created key (no tag)"


def test_keys_operations_are_values():
    add = ops.keys_add(name="tiny", invocation=WHO, host="gpu-02", label="team-a", tag="t1")
    assert (add.playbook, add.limit, add.command, add.fetch_keys, add.rotation) == (
        "keys.yml", "gpu-02", "keys add", True, "t1")
    assert add.extravars["selfhost_keys_action"] == "add" and add.extravars["selfhost_keys_label"] == "team-a"
    rev = ops.keys_revoke(name="tiny", invocation=WHO, host=None, label="team-a", fleet=["a", "b"])
    assert (rev.limit, rev.fetch_keys, rev.extravars["selfhost_keys_action"]) == (None, False, "revoke")
    lst = ops.keys_list(name="tiny", invocation=WHO, host=None, serving=["a", "c"])
    assert (lst.limit, lst.report, lst.check) == ("a,c", "_selfhost_gateway_keys", False)
    with pytest.raises(ConfigError, match="fleet"):
        ops.keys_add(name="tiny", invocation=WHO, host="a", label="x", tag="t", fleet=["a", "b"])
    with pytest.raises(ConfigError, match="headless"):
        ops.keys_revoke(name="tiny", invocation=WHO, host="b", label="x", serving=["a"])


def test_the_cli_refuses_a_bad_label_before_touching_any_host(monkeypatch):
    from typer.testing import CliRunner

    from toolkit import cli
    from toolkit.commands import keys as keys_cmd

    monkeypatch.setattr(keys_cmd, "ops_setup", lambda *a, **kw: pytest.fail("no host reached"))
    cli._register()
    res = CliRunner().invoke(cli.app, ["keys", "add", "-i", "sites/x", "--label", "bad label", "--dry-run"])
    assert res.exit_code != 0 and "--label" in str(res.exception or res.output)


def test_render_refuses_a_site_gateway_template_that_predates_labels(tmp_path):
    from tests.unit.test_render import CASES, HOSTS, _site, _weights
    from toolkit.errors import RenderError
    from toolkit.render.bundle import render
    from toolkit.render.site import load_site

    site = _site(tmp_path, HOSTS["cpu-tiny"])
    now = (ROOT / "templates" / "gateway" / "nginx.conf.j2").read_text()
    old = re.sub(r"    map \$selfhost_api_key_ok \$selfhost_caller \{.*?\n    \}\n", "", now, flags=re.S)
    old = old.replace('if ($selfhost_caller = "")', "if ($selfhost_api_key_ok != 1)")  # as ejected before labels
    assert "map $selfhost_api_key_ok" not in old
    (site / "templates" / "gateway").mkdir(parents=True, exist_ok=True)
    (site / "templates" / "gateway" / "nginx.conf.j2").write_text(old)
    with pytest.raises(RenderError, match="predates API key labels"):
        render(CASES["cpu-tiny"](), load_site(site), tmp_path / "b", weights_source=_weights(tmp_path))


def _keys_cli(monkeypatch, tmp_path, *args):
    import typer
    from typer.testing import CliRunner

    from tests.unit.test_fleet import FLEET, HOSTS, _site
    from toolkit.commands import keys as keys_cmd
    from toolkit.deploy import runner
    from toolkit.render.site import load_site

    site = load_site(_site(tmp_path, HOSTS, FLEET))
    infos = {h: {"tiny": {"current": {"release": "r1"}}} for h in HOSTS}
    monkeypatch.setattr(runner, "run", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("ran a playbook")))
    monkeypatch.setattr(keys_cmd, "ops_setup", lambda *a, **kw: (site, tmp_path, {"id": "r"}, infos, "tiny"))
    app = typer.Typer()
    keys_cmd.register(app)
    app.command("noop", hidden=True)(lambda: None)
    return CliRunner().invoke(app, ["keys", *args[:1], "-i", str(tmp_path), *args[1:]])


def test_keys_add_dry_run_on_a_fleet_changes_every_host_together(monkeypatch, tmp_path):
    res = _keys_cli(monkeypatch, tmp_path, "add", "--label", "team-a", "--dry-run", "--json")
    assert res.exit_code == 0, res.output + repr(res.exception)
    doc = json.loads(res.output)
    assert (doc["fleet"], doc["hosts"], doc["label"]) == (True, ["gpu-01", "gpu-02"], "team-a")
    [op] = doc["operations"]
    assert (op["playbook"], op["limit"], op["extravars"]["selfhost_keys_action"]) == ("keys.yml", None, "add")
    (tmp_path / "again").mkdir()
    res = _keys_cli(monkeypatch, tmp_path / "again", "revoke", "--label", "team-a", "--host", "gpu-02", "--yes")
    assert isinstance(res.exception, ConfigError) and "one key set" in res.exception.message
