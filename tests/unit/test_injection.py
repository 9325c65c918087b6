"""Trust nothing that comes in: hostile strings through every site and plan field that reaches a file.

Each hostile value is either refused at the door (a one-line `SelfhostError` naming the field) or
appears in the rendered bundle only in a form that cannot run: `!unsafe`-tagged in env/extravars,
a whole YAML/JSON scalar elsewhere, shell-quoted in runbook snippets, and not at all in nginx.conf,
the env file or the systemd unit. (tests/integration/test_unsafe_vars.py shows with a real
ansible-playbook run that a Jinja payload in the extravars arrives literally and never runs.)
Below the corpus: one regression test per defect of the "trust nothing" issue.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from toolkit.errors import ConfigError, RenderError, SelfhostError
from toolkit.render.bundle import hand_changes, render
from toolkit.render.site import load_site
from tests.unit.test_render import CASES, _site, _weights

HOSTILE = [
    "{{ lookup('pipe', 'id > /tmp/selfhost-pwned') }}",
    "{% for x in range(3) %}x{% endfor %}",
    "{# c #}",
    "$(touch /tmp/selfhost-pwned)",
    "`id`",
    "a\nb: injected",
    "a\r\nb",
    "x'y\"z",
    "../../etc/passwd",
    "-oProxyCommand=touch /tmp/selfhost-pwned",
    "a\x00b",
    "a\u2028b",
    "a\u2029b",
    "a;id",
    "a b",
    "\x1b[31mred",
]
SHELL_SAFE = re.compile(r"^[\w@%+=:,./-]+$")

# (where, key): where the value goes in the site.
SITE_FIELDS = [
    ("group", "selfhost_root"),
    ("group", "selfhost_gateway_max_body"),
    ("group", "selfhost_images_vllm_ref"),
    ("group", "selfhost_images_gateway_ref"),
    ("group", "selfhost_runtime_driver_package"),
    ("group", "selfhost_verify_egress_probe"),
    ("group", "selfhost_weights_source"),
    ("group", "ansible_user"),
    ("group", "ansible_port"),
    ("group", "ansible_ssh_private_key_file"),
    ("all", "ansible_user"),
    ("all", "selfhost_gateway_max_body"),
    ("host_vars", "ansible_host"),
    ("host_vars", "selfhost_root"),
    ("line", "ansible_host"),
    ("line", "ansible_port"),
    ("line", "selfhost_gateway_max_body"),
    ("name", None),
]
PATH_FIELDS = {"selfhost_weights_source", "ansible_ssh_private_key_file"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A site with its PKI made once (copied per case: key generation is the slow part), and weights."""
    tmp = tmp_path_factory.mktemp("base")
    site = _site(tmp, {"h1": {"ansible_host": "10.0.0.5"}})
    weights = _weights(tmp)
    render(CASES["cpu-tiny"](), load_site(site), tmp / "warm", weights_source=weights)
    return site, weights


def _copy_site(base, tmp: Path) -> tuple[Path, Path]:
    site, weights = base
    dst = tmp / "site"
    shutil.copytree(site, dst)
    (dst / ".selfhost").exists() and shutil.rmtree(dst / ".selfhost")
    return dst, weights


def _put(site: Path, where: str, key: str | None, value) -> None:
    if where == "group":
        (site / "group_vars" / "inference.yml").write_text(yaml.safe_dump({"ansible_user": "deploy", key: value}))
    elif where == "all":
        (site / "group_vars" / "all.yml").write_text(yaml.safe_dump({key: value}))
    elif where == "host_vars":
        (site / "host_vars").mkdir(exist_ok=True)
        (site / "host_vars" / "h1.yml").write_text(yaml.safe_dump({key: value}))
    elif where == "line":
        (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {"h1": {
            "ansible_host": "10.0.0.5", key: value}}}}))
    elif where == "name":
        (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {value: {"ansible_host": "10.0.0.5"}}}}))


def _one_line_refusal(exc: SelfhostError) -> None:
    assert "\n" not in exc.message and "\r" not in exc.message, exc.message
    assert "\u2028" not in exc.message and "\x00" not in exc.message and "\x1b" not in exc.message


