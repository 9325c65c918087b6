# Verify the weights in DIR against the sha256sum MANIFEST, hashing only what may have changed.
# usage: verify_weights.py DIR MANIFEST STAMP changed|full [--expect SHA256] [--dry]
#
# STAMP (JSON) records, for every file that last passed its SHA-256 check, its stat identity:
# size, mtime_ns, ctime_ns, inode, device. A file whose identity still matches the stamp is trusted
# without re-reading it: every write through the filesystem (a copy, an editor, a stray `dd`, even
# one that restores the mtime afterwards) moves ctime, which user space cannot set back. So a no-op
# re-deploy reads no weight bytes, while a corrupted or replaced file is hashed again. What a stat
# cannot see is bit rot under the filesystem; `full` (selfhost_weights_verify: full, or
# `selfhost deploy --verify-weights`) re-hashes everything for that. A changed manifest (another
# model revision) also re-hashes everything. Prints one JSON document: {"bad", "hashed", "trusted",
# "hashed_bytes"}; "bad" names the files that are missing or fail their hash. The stamp is rewritten
# with the files that passed (bookkeeping, like the host lock: the deployment itself is unchanged);
# --dry (check mode) writes nothing.
#
# --expect SHA256 (the digest of the bundle's manifest) also answers "in_place": the host already
# holds exactly what a copy would leave there (this manifest, root-owned, every file and no other,
# files 0444 and directories 0555, every file passing), so a re-deploy skips the copy steps: one
# round trip instead of five. A host manifest that is missing or differs answers false at once.
import hashlib
import json
import os
import stat
import sys

directory, manifest_path, stamp_path, mode = sys.argv[1:5]
options = sys.argv[5:]
expect = options[options.index("--expect") + 1] if "--expect" in options else None
dry = "--dry" in options
try:
    with open(manifest_path, "rb") as f:
        manifest_bytes = f.read()
except FileNotFoundError:
    if expect is None:
        raise
    manifest_bytes = None
manifest_digest = hashlib.sha256(manifest_bytes).hexdigest() if manifest_bytes is not None else None
if expect is not None and manifest_digest != expect:  # first deploy, or another model revision
    print(json.dumps({"bad": [], "hashed": 0, "trusted": 0, "hashed_bytes": 0, "in_place": False}))
    sys.exit(0)
expected = {}
for line in manifest_bytes.decode().splitlines():
    if line.strip():
        digest, name = line.split(None, 1)
        expected[name.lstrip("*")] = digest.lower()

try:
    with open(stamp_path) as f:
        stamp = json.load(f)
except (OSError, ValueError):
    stamp = {}
trusted_ids = stamp.get("files", {}) if stamp.get("manifest") == manifest_digest and mode != "full" else {}


def identity(st):
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


bad, passed, trusted, hashed, hashed_bytes = [], {}, 0, 0, 0
for name, digest in sorted(expected.items()):
    path = os.path.join(directory, name)
    try:
        before = identity(os.stat(path))
    except OSError:
        bad.append(name)
        continue
    if trusted_ids.get(name) == before:
        passed[name] = before
        trusted += 1
        continue
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    hashed += 1
    hashed_bytes += before[0]
    # Only a file that did not change while it was read may be stamped as verified.
    if h.hexdigest() == digest and identity(os.stat(path)) == before:
        passed[name] = before
    else:
        bad.append(name)

if not dry:
    tmp = stamp_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"manifest": manifest_digest, "files": passed}, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, stamp_path)
result = {"bad": bad, "hashed": hashed, "trusted": trusted, "hashed_bytes": hashed_bytes}


def root_owned(st, perm):
    return st.st_uid == 0 and st.st_gid == 0 and stat.S_IMODE(st.st_mode) == perm


if expect is not None:
    found, layout_ok = set(), root_owned(os.stat(manifest_path), 0o444)
    try:
        layout_ok = layout_ok and root_owned(os.lstat(directory), 0o555) and os.path.isdir(directory)
        for here, dirs, files in os.walk(directory):
            for d in dirs:
                st = os.lstat(os.path.join(here, d))
                layout_ok = layout_ok and stat.S_ISDIR(st.st_mode) and root_owned(st, 0o555)
            for name in files:
                st = os.lstat(os.path.join(here, name))
                layout_ok = layout_ok and stat.S_ISREG(st.st_mode) and root_owned(st, 0o444)
                found.add(os.path.relpath(os.path.join(here, name), directory))
    except OSError:
        layout_ok = False
    result["in_place"] = bool(layout_ok and not bad and found == set(expected))
print(json.dumps(result))
