"""Names and paths shared by the e2e infrastructure (one place to change them)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR = Path(os.environ.get("SELFHOST_TEST_CACHE", "/var/cache/selfhost-test"))
CONTEXT_DIR = Path(__file__).parent / "context"  # Dockerfiles and scripts baked into images

SUITE = "bookworm"  # python3 3.11 there matches the cp311 torch wheel
VLLM_VERSION = "0.32.0"

BASE_IMAGE = f"selfhost-test/base:{SUITE}"
HOST_IMAGE = "selfhost-test/host:1"
VLLM_IMAGE = f"selfhost-test/vllm-cpu:{VLLM_VERSION}"
GATEWAY_IMAGE = "selfhost-test/gateway:1"
ROUTER_IMAGE = "selfhost-test/router:1"  # router/Dockerfile, from the router wheelhouse

# Label holding a hash of an image's build inputs: equal hash -> no rebuild.
INPUTS_LABEL = "org.selfhost.test.inputs"

NET = "selfhost-test-net"  # test hosts live here, ports published on 127.0.0.1 only
OUTSIDE_NET = "selfhost-test-outside"  # hosts + sentinel: "somewhere outside" the hosts
LABEL = "org.selfhost.test"  # on every container/volume/network we create, for teardown


def cache_path(*parts: str) -> Path:
    p = CACHE_DIR.joinpath(*parts)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