def _scalars(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _scalars(v)
    elif isinstance(node, list):
        for v in node:
            yield from _scalars(v)
    elif node is not None:
        yield str(node)


def assert_contained(bundle: Path, payload: str) -> None:
    """`payload` appears in each rendered file only quoted/escaped (see the module docstring)."""
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if not path.is_file() or rel.startswith("project/"):
            continue
        text = path.read_text(errors="replace")
        if payload not in text:
            continue
        if rel == "env/extravars":
            loader = yaml.SafeLoader(text)
            loader.add_constructor("!unsafe", lambda ld, n: ld.construct_scalar(n))
            # Text Ansible could template (it holds `{`) must be `!unsafe`; anything else must at least be
            # a quoted string scalar (Ansible evaluates no Jinja without a `{`).
            held = []
            for node in _walk_nodes(loader.get_single_node()):
                if isinstance(node, yaml.ScalarNode) and payload in node.value:
                    held.append(node.tag == "!unsafe" if "{" in node.value else
                                node.tag in ("!unsafe", "tag:yaml.org,2002:str") and node.style == "'")
            assert held and all(held), f"{rel}: payload not !unsafe-tagged or quoted"
        elif rel.endswith((".yml", ".yaml")):
            doc = yaml.safe_load(text)
            assert any(payload in s for s in _scalars(doc)), f"{rel}: payload is not inside a YAML scalar"
        elif rel.endswith(".json"):
            assert any(payload in s for s in _scalars(json.loads(text))), rel
        elif rel.endswith(".md"):
            fence = False
            for line in text.splitlines():
                if line.startswith("```"):
                    fence = not fence
                elif fence and payload in line and not SHELL_SAFE.match(payload):
                    assert shlex.quote(payload) in line, f"{rel}: unquoted in a shell snippet: {line}"
        elif rel == "files/vllm/vllm.env":  # `docker --env-file` takes each line literally: one whole value
            assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=" + re.escape(payload), ln)
                       for ln in text.splitlines() if payload in ln), f"{rel}: {payload!r}"
        else:
            assert SHELL_SAFE.match(payload), f"{rel}: payload reached a config file: {payload!r}"


def _walk_nodes(node):
    if node is None:
        return
    yield node
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from _walk_nodes(k)
            yield from _walk_nodes(v)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            yield from _walk_nodes(v)


@pytest.mark.parametrize("where, key", SITE_FIELDS, ids=[f"{w}-{k}" for w, k in SITE_FIELDS])
def test_hostile_site_values_are_refused_or_contained(where, key, base, tmp_path):
    accepted = []
    for i, payload in enumerate(HOSTILE):
        case = tmp_path / str(i)
        site, weights = _copy_site(base, case)
        _put(site, where, key, payload)
        try:
            bundle = render(CASES["cpu-tiny"](), load_site(site), case / "out", weights_source=weights)
        except SelfhostError as exc:
            _one_line_refusal(exc)
            continue
        accepted.append(payload)
        assert_contained(bundle.path, payload)
    if key in PATH_FIELDS:  # a control-node path may hold spaces or quotes; never a newline, NUL or Jinja
        assert not [a for a in accepted if re.search(r"[\x00-\x1f\x7f\u2028\u2029]|{{|{%|{#", a)], accepted
    else:  # every hostile value is refused for these fields: none has a legitimate use for them
        assert not accepted, f"{where}/{key} accepted {accepted!r}"


PLAN_FIELDS = ["model.id", "vllm.served_model_name", "runtime.image", "runtime.env value", "runtime.env key"]


def _hostile_plan(field: str, payload: str):
    plan = CASES["cpu-tiny"]()
    if field == "model.id":
        return plan.model_copy(update={"model": plan.model.model_copy(update={"id": payload})})
    if field == "vllm.served_model_name":
        return plan.model_copy(update={"vllm": plan.vllm.model_copy(update={"served_model_name": payload})})
    if field == "runtime.image":
        return plan.model_copy(update={"runtime": plan.runtime.model_copy(update={"image": payload})})
    env = {"VLLM_X": payload} if field == "runtime.env value" else {payload: "1"}
    return plan.model_copy(update={"runtime": plan.runtime.model_copy(update={"env": {**plan.runtime.env, **env}})})


@pytest.mark.parametrize("field", PLAN_FIELDS)
def test_hostile_plan_strings_are_refused_or_contained(field, base, tmp_path):
    for i, payload in enumerate(HOSTILE):
        case = tmp_path / str(i)
        site, weights = _copy_site(base, case)
        try:
            bundle = render(_hostile_plan(field, payload), load_site(site), case / "out", weights_source=weights)
        except SelfhostError as exc:
            _one_line_refusal(exc)
            continue
        assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", payload), f"{field} accepted a control character"
        assert_contained(bundle.path, payload)


