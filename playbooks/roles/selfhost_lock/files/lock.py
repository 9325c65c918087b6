"""Host lock and audit log of selfhost runs (run by the selfhost_lock role with the host's python3).

    lock.py take    STATE OWNER_JSON   atomic mkdir STATE/lock + owner.json; prints {"held": bool, "owner": {...}}
    lock.py check   STATE OWNER_JSON   the same answer without taking the lock (check mode)
    lock.py release STATE OWNER_JSON   remove STATE/lock if OWNER holds it
    lock.py force   STATE OWNER_JSON   remove STATE/lock whoever holds it; prints the owner it had
    lock.py audit   STATE RECORD_JSON  append RECORD as one line to STATE/audit.log (root-only, O_APPEND)
The lock is re-entrant for the same run id (a command that runs several playbooks holds it throughout).
"""
import json
import os
import shutil
import sys

mode, state, arg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lock = os.path.join(state, "lock")


def owner():
    try:
        with open(os.path.join(lock, "owner.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"who": "unknown (no owner.json)", "since": "unknown", "command": "unknown", "id": None}


def answer(held, who):
    print(json.dumps({"held": held, "owner": who}))


os.makedirs(state, mode=0o700, exist_ok=True)
if mode == "take":
    try:
        os.mkdir(lock, 0o700)
    except FileExistsError:
        theirs = owner()
        if theirs.get("id") != arg.get("id"):
            answer(True, theirs)
            sys.exit(0)
    tmp = os.path.join(lock, "owner.json.tmp")
    with open(tmp, "w") as f:
        json.dump(arg, f)
    os.replace(tmp, os.path.join(lock, "owner.json"))
    answer(False, arg)
elif mode == "check":
    theirs = owner() if os.path.isdir(lock) else None
    held = theirs is not None and theirs.get("id") != arg.get("id")
    answer(held, theirs if held else arg)  # like `take`: the owner is always a record
elif mode == "release":
    if os.path.isdir(lock) and owner().get("id") == arg.get("id"):
        shutil.rmtree(lock)
    answer(False, None)
elif mode == "force":
    theirs = owner() if os.path.isdir(lock) else None
    shutil.rmtree(lock, ignore_errors=True)
    answer(theirs is not None, theirs)
elif mode == "audit":
    fd = os.open(os.path.join(state, "audit.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps(arg, sort_keys=True) + "\n")
    answer(False, None)
else:
    sys.exit("unknown mode %s" % mode)
