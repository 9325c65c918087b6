"""LoRA adapters deployed for real (session fixture `deployed_site`): `selfhost upgrade` with a plan that adds
the tiny PEFT adapter (tests/e2e/infra/tiny_lora.py) ships it content-addressed and read-only, the server
serves it under its own name through the gateway (200, and a different answer from the base model at
temperature 0), the gateway refuses vLLM's runtime load/unload endpoints, and an upgrade back to the original
plan leaves the session's deployment as it was (the adapter's directory stays for a rollback).
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import gateway_request, selfhost_cli

pytestmark = pytest.mark.e2e


def _complete(site, host, model: str) -> tuple[int, str]:
    status, body = gateway_request(site["ca"], host, "/v1/completions", key=site["keys"][host.name],
                                   body={"model": model, "prompt": "The quick brown fox", "max_tokens": 8,
                                         "temperature": 0})
    return status, (body.get("choices") or [{}])[0].get("text", "")


def test_adapter_is_shipped_served_and_runtime_loading_is_closed(deployed_site, tmp_path):
    from tests.e2e.infra.tiny_lora import ensure_tiny_lora
    from toolkit.plan.model import AdapterRef

    site = deployed_site
    adapter = ensure_tiny_lora()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    base = site["plan"]
    lora = base.model_copy(update={
        "adapters": [AdapterRef(name="tiny-lora", source=str(adapter.resolve()), path="/adapters/tiny-lora", rank=8,
                                base_model=cfg["base_model_name_or_path"], modules=sorted(cfg["target_modules"]))],
        "vllm": base.vllm.model_copy(update={"enable_lora": True, "lora_modules": ["tiny-lora=/adapters/tiny-lora"],
                                             "max_loras": 1, "max_lora_rank": 8}),
    })
    plan_file = tmp_path / "plan-lora.yml"
    lora.dump(plan_file)
    res = selfhost_cli("upgrade", plan_file, "-i", site["site"], "--yes", "--json", cwd=tmp_path, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    try:
        for h in site["hosts"]:
            status, with_adapter = _complete(site, h, "tiny-lora")
            assert status == 200, f"{h.name}: the adapter is served under its own name"
            status, plain = _complete(site, h, "tiny")
            assert status == 200
            print(f"\n[e2e] {h.name}: base {plain!r} / adapter {with_adapter!r}", flush=True)
            assert with_adapter != plain, "the adapter changes the answer at temperature 0"
            for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                status, _ = gateway_request(site["ca"], h, path, key=site["keys"][h.name],
                                            body={"lora_name": "x", "lora_path": "/tmp"})
                assert status == 403, f"{h.name}: {path} is closed at the gateway"
            root = f"{site['bundle'].vars.selfhost_root}/tiny/adapters"
            out = h.exec("sh", "-c", f"stat -c '%U %a %n' {root}/*/tiny-lora {root}/*/tiny-lora/*").stdout
            listing = out.decode() if isinstance(out, bytes) else out
            assert all(line.split()[:2] in (["root", "755"], ["root", "644"]) for line in listing.splitlines()), listing
    finally:
        back = selfhost_cli("upgrade", site["plan_file"], "-i", site["site"], "--yes", "--json", cwd=tmp_path,
                            timeout=1800)
        assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-3000:]