# ---------------------------------------------------------------- regressions, one per defect

def _load(site: Path):
    return load_site(site)


@pytest.mark.parametrize("value", ["4m;\n    include /etc/passwd", "4m; root /", "4 m", "-1", "4mb"])
def test_gateway_max_body_is_nginx_size_syntax(value, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    _put(site, "group", "selfhost_gateway_max_body", value)
    with pytest.raises(ConfigError, match="selfhost_gateway_max_body") as exc:
        _load(site)
    _one_line_refusal(exc.value)


@pytest.mark.parametrize("env, message", [
    ({"VLLM_X": "1\nHF_HUB_OFFLINE=0"}, "control characters"),
    ({"X\nHF_HUB_OFFLINE": "0"}, "must match"),
    ({"lower": "1"}, "must match"),
    ({"HF_HUB_OFFLINE": "0"}, "cannot be overridden"),
    ({"TRANSFORMERS_OFFLINE": "0"}, "cannot be overridden"),
    ({"VLLM_NO_USAGE_STATS": "0"}, "cannot be overridden"),
    ({"DO_NOT_TRACK": ""}, "cannot be overridden"),
])
def test_runtime_env_is_validated_and_offline_is_forced(env, message, base, tmp_path):
    site, weights = _copy_site(base, tmp_path)
    plan = CASES["cpu-tiny"]()
    plan = plan.model_copy(update={"runtime": plan.runtime.model_copy(update={"env": env})})
    with pytest.raises(SelfhostError, match=message) as exc:
        render(plan, load_site(site), tmp_path / "out", weights_source=weights)
    _one_line_refusal(exc.value)


@pytest.mark.parametrize("host_vars, message", [
    ({"ansible_host": "-oProxyCommand=touch /tmp/x"}, "neither an IP address nor a DNS host name"),
    ({"ansible_host": "999.1.1.1"}, "neither an IP address nor a DNS host name"),
    ({"ansible_host": "a..b"}, "neither an IP address nor a DNS host name"),
    ({"ansible_port": 70000}, "port must be a number from 1 to 65535"),
    ({"ansible_port": 0}, "port must be a number from 1 to 65535"),
    ({"ansible_user": "root;id"}, "is not a user name"),
    ({"selfhost_root": "/"}, "selfhost_root"),
    ({"some_var": "x"}, "unknown variable"),
])
def test_host_line_vars_are_validated(host_vars, message, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {"h1": host_vars}}}))
    with pytest.raises(ConfigError, match=message):
        _load(site)


