"""Wall time and peak memory of reading hostile or huge inputs: what the bounded readers cost and save.

    python bench/input_limits.py

Measures, in this process (tracemalloc peak of Python allocations, plus the process's max RSS):
- the largest plan.yml that is accepted (a real plan padded with warnings up to the size limit);
- the rejected bombs: a 342-byte "billion laughs" plan.yml, `--api-prices /dev/zero`, a 50 MB plan.yml,
  a plan path that is a directory.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from toolkit import catalog  # noqa: E402
from toolkit.catalog.files import PLAN_LIMIT  # noqa: E402
from toolkit.errors import SelfhostError  # noqa: E402
from toolkit.plan import planner  # noqa: E402
from toolkit.plan.model import Plan  # noqa: E402

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
)


def measure(label: str, fn) -> None:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
        outcome = "accepted"
    except SelfhostError as exc:
        first = exc.message.splitlines()[0]
        outcome = f"refused: {first[:90]}{'…' if len(first) > 90 else ''}"
    wall = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<44} {wall * 1000:9.1f} ms  peak {peak / 2**20:7.2f} MiB  {outcome}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="selfhost-limits-"))
    base = planner.plan(planner.PlanRequest(model="llama-3.1-8b", gpus=["L4"])).plan.model_dump(mode="json")

    # The largest accepted plan: 200 warnings and 200 assumptions of ~1,000 characters, padded to the size limit.
    big = dict(base)
    big["warnings"] = [f"warning {i}: " + "w" * 980 for i in range(200)]
    big["performance"] = {**base["performance"], "assumptions": [f"assumption {i}: " + "a" * 975 for i in range(200)]}
    big_file = tmp / "big-plan.yml"
    text = yaml.safe_dump(big, sort_keys=False, width=10_000)
    comment = "# " + "c" * 97 + "\n"  # pad with comments up to just under the size limit
    text += comment * ((PLAN_LIMIT - len(text.encode()) - 1) // len(comment))
    big_file.write_text(text)
    size = big_file.stat().st_size
    assert size < PLAN_LIMIT, size

    bomb = tmp / "laughs.yml"
    bomb.write_text(BILLION_LAUGHS)
    huge = tmp / "huge-plan.yml"
    with huge.open("w") as out:
        out.write("warnings:\n")
        out.write(("- " + "a" * 66 + "\n") * 750_000)

    print(f"{'input':<44} {'wall':>12}  {'tracemalloc peak':>17}  outcome")
    measure(f"generated plan.yml ({len(yaml.safe_dump(base)) / 1024:.1f} KiB)",
            lambda: Plan.from_dict(yaml.safe_load(yaml.safe_dump(base))))
    measure(f"largest accepted plan.yml ({size / 2**20:.2f} MiB)", lambda: Plan.load(big_file))
    measure(f"billion laughs plan.yml ({len(BILLION_LAUGHS)} bytes)", lambda: Plan.load(bomb))
    measure("--api-prices /dev/zero", lambda: catalog.api_prices(Path("/dev/zero")))
    measure(f"plan.yml of {huge.stat().st_size / 1e6:.0f} MB", lambda: Plan.load(huge))
    measure("plan path that is a directory", lambda: Plan.load(tmp))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of this process: {rss:.0f} MiB")
    for f in (big_file, bomb, huge):
        f.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
