"""Wall times of a real deployment: the first deploy, a re-deploy that changes nothing, and a heal.

    python bench/deploy_time.py          # the times of the last e2e run of tests/e2e/test_deploy.py
    python bench/deploy_time.py --run    # run that test file now (under the e2e lock), then show them
    python bench/deploy_time.py --tasks 15   # also the slowest tasks of each timed run

tests/e2e/test_deploy.py deploys the tiny CPU model to two SSH test hosts (first deploy: the
`selfhost deploy` CLI with its check-mode preview), re-deploys it unchanged, then kills one server
and corrupts one weight file and re-deploys (the heal), and writes the wall times to
$SELFHOST_TEST_CACHE/deploy_times.json. This prints them, with the per-task times Ansible recorded
in each run's ansible-runner artifacts while those still exist. The target for the no-op re-deploy
is under 30 s for two hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.infra.config import cache_path  # noqa: E402

TIMES_FILE = "deploy_times.json"  # written by tests/e2e/test_deploy.py::test_report_times
LOCK = "/tmp/selfhost-e2e.lock"  # one e2e run at a time on this machine
NOOP_TARGET_S = 30.0


def run_e2e() -> int:
    cmd = ["flock", LOCK, sys.executable, "-m", "pytest", "tests/e2e/test_deploy.py", "-q", "-p", "no:cacheprovider", "-x"]
    return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "CI": "true"}, check=False).returncode


def task_times(artifact_dir: Path) -> list[tuple[float, str]]:
    """(seconds, "role: task") of every task of one ansible-runner run: start to the next task's start."""
    events = [json.loads(p.read_text()) for p in (artifact_dir / "job_events").glob("*.json")]
    events.sort(key=lambda e: e.get("counter", 0))
    if not events:
        return []
    starts = [e for e in events if e["event"] == "playbook_on_task_start"]
    def at(event: dict) -> float:
        return datetime.fromisoformat(event["created"]).timestamp()

    rows = []
    for a, b in zip(starts, starts[1:] + [events[-1]]):
        role = (a["event_data"].get("role") or "").removeprefix("selfhost_")
        rows.append((at(b) - at(a), f"{role or 'play'}: {a['event_data'].get('task', '')}"))
    return rows


def show(record: dict, tasks: int) -> None:
    s = record["seconds"]
    print(f"deploy wall times, {record['hosts']} hosts, {record['cpus']} CPUs, commit {record['commit']}, "
          f"measured {record['measured']}:")
    for phase in ("first deploy", "no-op deploy", "heal deploy"):
        if phase in s:
            note = ""
            if phase == "no-op deploy":
                note = f"  (target < {NOOP_TARGET_S:.0f}s: {'met' if s[phase] < NOOP_TARGET_S else 'NOT met'})"
            print(f"  {phase:13s} {s[phase]:7.1f} s{note}")
    if not tasks:
        return
    for phase, where in record.get("artifacts", {}).items():
        if not where or not Path(where).is_dir():
            continue
        rows = task_times(Path(where))
        by_role: dict[str, float] = defaultdict(float)
        for sec, name in rows:
            by_role[name.split(":")[0]] += sec
        print(f"\n{phase}: {len(rows)} tasks; by role: "
              + ", ".join(f"{r} {t:.1f}s" for r, t in sorted(by_role.items(), key=lambda kv: -kv[1])))
        for sec, name in sorted(rows, reverse=True)[:tasks]:
            print(f"  {sec:6.1f} s  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run tests/e2e/test_deploy.py first (10-20 min)")
    ap.add_argument("--tasks", type=int, default=0, metavar="N", help="show the N slowest tasks of each run")
    args = ap.parse_args(argv)
    if args.run and run_e2e() != 0:
        print("the e2e run failed; the times below may be from an earlier run", file=sys.stderr)
    path = cache_path(TIMES_FILE)
    if not path.is_file():
        print(f"no recorded run ({path}); run with --run", file=sys.stderr)
        return 1
    show(json.loads(path.read_text()), args.tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
