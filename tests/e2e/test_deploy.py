"""The real thing: render a CPU plan for two SSH test hosts, deploy it with `toolkit.deploy.runner`
(the vLLM CPU image and the gateway shipped as tarballs, the tiny model with its manifest), then
prove it works, is locked down, is idempotent and heals.

Wall times of the first deploy and of the no-op re-deploy are printed (run with `-s` to see them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import gateway_request, print_changes
from tests.e2e.infra.config import cache_path
from toolkit.deploy import runner as deployer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

TIMES: dict[str, float] = {}
ARTIFACTS: dict[str, str] = {}  # phase -> ansible-runner artifact dir (per-task timings for the bench)
TIMES_FILE = "deploy_times.json"  # in the e2e cache: bench/deploy_time.py reads it


def record_times(times: dict[str, float], *, hosts: int, artifacts: dict[str, str]) -> Path:
    """Write the wall times of this run where `bench/deploy_time.py` finds them."""
    import os
    import subprocess

    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                         check=False).stdout
    path = cache_path(TIMES_FILE)
    path.write_text(json.dumps({"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "commit": rev.strip(), "hosts": hosts, "cpus": os.cpu_count(),
                                "seconds": {k: round(v, 1) for k, v in times.items()},
                                "artifacts": artifacts}, indent=2) + "\n")
    return path


@pytest.fixture(scope="module")
def lab(deployed_site):
    """The session's deployment (conftest `deployed_site`): render + first deploy happen there."""
    TIMES["first deploy"] = deployed_site["first_s"]
    ARTIFACTS["first deploy"] = deployed_site["report"]["deploy"]["artifacts"]
    return deployed_site


def _https(lab, host, path: str, *, key: str | None = None, body: dict | None = None):
    return gateway_request(lab["ca"], host, path, key=key, body=body)


CHAT = {"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "hello world"}]}


def test_chat_completion_over_https_with_the_key_on_both_hosts(lab):
    for h in lab["hosts"]:
        status, answer = _https(lab, h, "/v1/chat/completions", key=lab["keys"][h.name], body=CHAT)
        assert status == 200, h.name
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] > 0
        status, models = _https(lab, h, "/v1/models", key=lab["keys"][h.name])
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]


