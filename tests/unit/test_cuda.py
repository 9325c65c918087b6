"""The engine image's CUDA requirement, read from its `docker save` tarball, sets the driver floor
that GPU preflight checks (no Docker: the tarballs are written here in both layouts Docker emits)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.unit.test_render import CASES, HOSTS, _site, _weights
from toolkit.render import cuda
from toolkit.errors import RenderError
from toolkit.render.bundle import render
from toolkit.render.site import load_site

NVIDIA_ENV = ["PATH=/usr/local/nvidia/bin:/usr/bin", "CUDA_VERSION=12.8.1",
              "NVIDIA_REQUIRE_CUDA=cuda>=12.8 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=535,driver<536"]


def _save(path: Path, env: list[str], *, oci: bool) -> Path:
    """A minimal `docker save` tarball: manifest.json naming a config blob (layers left out)."""
    config_name = "blobs/sha256/" + "c" * 64 if oci else "c" * 64 + ".json"
    members = {config_name: json.dumps({"architecture": "amd64", "config": {"Env": env}}).encode(),
               "manifest.json": json.dumps([{"Config": config_name, "RepoTags": ["vllm/vllm-openai:v0.32.0"],
                                             "Layers": []}]).encode()}
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("oci", [False, True], ids=["docker-20", "oci-layout"])
def test_cuda_of_an_image_tarball(tmp_path, oci):
    assert cuda.image_cuda(_save(tmp_path / "gpu.tar", NVIDIA_ENV, oci=oci)) == "12.8"
    assert cuda.image_cuda(_save(tmp_path / "cpu.tar", ["PATH=/usr/bin"], oci=oci)) is None


def test_cuda_version_alone_is_enough():
    assert cuda.cuda_from_env(["CUDA_VERSION=12.4.1"]) == "12.4"
    assert cuda.cuda_from_env(["NVIDIA_REQUIRE_CUDA=cuda>=13.0", "CUDA_VERSION=12.9.0"]) == "13.0"


@pytest.mark.parametrize("version, driver", [("12.8", "570.26"), ("12.8.1", "570.26"), ("12.6", "560.28.03"),
                                             ("13.0", "580.65.06"), ("12.7", None), ("14.1", None), (None, None)])
def test_min_driver(version, driver):
    assert cuda.min_driver(version) == driver


def test_not_a_docker_save_tarball(tmp_path):
    bad = tmp_path / "image.tar"
    bad.write_bytes(b"x" * 1024)
    with pytest.raises(RenderError) as exc:
        cuda.image_cuda(bad)
    assert "is not a `docker save` tarball" in exc.value.message and "docker save IMAGE -o FILE" in exc.value.fix


def test_gpu_render_sets_the_driver_floor_from_the_image(tmp_path):
    site = _site(tmp_path, HOSTS["gpu-tp1-llama8b-l40s"], group_vars="selfhost_images_vllm_tarball: vllm.tar\n")
    _save(site / "vllm.tar", NVIDIA_ENV, oci=True)
    weights = _weights(tmp_path)
    bundle = render(CASES["gpu-tp1-llama8b-l40s"](), load_site(site), tmp_path / "out", weights_source=weights)
    assert bundle.vars.selfhost_preflight_driver_min == "570.26"

    site2 = _site(tmp_path / "registry", HOSTS["gpu-tp1-llama8b-l40s"])  # pulled from a registry: unknown here
    bundle = render(CASES["gpu-tp1-llama8b-l40s"](), load_site(site2), tmp_path / "out2", weights_source=weights)
    assert bundle.vars.selfhost_preflight_driver_min is None
