"""Session fixtures for the real end-to-end tests (Docker engine, SSH test hosts, vLLM CPU).

Everything under tests/e2e is marked `e2e`. Images and the tiny model are cached in
$SELFHOST_TEST_CACHE (default /var/cache/selfhost-test); `python -m tests.e2e.infra build`
pre-builds them. Set SELFHOST_TEST_KEEP=1 to leave hosts running after the session (debugging).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.infra import hosts, images, tiny_model as tiny_model_mod
from tests.e2e.infra.hosts import Sentinel, TestHost  # noqa: F401  (re-exported for tests)
from tests.e2e.infra.images import BuiltImage  # noqa: F401

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client():
    """Docker SDK client for the local engine (start it with .ci/docker-engine.sh)."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # engine missing or not running
        msg = f"Docker engine not reachable ({exc}); run .ci/docker-engine.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    yield client
    client.close()


@pytest.fixture(scope="session")
def e2e_images(docker_client) -> dict[str, "BuiltImage"]:
    """name -> BuiltImage(ref, id, tarball, sha256) for base, host, gateway, vllm."""
    return images.build_all()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Directory of the tiny random Llama model (deterministic files)."""
    return tiny_model_mod.ensure_tiny_model()


@pytest.fixture(scope="session")
def _e2e_lab(docker_client, e2e_images):
    """Owns the test networks; removes every labelled container/volume/network at the end."""
    hosts.ensure_networks()
    yield
    if os.environ.get("SELFHOST_TEST_KEEP") != "1":
        hosts.teardown_all()


@pytest.fixture(scope="session")
def test_hosts(_e2e_lab) -> list["TestHost"]:
    """Two fresh SSH test hosts (sshd + own dockerd), shared by the whole session."""
    return hosts.start_hosts(2)


@pytest.fixture(scope="session")
def sentinel(_e2e_lab) -> "Sentinel":
    """HTTP server (ip, port, url) on the 'outside' network that the hosts are attached to."""
    return hosts.start_sentinel()
