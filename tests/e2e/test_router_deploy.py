"""The no-leak hybrid router deployed by the playbooks, behind the gateway, on the session's test hosts.

The "closed API" is a real OpenAI-compatible server that is not ours: a second vLLM CPU server serving the
tiny model under the name `provider-model`, behind its own API key, on the test network that stands for the
internet (`selfhost-test-outside`: the hosts reach it only through their NAT, like the sentinel). Its
request log is on (`--enable-log-requests`, DEBUG: every request body and prompt), so the tests read what
reached it. The module redeploys the session's deployment (same plan: vLLM unchanged, only the router and
the gateway change) from a copy of the session site holding `router/policy.yaml` and the closed API's key;
at the end the session site is deployed again and the routers removed.

  * a valid synthetic card number, a listed code name, a classification marking → answered locally, never in
    the outside server's log; a clean prompt to `frontier` → answered by the outside server (in its log);
  * a streaming request and a tool result carrying an identifier → local;
  * a client's own X-Selfhost-Gateway-Secret / X-Selfhost-Caller headers change nothing (the gateway sets both);
  * the vLLM container cannot reach the outside network; the router reaches the closed API and nothing else
    there (the sentinel, which the host itself reaches, is dropped);
  * with the detector made to fail (policy plugin `fault_injection`, a redeploy of the policy only) nothing
    goes out;
  * labelled keys (`selfhost keys add --label`): a `local_only` label's clean `frontier` request is answered
    locally, another label's goes out; a model off a label's allow-list (`callers.models`) is 403 and missing
    from its /v1/models; the audit log names each key's label; `keys list` shows labels, never a key;
    `keys revoke` stops a label's key (401);
  * `selfhost route audit -i SITE` verifies the chain, and reports a break when a line is edited.
"""
from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from tests.e2e.conftest import selfhost_cli, site_variant
from tests.e2e.infra import hosts as hosts_mod
from tests.e2e.infra.config import LABEL, OUTSIDE_NET
from tests.e2e.infra.dockercli import docker, out
from tests.unit.router_fixtures import CARD, IBAN

pytestmark = pytest.mark.e2e

API_KEY = "sk-outside-" + uuid.uuid4().hex  # the closed API's key: the outside server refuses any other
OUTSIDE = f"selfhost-test-{hosts_mod.SESSION}-closed-api"
RESULTS: dict[str, object] = {}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _outside_log() -> str:
    res = docker("logs", OUTSIDE, check=False)
    return _text(res.stdout) + _text(res.stderr)


@pytest.fixture(scope="module")
def closed_api(e2e_images, tiny_model, sentinel):
    """The outside OpenAI-compatible server (vLLM CPU, tiny model), started once for this module."""
    docker("rm", "-f", OUTSIDE, check=False)
    t0 = time.monotonic()
    docker("run", "-d", "--name", OUTSIDE, "--network", OUTSIDE_NET, "--label", LABEL,
           "--label", f"{hosts_mod.SESSION_LABEL}={hosts_mod.SESSION}", "--shm-size", "1g",
           "-v", f"{tiny_model}:/models/tiny:ro", "-e", "VLLM_CPU_KVCACHE_SPACE=1",
           "-e", "VLLM_CPU_OMP_THREADS_BIND=nobind", "-e", "VLLM_LOGGING_LEVEL=DEBUG",
           e2e_images["vllm"].ref, "--model", "/models/tiny", "--served-model-name", "provider-model",
           "--max-model-len", "512", "--max-num-seqs", "2", "--host", "0.0.0.0", "--port", "8000",
           "--api-key", API_KEY, "--enable-log-requests")
    ip = out("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{OUTSIDE_NET}").IPAddress}}}}', OUTSIDE)
    probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"
    deadline = time.monotonic() + 900
    while docker("exec", OUTSIDE, "python3", "-c", probe, check=False).returncode != 0:
        state = out("inspect", "-f", "{{.State.Status}}", OUTSIDE)
        assert state == "running" and time.monotonic() < deadline, _outside_log()[-3000:]
        time.sleep(3)
    RESULTS["closed_api_start_s"] = round(time.monotonic() - t0)
    yield {"ip": ip, "port": 8000, "url": f"http://{ip}:8000/v1"}
    docker("rm", "-f", OUTSIDE, check=False)


