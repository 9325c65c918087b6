"""Day-2 pieces without a server: template eject/diff, runbook pages, alert rules and dashboard shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.render import monitoring
from toolkit.render import runbook
from toolkit.render import template_ops
from toolkit.cli import main
from toolkit.errors import ConfigError
from toolkit.render.bundle import render, template_outputs
from toolkit.render.site import load_site
from toolkit.render.templates import list_templates, packaged_dir
from tests.unit.test_render import CASES, HOSTS, _site, _weights

NAME = "gateway/nginx.conf.j2"


@pytest.fixture
def fake_packaged(tmp_path, monkeypatch):
    """A packaged template folder we may change, to play an upgrade of the toolkit."""
    root = tmp_path / "packaged"
    (root / "gateway").mkdir(parents=True)
    (root / NAME).write_text("line 1\nline 2\n")
    (root / "vllm").mkdir()
    (root / "vllm" / "vllm.env.j2").write_text("A={{ x }}\n")
    monkeypatch.setattr(template_ops, "packaged_dir", lambda: root)
    monkeypatch.setattr(template_ops, "list_templates",
                        lambda: sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2")))
    return root


def test_eject_copies_and_records(fake_packaged, tmp_path):
    tdir = tmp_path / "site" / "templates"
    dest = template_ops.eject(tdir, NAME)
    assert dest.read_text() == "line 1\nline 2\n"
    assert (tdir / ".upstream" / NAME).read_text() == "line 1\nline 2\n"
    record = yaml.safe_load((tdir / ".selfhost-ejected.yml").read_text())
    assert record["templates"][NAME]["sha256"] == template_ops.sha256_text("line 1\nline 2\n")
    states = {s.name: s.state for s in template_ops.status(tdir)}
    assert states == {NAME: "ejected", "vllm/vllm.env.j2": "packaged"}


def test_eject_never_overwrites(fake_packaged, tmp_path):
    tdir = tmp_path / "templates"
    template_ops.eject(tdir, NAME)
    (tdir / NAME).write_text("mine\n")
    with pytest.raises(ConfigError) as exc:
        template_ops.eject(tdir, NAME)
    assert exc.value.message == f"{tdir / NAME} already exists; refusing to overwrite your copy"
    assert "selfhost templates diff" in exc.value.fix
    assert (tdir / NAME).read_text() == "mine\n"


def test_eject_unknown_name_suggests(fake_packaged, tmp_path):
    with pytest.raises(ConfigError) as exc:
        template_ops.eject(tmp_path, "gateway/nginx.j2")
    assert exc.value.message == f"no packaged template 'gateway/nginx.j2' — did you mean '{NAME}'?"


def test_diff_shows_upstream_change_and_user_edit(fake_packaged, tmp_path):
    tdir = tmp_path / "templates"
    template_ops.eject(tdir, NAME)
    [d] = template_ops.diff(tdir)
    assert (d.upstream_changed, d.modified, d.upstream_diff) == (False, False, "")

    (fake_packaged / NAME).write_text("line 1\nline 2 fixed\n")  # the toolkit is upgraded
    (tdir / NAME).write_text("line 1\nline 2\nmy line\n")  # and the user edited their copy
    [d] = template_ops.diff(tdir)
    assert d.upstream_changed and d.modified
    assert "-line 2\n+line 2 fixed\n" in d.upstream_diff
    assert "my line" not in d.upstream_diff  # the diff is upstream's change, not the user's
    assert "templates accept" in d.note

    template_ops.accept(tdir, NAME)
    [d] = template_ops.diff(tdir)
    assert not d.upstream_changed and d.modified and d.upstream_diff == ""
    assert (tdir / ".upstream" / NAME).read_text() == "line 1\nline 2 fixed\n"


def test_templates_cli(tmp_path, capsys):
    site = _site(tmp_path, HOSTS["cpu-tiny"])
    with pytest.raises(SystemExit) as exc:
        main(["templates", "eject", "runbooks/slow-tokens.md.j2", "-i", str(site)])
    assert exc.value.code in (0, None)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["templates", "list", "-i", str(site), "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["templates"]}
    assert set(rows) == set(list_templates())
    assert rows["runbooks/slow-tokens.md.j2"]["ejected"] and rows["runbooks/slow-tokens.md.j2"]["state"] == "ejected"
    with pytest.raises(SystemExit):
        main(["templates", "diff", "-i", str(site), "--json"])
    [d] = json.loads(capsys.readouterr().out)["templates"]
    assert d["name"] == "runbooks/slow-tokens.md.j2" and not d["upstream_changed"]
    with pytest.raises(SystemExit) as exc:
        main(["templates", "eject", "runbooks/slow-tokens.md.j2", "-i", str(site)])
    assert exc.value.code == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_every_runbook_topic_has_a_template():
    outputs = template_outputs("gpu")
    for topic in runbook.TOPICS:
        assert outputs[runbook.page_file(topic)] == runbook.template_name(topic)
        assert (packaged_dir() / runbook.template_name(topic)).is_file()
    for rule in monitoring.alert_rules(CASES["cpu-tiny"]()):
        assert rule.runbook in runbook.TOPICS, rule.name


@pytest.fixture
def rendered(tmp_path, monkeypatch):
    plan = CASES["gpu-tp1-llama8b-l40s"]()
    site = _site(tmp_path, HOSTS["gpu-tp1-llama8b-l40s"])
    monkeypatch.chdir(tmp_path)
    bundle = render(plan, load_site(site), Path("build") / plan.name, weights_source=_weights(tmp_path))
    return plan, site, bundle


def test_runbook_cli_lists_and_prints(rendered, capsys):
    plan, site, bundle = rendered
    with pytest.raises(SystemExit):
        main(["runbook", "-i", str(site), "--json"])
    topics = json.loads(capsys.readouterr().out)["topics"]
    assert [t["topic"] for t in topics] == list(runbook.TOPICS) and all(t["rendered"] for t in topics)
    with pytest.raises(SystemExit):
        main(["runbook", "oom-kv-cache", "-i", str(site)])
    page = capsys.readouterr().out
    assert "| `--max-model-len` | 32768 | 16384 |" in page
    assert "10.0.0.11" in (bundle.path / "files/runbooks/host-lost.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["runbook", "oom", "--bundle", str(bundle.path)])
    assert exc.value.code == 1
    assert "did you mean 'oom-kv-cache'" in capsys.readouterr().err


def test_runbook_needs_a_bundle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        runbook.find_bundle(None, ["gpu-01"])
    assert exc.value.message == "no rendered bundle for this site under build/"


def test_monitoring_files_in_the_bundle(rendered):
    plan, _, bundle = rendered
    alerts = yaml.safe_load((bundle.path / "prometheus/alerts.yml").read_text())
    names = [r["alert"] for r in alerts["groups"][0]["rules"]]
    assert {"SelfhostKVCacheSaturated", "SelfhostQueueBacklog", "SelfhostTimeToFirstTokenHigh", "SelfhostServerDown",
            "SelfhostEngineRestarted", "SelfhostCertificateExpiresSoon", "SelfhostHostDown"} <= set(names)
    ttft = next(r for r in alerts["groups"][0]["rules"] if r["alert"] == "SelfhostTimeToFirstTokenHigh")
    assert "vllm:time_to_first_token_seconds_bucket" in ttft["expr"] and ttft["expr"].endswith("> 2.0")
    dash = json.loads((bundle.path / "grafana/dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert any("vllm:kv_cache_usage_perc" in e for e in exprs)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    scrape = yaml.safe_load((bundle.path / "prometheus/scrape.yml").read_text())
    jobs = [j["job_name"] for j in scrape["scrape_configs"]]
    assert jobs == list(monitoring.jobs(plan).values())
    assert scrape["rule_files"] == ["alerts.yml"]


def test_thresholds_come_from_the_plan():
    plan = CASES["gpu-tp1-llama8b-l40s"]()
    t = monitoring.thresholds(plan)
    assert t.waiting == 64  # the fixture plan's max_num_seqs: a queue as long as a full batch
    # The fixture plan streams 25 tok/s to a user: a token every 0.04 s; the alert fires at twice that.
    assert t.itl_p95_s == 0.08


def test_no_template_writes_a_machine_read_file():
    for dest, name in template_outputs("gpu").items():
        assert not dest.endswith((".json", ".yml")) or dest.startswith("docker/"), dest