@pytest.mark.parametrize("name", ["a;b", "-oProxyCommand=x", "a b", "../x", ".hidden"])
def test_inventory_host_names_are_validated(name, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    _put(site, "name", None, name)
    with pytest.raises(ConfigError, match="not a valid host name"):
        _load(site)


@pytest.mark.parametrize("root", ["/", "/etc", "/usr", "/bin", "/var", "/etc/selfhost", "/opt/../etc", "opt/selfhost",
                                  "/opt/selfhost/", "/opt/self host", "/opt//selfhost"])
def test_selfhost_root_must_be_a_folder_of_its_own(root, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    _put(site, "group", "selfhost_root", root)
    with pytest.raises(ConfigError, match="selfhost_root"):
        _load(site)


@pytest.mark.parametrize("address", ["10.0.0.5", "2001:db8::1", "gpu-01", "gpu-01.lab.internal", "GPU1.example.com."])
def test_good_addresses_are_accepted(address, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    (site / "hosts.yml").write_text(yaml.safe_dump({"inference": {"hosts": {"h1": {"ansible_host": address}}}}))
    assert _load(site).hosts[0].address == address


def test_host_vars_and_group_vars_all_are_read_and_validated(base, tmp_path):
    site, weights = _copy_site(base, tmp_path)
    (site / "group_vars" / "all.yml").write_text("ansible_user: ops\nselfhost_gateway_port: 8443\n")
    (site / "group_vars" / "inference.yml").write_text("ansible_port: 2200\n")
    (site / "host_vars").mkdir()
    (site / "host_vars" / "h1.yml").write_text("ansible_user: special\n")
    loaded = _load(site)
    assert loaded.settings.selfhost_gateway_port == 8443  # all.yml is read
    assert loaded.connection == {"ansible_user": "ops", "ansible_port": 2200}
    bundle = render(CASES["cpu-tiny"](), loaded, tmp_path / "out", weights_source=weights)
    inv = yaml.safe_load((bundle.path / "inventory/hosts.yml").read_text())
    assert inv["inference"]["hosts"]["h1"]["ansible_user"] == "special"  # host_vars win over group vars
    assert inv["inference"]["vars"]["ansible_user"] == "ops"

    (site / "host_vars" / "h1.yml").write_text("selfhost_gateway_max_body: \"4m;\\ninclude x\"\n")
    with pytest.raises(ConfigError, match="h1.yml.*selfhost_gateway_max_body"):
        _load(site)
    (site / "host_vars" / "h1.yml").write_text("selfhost_gateway_port: 9443\n")
    with pytest.raises(ConfigError, match="differs per host"):
        _load(site)
    (site / "host_vars" / "h1.yml").write_text("ansible_host: '-oProxyCommand=id'\n")
    with pytest.raises(ConfigError, match="h1.yml: ansible_host"):
        _load(site)
    (site / "group_vars" / "all.yml").write_text("ansible_port: 70000\n")
    (site / "host_vars" / "h1.yml").unlink()
    with pytest.raises(ConfigError, match="all.yml: ansible_port"):
        _load(site)


@pytest.mark.parametrize("rel", ["group_vars/webservers.yml", "group_vars/inference.json", "host_vars/nosuchhost.yml",
                                 "group_vars/inference/main.yml"])
def test_unknown_var_files_are_an_error_naming_them(rel, base, tmp_path):
    site, _ = _copy_site(base, tmp_path)
    (site / rel).parent.mkdir(parents=True, exist_ok=True)
    (site / rel).write_text("ansible_user: x\n")
    with pytest.raises(ConfigError, match="selfhost does not read") as exc:
        _load(site)
    assert str(site / rel.split("/")[0] / rel.split("/")[1]) in exc.value.message


def test_site_templates_run_in_a_sandbox(base, tmp_path):
    site, weights = _copy_site(base, tmp_path)
    (site / "templates" / "gateway").mkdir(parents=True, exist_ok=True)
    (site / "templates" / "gateway" / "nginx.conf.j2").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    with pytest.raises(RenderError, match="sandbox"):
        render(CASES["cpu-tiny"](), load_site(site), tmp_path / "out", weights_source=weights)
    (site / "templates" / "gateway" / "nginx.conf.j2").write_text("{{ hosts.append(1) }}\n")
    with pytest.raises(RenderError):
        render(CASES["cpu-tiny"](), load_site(site), tmp_path / "out", weights_source=weights)
    (site / "templates" / "gateway" / "nginx.conf.j2").write_text("{{ no_such_thing }}\n")
    with pytest.raises(RenderError, match="no_such_thing"):  # StrictUndefined
        render(CASES["cpu-tiny"](), load_site(site), tmp_path / "out", weights_source=weights)


def test_runbook_snippets_quote_paths_and_image_refs(base, tmp_path):
    site, weights = _copy_site(base, tmp_path)
    odd = tmp_path / "my site $(id)"
    shutil.move(site, odd)
    bundle = render(CASES["cpu-tiny"](), load_site(odd), tmp_path / "out", weights_source=weights)
    pages = "".join(p.read_text() for p in (bundle.path / "files" / "runbooks").glob("*.md"))
    assert f"selfhost render plan.yml -i {shlex.quote(str(odd))}" in pages
    assert f"selfhost deploy plan.yml -i {shlex.quote(str(odd))}" in pages
    assert "-i " + str(odd) not in pages.replace(shlex.quote(str(odd)), "")
    # the filter itself, as the templates use it
    from toolkit.render.templates import Templates
    t = Templates(None).env.from_string("docker logs {{ x | shquote }}")
    assert t.render(x="a b$(id)") == "docker logs 'a b$(id)'"


def test_hand_edits_and_unknown_files_stop_a_render(base, tmp_path):
    site, weights = _copy_site(base, tmp_path)
    plan, out = CASES["cpu-tiny"](), tmp_path / "out"
    render(plan, load_site(site), out, weights_source=weights)
    assert hand_changes(out) == []
    (out / "files" / "gateway" / "nginx.conf").write_text("# tuned by hand\n")
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(RenderError, match="edited or added by hand") as exc:
        render(plan, load_site(site), out, weights_source=weights)
    _one_line_refusal(exc.value)
    assert "files/gateway/nginx.conf" in exc.value.message and "notes.txt" in exc.value.message
    assert "--force" in exc.value.fix
    assert (out / "notes.txt").exists()  # nothing touched
    render(plan, load_site(site), out, weights_source=weights, force=True)
    assert not (out / "notes.txt").exists() and hand_changes(out) == []


def test_runner_artifacts_live_outside_the_bundle_and_survive_a_render(base, tmp_path):
    from toolkit.deploy import runner

    site, weights = _copy_site(base, tmp_path)
    plan, out = CASES["cpu-tiny"](), tmp_path / "build" / "tiny"
    render(plan, load_site(site), out, weights_source=weights)
    arts = runner.artifacts_dir(out)
    assert out.absolute() not in arts.parents
    (arts / "20260101T000000-deploy").mkdir(parents=True)
    (arts / "20260101T000000-deploy" / "stdout").write_text("failed run\n")
    render(plan, load_site(site), out, weights_source=weights)  # no hand edits: no --force needed
    assert (arts / "20260101T000000-deploy" / "stdout").exists()


def test_day2_commands_find_the_deployment_from_the_site_alone(base, tmp_path):
    from toolkit.deploy import locate

    site, weights = _copy_site(base, tmp_path)
    with pytest.raises(ConfigError, match="no deployment recorded"):
        locate.resolve(site, None, None)
    out = tmp_path / "elsewhere" / "b"
    render(CASES["cpu-tiny"](), load_site(site), out, weights_source=weights)  # weights only on the command line
    ref = locate.resolve(site, None, None)
    assert ref.path == out.absolute() and ref.hosts == ["h1"]
    plan_file = tmp_path / "plan.yml"
    CASES["cpu-tiny"]().dump(plan_file)
    assert locate.resolve(site, plan_file, None).path == out.absolute()  # no re-render, no weights needed
    other = CASES["cpu-tiny"]()
    other.model_copy(update={"name": "tiny-two"}).dump(plan_file)  # never rendered, and no weights configured
    with pytest.raises(ConfigError, match="not rendered for") as exc:
        locate.resolve(site, plan_file, None)
    assert "--weights" in exc.value.fix


def test_failures_name_the_command_that_failed_and_carry_no_ansi():
    from toolkit.deploy.runner import DeployResult, FailedTask, _message

    for command in ("rollback", "destroy", "unlock"):
        result = DeployResult(status="failed", rc=2, check=False, command=command,
                              failed=[FailedTask(host="h1", step="release", task="t", message="boom")])
        with pytest.raises(SelfhostError) as exc:
            result.raise_for_status()
        assert exc.value.message.startswith(f"{command} failed") and f"selfhost {command}" in exc.value.fix
        assert "deploy" not in exc.value.message + exc.value.fix
        assert "command" not in result.to_dict()
    assert _message({"msg": "\x1b[0;31mfatal: locked\x1b[0m"}) == "fatal: locked"


def test_render_prints_a_next_step_that_works(base, tmp_path):
    """The printed next step is `selfhost deploy PLAN -i SITE` with the same --weights/--out (the old
    `selfhost deploy <bundle dir>` failed with an internal error), shell-quoted."""
    import typer
    from typer.testing import CliRunner

    from toolkit.commands import deploy

    app = typer.Typer()
    deploy.register(app)
    site, weights = _copy_site(base, tmp_path)
    plan_file = tmp_path / "my plan.yml"
    CASES["cpu-tiny"]().dump(plan_file)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["render", str(plan_file), "-i", str(site), "--weights", str(weights),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    step = res.output.strip().splitlines()[-1]
    expected = shlex.join(["selfhost", "deploy", str(plan_file), "-i", str(site), "--weights", str(weights),
                           "--out", str(out)])
    assert step.endswith(f"then `{expected}`"), step
    args = shlex.split(expected)[2:]  # what typer receives: it parses (the deploy itself needs hosts)
    ctx = typer.main.get_command(app).commands["deploy"].make_context("deploy", [*args, "--dry-run"])
    assert ctx.params["plan"] == plan_file and ctx.params["out"] == out and ctx.params["weights"] == weights
