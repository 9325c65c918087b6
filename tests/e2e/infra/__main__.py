"""CLI: `python -m tests.e2e.infra build [--no-vllm]` | `model DIR` | `clean`."""
from __future__ import annotations

import argparse
import sys
import time

from . import hosts, images, tiny_model
from .dockercli import log


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.e2e.infra")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build/cache all images, tarballs and the tiny model")
    b.add_argument("--no-vllm", action="store_true", help="skip the (slow) vLLM image")
    sub.add_parser("clean", help="remove ALL sessions' test hosts, sentinels, volumes, networks")
    args = ap.parse_args(argv)

    if args.cmd == "clean":
        hosts.teardown_all(all_sessions=True)
        return 0
    t0 = time.monotonic()
    built = images.build_all(vllm=not args.no_vllm)
    for img in built.values():
        size = int(images.image_size(img.ref)) / 2**20
        extra = f" tarball={img.tarball} sha256={img.sha256}" if img.tarball else ""
        log(f"ready: {img.ref} ({size:.0f} MiB){extra}")
    model = tiny_model.ensure_tiny_model()
    log(f"ready: tiny model {model}")
    log(f"build done in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
