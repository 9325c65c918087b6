"""Print what /var/lib/selfhost holds about deployments, as JSON (run by selfhost_release info.yml).

    releases.py ROOT [NAME]   {"NAME": {"current": record|null, "previous": record|null,
                                        "releases": [{"digest", "recorded_at"}...], "records": {digest: record},
                                        "lock": owner|null}}
"""
import json
import os
import sys
import time

root = sys.argv[1]
only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


out = {}
names = [only] if only else (sorted(os.listdir(root)) if os.path.isdir(root) else [])
for name in names:
    state = os.path.join(root, name)
    rel = os.path.join(state, "releases")
    if not os.path.isdir(rel):
        continue
    files = sorted((f for f in os.listdir(rel) if f.endswith(".json")),
                   key=lambda f: os.path.getmtime(os.path.join(rel, f)))
    lock = os.path.join(state, "lock")
    out[name] = {
        "current": load(os.path.join(state, "current")),
        "previous": load(os.path.join(state, "previous")),
        "releases": [{"digest": f[:-5], "recorded_at": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(os.path.join(rel, f))))} for f in files],
        "records": {f[:-5]: load(os.path.join(rel, f)) for f in files},
        "lock": (load(os.path.join(lock, "owner.json")) or {"who": "unknown"}) if os.path.isdir(lock) else None,
    }
print(json.dumps(out))
