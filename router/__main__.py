"""`python -m router --policy /etc/selfhost/router/policy.yaml [--host H] [--port P]`: run the service."""
from __future__ import annotations

import argparse
import logging
import sys

from router.policy import PolicyError, load_policy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m router", description="selfhost's no-leak hybrid router")
    ap.add_argument("--policy", required=True)
    ap.add_argument("--host", default="0.0.0.0", help="bind address (the router's internal network only)")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--check", action="store_true", help="validate the policy and its secret files, then exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        policy = load_policy(args.policy)
        from router.app import create_app
        app = create_app(policy)
    except PolicyError as e:
        sys.stderr.write(f"policy error: {e}\n")
        return 2
    if args.check:
        sys.stdout.write("policy ok\n")
        return 0
    import uvicorn
    # access_log off: uvicorn's access log carries no prompt, but the router keeps its own audit log.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
