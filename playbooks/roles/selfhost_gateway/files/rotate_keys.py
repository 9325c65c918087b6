"""Rotate the gateway's API keys file in place (run by selfhost_gateway rotate_keys.yml; root-only).

    rotate_keys.py add    FILE ROTATION   put a fresh key, tagged `# rotation=ROTATION`, first in the map (once
                                          per ROTATION) and write it alone to FILE.new (0600) for the control node
    rotate_keys.py retire FILE ROTATION   drop every key not tagged with ROTATION
Prints {"changed": bool, "keys": N}; never prints a key. The file is replaced atomically (same dir).
"""
import json
import os
import re
import secrets
import sys

mode, path, rotation = sys.argv[1], sys.argv[2], sys.argv[3]
KEY = re.compile(r'^\s*"Bearer [0-9A-Za-z._~+/-]{16,}"\s+1;.*$')
tag = "# rotation=%s" % rotation
with open(path) as f:
    lines = f.read().splitlines()
keys = [i for i, line in enumerate(lines) if KEY.match(line)]
ours = [i for i in keys if lines[i].rstrip().endswith(tag)]
changed = False
if mode == "add" and not ours:
    key = secrets.token_hex(32)
    at = keys[0] if keys else next(i for i, line in enumerate(lines) if line.strip() == "}")
    lines.insert(at, '    "Bearer %s" 1;  %s' % (key, tag))
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write('    "Bearer %s" 1;  %s\n' % (key, tag))
    changed = True
elif mode == "retire":
    if not ours:
        sys.exit("no key of rotation %s in %s: refusing to remove every key" % (rotation, path))
    drop = set(keys) - set(ours)
    lines = [line for i, line in enumerate(lines) if i not in drop]
    changed = bool(drop)
if changed:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
print(json.dumps({"changed": changed, "keys": len([x for x in lines if KEY.match(x)])}))