def _policy(closed_api, served: str, plugins=()) -> dict:
    return {
        "remote": {"base_url": closed_api["url"], "api_key_file": "remote.key",
                   "aliases": {"frontier": "provider-model"}},
        # The session's own key has the site's default label ("default"): "*" lets it use everything.
        "callers": {"remote_allowed": ["*"], "local_only": ["team-local"],
                    "models": {"team-local": [served, "frontier"], "team-open": ["frontier"], "*": ["*"]}},
        "detect": {"identifiers": ["CREDIT_CARD", "IBAN_CODE"], "code_names": ["Bluebird"],
                   "markings": ["TOP SECRET", "CONFIDENTIAL"], "plugins": [{"name": p} for p in plugins],
                   "timeout_s": 5},
    }


def _deploy(ctx, label: str):
    t0 = time.monotonic()
    res = selfhost_cli("deploy", ctx["plan_file"], "-i", ctx["site"], "--out", ctx["tmp"] / "bundle", "--yes",
                       "--json", cwd=ctx["tmp"], timeout=1500)
    RESULTS[f"{label}_s"] = round(time.monotonic() - t0)
    print(f"\n[e2e] {label}: {RESULTS[f'{label}_s']}s, exit {res.returncode}", flush=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def routed(deployed_site, closed_api, e2e_images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("router")
    router = e2e_images["router"]
    site = site_variant(deployed_site, tmp, selfhost_images_router_ref=router.ref,
                        selfhost_images_router_tarball=str(router.tarball))
    (site / "router").mkdir()
    key = site / "router" / "remote.key"
    key.write_text(API_KEY + "\n")
    key.chmod(0o600)
    served = deployed_site["plan"].vllm.served_model_name
    (site / "router" / "policy.yaml").write_text(yaml.safe_dump(_policy(closed_api, served)))
    hosts = deployed_site["hosts"]
    ctx = {"site": site, "tmp": tmp, "plan_file": deployed_site["plan_file"], "hosts": hosts, "host": hosts[0],
           "ca": deployed_site["ca"], "key": deployed_site["keys"][hosts[0].name], "closed_api": closed_api,
           "sentinel": deployed_site["sentinel"], "name": deployed_site["plan"].name,
           "root": deployed_site["bundle"].vars.selfhost_root, "served": served}
    res = _deploy(ctx, "router_deploy")
    assert API_KEY not in res.stdout + res.stderr, "the closed API's key is never shown"
    ctx["router"] = f"{ctx['name']}-router"
    yield ctx
    try:
        res = selfhost_cli("deploy", deployed_site["plan_file"], "-i", deployed_site["site"], "--out",
                           tmp / "restore", "--yes", "--json", cwd=tmp, timeout=1500)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    finally:
        for h in hosts:  # the session site runs no router: the gateway went back to vLLM; drop the container
            h.exec("docker", "rm", "-f", ctx["router"], check=False)  # and the allow-list kept for boot
            h.exec("rm", "-f", f"/etc/selfhost/egress/{ctx['name']}.router.iptables", check=False)
        print(f"\n[e2e] router results: {json.dumps(RESULTS)}", flush=True)


def _request(ctx, body: dict | None, headers: dict | None = None, timeout: float = 180,
             key: str | None = None, path: str = "chat/completions") -> tuple[int, str, str]:
    """(status, X-Selfhost-Route, body text) of one request through host 1's gateway (body None: a GET)."""
    sslctx = ssl.create_default_context(cafile=str(ctx["ca"]))
    req = urllib.request.Request(f"https://127.0.0.1:{ctx['host'].https_port}/v1/{path}",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {key or ctx['key']}", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=sslctx) as r:
            return r.status, r.headers.get("X-Selfhost-Route", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("X-Selfhost-Route", ""), e.read().decode(errors="replace")


def _chat(content: str, model: str = "frontier", **more) -> dict:
    return {"model": model, "max_tokens": 4, "temperature": 0, "messages": [{"role": "user", "content": content}],
            **more}


def _in_container(ctx, container: str, url: str, host=None) -> bool:
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"
    py = "/opt/router/bin/python" if container.endswith("-router") else "python3"
    res = (host or ctx["host"]).exec("docker", "exec", container, py, "-c", probe, check=False, timeout=60)
    if "HTTP Error" in _text(res.stderr):  # an HTTP answer (401 without the key) still proves the connection
        return True
    return res.returncode == 0


def test_sensitive_prompts_stay_local(routed):
    marks = {}
    for what, text in {"card": f"My card is {CARD}, charge it.", "code name": "Status of Bluebird rollout?",
                       "marking": "TOP SECRET: the plan for next quarter."}.items():
        mark = f"probe-{uuid.uuid4().hex[:10]}"
        status, route, body = _request(routed, _chat(f"{text} {mark}"))
        assert (status, route) == (200, "local"), (what, status, route, body[:300])
        marks[what] = mark
    log = _outside_log()
    for what, mark in marks.items():
        assert mark not in log, f"the {what} prompt reached the closed API"
    assert CARD.replace(" ", "") not in log.replace(" ", "") and "Bluebird" not in log


def test_clean_frontier_prompt_goes_out(routed):
    mark = f"clean-{uuid.uuid4().hex[:10]}"
    status, route, body = _request(routed, _chat(f"Write a haiku about autumn {mark}"))
    assert (status, route) == (200, "remote"), body[:300]
    assert json.loads(body)["model"] == "provider-model", "answered by the outside server"
    assert mark in _outside_log(), "the outside server logs the prompts it gets (so absences above mean something)"


def test_streaming_and_tool_results_stay_local(routed):
    mark = f"stream-{uuid.uuid4().hex[:10]}"
    status, route, body = _request(routed, _chat(f"Card {CARD} {mark}", stream=True))
    assert (status, route) == (200, "local") and "data:" in body, body[:300]
    tmark = f"tool-{uuid.uuid4().hex[:10]}"
    messages = [{"role": "user", "content": f"Look up the account {tmark}"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"q": tmark})}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": f"IBAN on file: {IBAN}"}]
    status, route, body = _request(routed, {"model": "frontier", "max_tokens": 4, "messages": messages})
    # Local whatever the tiny model's chat template makes of a tool turn (200, or its own 400): never out.
    assert route == "local" and status in (200, 400), (status, route, body[:300])
    log = _outside_log()
    assert mark not in log and tmark not in log


def test_client_cannot_set_the_trust_headers(routed):
    mark = f"forged-{uuid.uuid4().hex[:10]}"
    status, route, _ = _request(routed, _chat(f"hello {mark}"), headers={
        "X-Selfhost-Gateway-Secret": "forged", "X-Selfhost-Caller": "someone-else"})
    assert (status, route) == (200, "remote"), "the gateway replaced the forged secret with its own"
    audit = _text(routed["host"].exec("tail", "-n", "1", f"{routed['root']}/{routed['name']}/router/audit.jsonl").stdout)
    rec = json.loads(audit)
    assert rec["caller"] == "default" and "someone-else" not in audit


def _last_audit(ctx) -> dict:
    log = f"{ctx['root']}/{ctx['name']}/router/audit.jsonl"
    return json.loads(_text(ctx["host"].exec("tail", "-n", "1", log).stdout))


def _keys(ctx, *args) -> dict:
    t0 = time.monotonic()
    # --name: the hosts may keep other deployments' releases too (test_multinode's, destroyed but kept)
    res = selfhost_cli("keys", *args, "-i", ctx["site"], "--name", ctx["name"], "--json", cwd=ctx["tmp"], timeout=600)
    RESULTS[f"keys_{args[0]}_s"] = round(time.monotonic() - t0, 1)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(res.stdout)


def test_labelled_keys_route_and_refuse_per_caller(routed):
    added = {label: _keys(routed, "add", "--label", label, "--yes") for label in ("team-local", "team-open")}
    hosts = {h.name for h in routed["hosts"]}
    for label, doc in added.items():
        assert set(doc["api_keys"]) == hosts and doc["label"] == label, doc
    local_key = added["team-local"]["api_keys"][routed["host"].name]
    open_key = added["team-open"]["api_keys"][routed["host"].name]
    try:
        # A local_only label: its clean frontier request is answered here; another label's goes out.
        mark = f"label-local-{uuid.uuid4().hex[:10]}"
        status, route, body = _request(routed, _chat(f"Write a haiku about rain {mark}"), key=local_key)
        assert (status, route) == (200, "local"), body[:300]
        rec = _last_audit(routed)
        assert (rec["caller"], rec["route"], rec["reasons"]) == ("team-local", "local", ["caller_local_only"]), rec
        assert mark not in _outside_log()
        mark = f"label-open-{uuid.uuid4().hex[:10]}"
        status, route, body = _request(routed, _chat(f"Write a haiku about snow {mark}"), key=open_key,
                                       headers={"X-Selfhost-Caller": "team-local"})
        assert (status, route) == (200, "remote"), body[:300]
        assert _last_audit(routed)["caller"] == "team-open", "the key's label, not the client's header"
        # Off the allow-list: 403 with an OpenAI-style error, audited; /v1/models lists only what it may use.
        status, _, body = _request(routed, _chat("hello", model=routed["served"]), key=open_key)
        err = json.loads(body)["error"]
        assert status == 403 and err["type"] == "permission_error" and routed["served"] in err["message"], body
        rec = _last_audit(routed)
        assert (rec["caller"], rec["route"], rec["reasons"]) == ("team-open", "refused", ["model_not_allowed"]), rec
        status, _, body = _request(routed, None, key=open_key, path="models")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["frontier"], body
        status, _, body = _request(routed, None, key=local_key, path="models")
        assert sorted(m["id"] for m in json.loads(body)["data"]) == sorted([routed["served"], "frontier"]), body
        # list: labels and counts, never a key; revoke: the label's key stops, the others keep working.
        listed = _keys(routed, "list")
        text = json.dumps(listed)
        assert local_key not in text and open_key not in text and routed["key"] not in text
        mine = listed["hosts"][routed["host"].name]["labels"]
        assert {"default", "team-local", "team-open"} <= set(mine) and mine["team-open"]["keys"] == 1, listed
        print(f"\n[e2e] keys list: {text[:1500]}", flush=True)
        _keys(routed, "revoke", "--label", "team-open", "--yes")
        assert _request(routed, _chat("hello"), key=open_key)[0] == 401
        assert _request(routed, _chat("hello", model=routed["served"]), key=local_key)[:2] == (200, "local")
        assert _request(routed, _chat("hello", model=routed["served"]))[:2] == (200, "local"), "the session key"
    finally:
        for label in ("team-open", "team-local"):  # leave the session's hosts with their own key only
            selfhost_cli("keys", "revoke", "-i", routed["site"], "--name", routed["name"], "--label", label, "--yes",
                         "--json", cwd=routed["tmp"], timeout=600)


def test_egress_only_to_the_closed_api(routed):
    api, sentinel = routed["closed_api"], routed["sentinel"]
    vllm = f"{routed['name']}-vllm"
    assert not _in_container(routed, vllm, f"http://{api['ip']}:{api['port']}/health"), "vLLM reached the outside"
    assert _in_container(routed, routed["router"], f"http://{api['ip']}:{api['port']}/health")
    # The host itself reaches the sentinel; the router's egress network does not (dropped, not refused).
    assert routed["host"].exec("curl", "-fsS", "-m", "5", "-o", "/dev/null", sentinel.url, check=False).returncode == 0
    assert not _in_container(routed, routed["router"], sentinel.url)
    rules = _text(routed["host"].exec("iptables", "-S").stdout)
    print("\n[e2e] router egress rules:\n" + "\n".join(r for r in rules.splitlines() if "SELFHOST-EGR" in r), flush=True)


def test_allow_list_comes_back_like_at_boot(routed):
    """An emulated reboot of the firewall: the kernel forgets the router's chain while the router runs (Docker
    restarts it by its restart policy after a real reboot), so it can reach anything; the boot script the deploy
    installed (SysV init on the test hosts, X-Start-Before: docker) reloads <name>.router.iptables, and the
    router again reaches the closed API only. Boot ordering itself is not exercised."""
    h, sentinel, api = routed["host"], routed["sentinel"], routed["closed_api"]
    boot_file = f"/etc/selfhost/egress/{routed['name']}.router.iptables"
    rules = _text(h.exec("cat", boot_file).stdout)
    chain = next(line[1:].split()[0] for line in rules.splitlines() if line.startswith(":"))
    assert "selfhost-egress" in _text(h.exec("sh", "-c", "ls /etc/rc2.d", check=False).stdout)
    try:
        h.exec("sh", "-c", f"sed -n 's/^-I \\([A-Z][A-Z-]*\\) 1 /\\1 /p' {boot_file} | while read -r p r; do "
                           f"iptables -w -D \"$p\" $r; done; iptables -w -F {chain}; iptables -w -X {chain}")
        assert _in_container(routed, routed["router"], sentinel.url), \
            "without the chain the router has a route anywhere (the reboot gap this closes)"
    finally:
        t0 = time.monotonic()
        boot = h.exec("/etc/init.d/selfhost-egress", "start", check=False)
        RESULTS["router_boot_restore_s"] = round(time.monotonic() - t0, 2)
    assert boot.returncode == 0, _text(boot.stdout) + _text(boot.stderr)
    assert not _in_container(routed, routed["router"], sentinel.url)
    assert _in_container(routed, routed["router"], f"http://{api['ip']}:{api['port']}/health")
    h.exec("/etc/init.d/selfhost-egress", "start")  # again: still one jump from each parent
    for parent in ("DOCKER-USER", "INPUT"):
        assert _text(h.exec("iptables", "-w", "-S", parent).stdout).count(f"-j {chain}") == 1, parent


def test_detector_failure_sends_nothing_out(routed):
    (routed["site"] / "router" / "policy.yaml").write_text(
        yaml.safe_dump(_policy(routed["closed_api"], routed["served"], plugins=["fault_injection"])))
    try:
        res = _deploy(routed, "fault_redeploy")
        changed = json.loads(res.stdout)["deploy"]["changed_tasks"].get(routed["host"].name, [])
        print("\n[e2e] changed by the policy redeploy: " + "; ".join(changed), flush=True)
        # Idempotent apart from the policy: the rest of the router's tasks, and vLLM, are left as they were.
        steady = ("Create the router's directories", "Create the audit log", "Install the closed API's key",
                  "Create the gateway secret", "Create the router's egress network", "Allow the egress network",
                  "Run the router", "Run the inference server", "Restart the inference server")
        assert not [t for t in changed if any(name in t for name in steady)], changed
        assert any("Install the deployed policy" in t for t in changed), changed
        mark = f"fault-{uuid.uuid4().hex[:10]}"
        status, route, body = _request(routed, _chat(f"Write a haiku about spring {mark}"))
        assert (status, route) == (200, "local"), body[:300]
        assert mark not in _outside_log()
    finally:
        (routed["site"] / "router" / "policy.yaml").write_text(
            yaml.safe_dump(_policy(routed["closed_api"], routed["served"])))


def test_route_audit_verifies_and_breaks(routed):
    res = selfhost_cli("route", "audit", "-i", routed["site"], "--json", cwd=routed["tmp"], timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    print(f"\n[e2e] route audit: {res.stdout[-1500:]}", flush=True)
    reports = json.loads(res.stdout)["reports"]
    assert set(reports) == {h.name for h in routed["hosts"]} and all(r["ok"] for r in reports.values()), reports
    mine = reports[routed["host"].name]
    assert mine["leaked"] == 0 and mine["routes"].get("remote", 0) >= 2 and mine["routes"].get("local", 0) >= 5, mine
    log = f"{routed['root']}/{routed['name']}/router/audit.jsonl"
    routed["host"].exec("sed", "-i", "1s/\"caller\":\"default\"/\"caller\":\"edited\"/", log)
    res = selfhost_cli("route", "audit", "-i", routed["site"], "--json", cwd=routed["tmp"], timeout=300)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    broken = json.loads(res.stdout)["reports"][routed["host"].name]
    assert broken["ok"] is False, broken