def test_the_official_openai_client_works_against_the_gateway(lab):
    """What users actually point at the deployment: the `openai` Python SDK, TLS checked against the site CA."""
    import httpx
    import openai

    for h in lab["hosts"]:
        http = httpx.Client(verify=str(lab["ca"]), timeout=120)
        client = openai.OpenAI(base_url=f"https://127.0.0.1:{h.https_port}/v1", api_key=lab["keys"][h.name],
                               http_client=http, max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        answer = client.chat.completions.create(model="tiny", max_tokens=8,
                                                messages=[{"role": "user", "content": "hello world"}])
        assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model="tiny", max_tokens=8, stream=True,
                                                     messages=[{"role": "user", "content": "hello world"}]))
        assert len(chunks) > 1 and chunks[-1].choices[0].finish_reason in ("stop", "length")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, "the stream carried tokens"
        wrong = openai.OpenAI(base_url=f"https://127.0.0.1:{h.https_port}/v1", api_key="0" * 64,
                              http_client=http, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        http.close()


def test_no_key_or_wrong_key_gets_401(lab):
    for h in lab["hosts"]:
        assert _https(lab, h, "/v1/chat/completions", body=CHAT)[0] == 401
        assert _https(lab, h, "/v1/models", key="0" * 64)[0] == 401
        other = next(k for n, k in lab["keys"].items() if n != h.name)
        assert _https(lab, h, "/v1/models", key=other)[0] == 401, "keys are per host"


def test_server_cannot_reach_the_sentinel_but_the_host_bridge_can(lab):
    """The verify role's own probe, run in the server container, fails with a network error; the very
    same probe from the very same image on a routed bridge reaches the sentinel (the positive control)."""
    s = lab["sentinel"]
    container = lab["bundle"].vars.selfhost_vllm_container
    probe = (ROOT / "playbooks" / "roles" / "selfhost_verify" / "files" / "egress_probe.py").read_text()
    target = f"{s.ip}:{s.port}"
    for h in lab["hosts"]:
        res = h.exec("docker", "exec", container, "python3", "-c", probe, target, check=False)
        assert res.returncode == 3 and res.stdout.startswith(b"blocked"), (res.returncode, res.stdout)
        image = json.loads(h.exec("docker", "inspect", container).stdout)[0]["Config"]["Image"]
        ctl = h.exec("docker", "run", "--rm", "--network", "bridge", "--entrypoint", "python3", image, "-c", probe,
                     target, check=False, timeout=120)
        assert ctl.returncode == 0 and ctl.stdout.startswith(b"reached"), (ctl.returncode, ctl.stdout, ctl.stderr)
        inspect = json.loads(h.exec("docker", "inspect", container).stdout)[0]
        assert list(inspect["NetworkSettings"]["Networks"]) == [lab["bundle"].vars.selfhost_network_internal]
        assert inspect["HostConfig"]["PortBindings"] in ({}, None), "only the gateway publishes a port"
        mounts = {m["Destination"]: m for m in inspect["Mounts"]}
        assert mounts[lab["bundle"].vars.selfhost_vllm_model_mount]["RW"] is False
        assert mounts[lab["bundle"].vars.selfhost_vllm_cache_mount]["RW"] is True, "the compile cache persists"


def test_second_deploy_changes_nothing(lab):
    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(lab["bundle"].path, on_event=print_changes(changes))
    TIMES["no-op deploy"] = time.monotonic() - t0
    ARTIFACTS["no-op deploy"] = result.artifacts
    print(f"\n[e2e] no-op deploy: {TIMES['no-op deploy']:.0f}s, status {result.status}", flush=True)
    assert result.ok, result.failed
    assert {h: s.changed for h, s in result.hosts.items()} == {h.name: 0 for h in lab["hosts"]}, \
        [f"{e.host} {e.step}: {e.task}" for e in changes]


def test_killed_server_and_corrupt_weight_are_healed(lab):
    v = lab["bundle"].vars
    h = lab["hosts"][0]
    h.exec("docker", "kill", v.selfhost_vllm_container)
    target = f"{v.selfhost_weights_dir}/model.safetensors"
    h.exec("python3", "-c", f"f = open({target!r}, 'r+b'); f.seek(4096); f.write(b'corrupt!'); f.close()")
    assert h.exec("sh", "-c", f"cd {v.selfhost_weights_dir} && sha256sum -c --quiet {v.selfhost_weights_dir}.sha256",
                  check=False).returncode != 0

    changes: list = []
    t0 = time.monotonic()
    result = deployer.run(lab["bundle"].path, on_event=print_changes(changes))
    TIMES["heal deploy"] = time.monotonic() - t0
    ARTIFACTS["heal deploy"] = result.artifacts
    print(f"\n[e2e] heal deploy: {TIMES['heal deploy']:.0f}s", flush=True)
    assert result.ok, result.failed
    assert result.hosts[h.name].changed > 0
    assert result.hosts[lab["hosts"][1].name].changed == 0, "the healthy host is left alone"
    check = h.exec("sh", "-c", f"cd {v.selfhost_weights_dir} && sha256sum -c --quiet {v.selfhost_weights_dir}.sha256",
                   check=False)
    assert check.returncode == 0, check.stdout
    health = h.exec("docker", "inspect", "--format", "{{.State.Health.Status}}", v.selfhost_vllm_container)
    assert health.stdout.decode().strip() == "healthy"
    status, _ = _https(lab, h, "/v1/chat/completions", key=lab["keys"][h.name], body=CHAT)
    assert status == 200


def test_report_times(lab):
    """The deploy wall times, printed and written to the e2e cache (`python bench/deploy_time.py` shows
    them); a re-run that changes nothing must cost far less than the first deploy (it copies no image
    or weights and restarts nothing)."""
    print("\n[e2e] wall times: " + ", ".join(f"{k} {v:.0f}s" for k, v in TIMES.items()), flush=True)
    record_times(TIMES, hosts=len(lab["hosts"]), artifacts=ARTIFACTS)
    assert {"first deploy", "no-op deploy", "heal deploy"} <= set(TIMES), "a timed phase did not run"
    assert TIMES["no-op deploy"] < TIMES["first deploy"] / 2, TIMES
    assert TIMES["heal deploy"] < TIMES["first deploy"], TIMES
