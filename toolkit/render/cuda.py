"""Which NVIDIA driver an engine image needs: the image's CUDA requirement, read from its `docker save`
tarball, mapped to the lowest Linux driver of that CUDA toolkit release.

An image built on CUDA X.Y fails to start on an older driver ("Error 803", or nvidia-container-cli's
"unsatisfied condition: cuda>=X.Y"); preflight compares this minimum with `nvidia-smi` before
anything is copied to the host.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from toolkit.errors import RenderError

# Lowest Linux x86_64 driver of each CUDA toolkit GA release (NVIDIA's "CUDA Toolkit and Corresponding
# Driver Versions" table). A release not listed here is not checked (returns None): guessing a floor
# would either block a working host or pass a broken one.
DRIVER_FOR_CUDA: dict[tuple[int, int], str] = {
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}
_REQUIRE_RE = re.compile(r"cuda>=(\d+)\.(\d+)")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)")


def min_driver(cuda: str | None) -> str | None:
    """Lowest driver for CUDA `cuda` ("12.8" or "12.8.1"); None when unknown or not given."""
    m = _VERSION_RE.match(cuda or "")
    return DRIVER_FOR_CUDA.get((int(m[1]), int(m[2]))) if m else None


def cuda_from_env(env: list[str]) -> str | None:
    """CUDA major.minor an image asks for: NVIDIA_REQUIRE_CUDA's `cuda>=X.Y`, else CUDA_VERSION."""
    values = dict(item.split("=", 1) for item in env if "=" in item)
    m = _REQUIRE_RE.search(values.get("NVIDIA_REQUIRE_CUDA", ""))
    if m:
        return f"{m[1]}.{m[2]}"
    m = _VERSION_RE.match(values.get("CUDA_VERSION", ""))
    return f"{m[1]}.{m[2]}" if m else None


def image_cuda(tarball: Path) -> str | None:
    """CUDA major.minor of the (first) image in a `docker save` tarball; None for a CPU image."""
    try:
        with tarfile.open(tarball, "r:") as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            config = json.load(tar.extractfile(manifest[0]["Config"]))
    except (tarfile.TarError, KeyError, IndexError, TypeError, ValueError, OSError) as exc:
        raise RenderError(f"{tarball} is not a `docker save` tarball ({exc})",
                          fix="create it with `docker save IMAGE -o FILE` (uncompressed)") from exc
    return cuda_from_env((config.get("config") or {}).get("Env") or [])
