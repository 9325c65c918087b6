"""Thin wrappers over the `docker` CLI.

The CLI is used (not the SDK) for builds, import, save and load: it streams progress, works
with any client/daemon version pair (API negotiation) and is what a human would type.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

# The CLI on PATH may lack buildx; the legacy builder is enough for our Dockerfiles.
_ENV = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}


def log(msg: str) -> None:
    print(f"[e2e-infra] {msg}", file=sys.stderr, flush=True)


def docker(*args: str, check: bool = True, capture: bool = True, input: bytes | None = None,
           stdin=None, stdout=None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `docker ARGS`; raise with the stderr tail on failure."""
    res = subprocess.run(
        ["docker", *args], env=_ENV, input=input, stdin=stdin,
        stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
        stderr=subprocess.PIPE if capture else None, timeout=timeout,
    )
    if check and res.returncode != 0:
        err = (res.stderr or b"").decode(errors="replace")[-2000:]
        raise RuntimeError(f"docker {' '.join(args[:4])} ... failed (rc {res.returncode}): {err}")
    return res


def out(*args: str, **kw) -> str:
    return docker(*args, **kw).stdout.decode().strip()


def stream(args: Sequence[str]) -> None:
    """Run a long docker command, echoing its output as progress lines."""
    proc = subprocess.Popen(["docker", *args], env=_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    tail: list[str] = []
    assert proc.stdout
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = (tail + [line])[-40:]
        if line.startswith(("Step ", "Successfully built")):
            log("  " + line[:200])
    if proc.wait() != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed:\n" + "\n".join(tail))


def image_label(ref: str, label: str) -> str | None:
    """A label of a local image, or None when the image does not exist."""
    res = docker("image", "inspect", ref, check=False)
    if res.returncode != 0:
        return None
    labels = json.loads(res.stdout)[0]["Config"].get("Labels") or {}
    return labels.get(label)


def image_id(ref: str) -> str:
    return out("image", "inspect", "--format", "{{.Id}}", ref)
