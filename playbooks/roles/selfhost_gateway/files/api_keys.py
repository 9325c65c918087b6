"""Change or read the gateway's API keys file in place (run by selfhost_gateway keys.yml; root-only).

The file is an nginx map from the Authorization header to the key's caller label:
    map $http_authorization $selfhost_api_key_ok { default ""; "Bearer KEY" "team-a";  # issued=TAG ... }
A key whose value is 1 (files written before labels) carries the site's default label DEFAULT; it keeps its
1 when rotated, so it keeps following that setting. nginx.conf turns "", 0 into "no key" (401).

    api_keys.py create       FILE LABEL                 a new file holding one fresh key (never overwrites)
    api_keys.py add          FILE TAG DEFAULT LABEL     a fresh key for LABEL, tagged `# issued=TAG` (once per TAG)
    api_keys.py revoke       FILE TAG DEFAULT LABEL     drop every key of LABEL (refused when none or when no
                                                        other key would be left)
    api_keys.py rotate-add   FILE TAG DEFAULT           a fresh key per label, tagged `# rotation=TAG` (once per TAG)
    api_keys.py rotate-retire FILE TAG DEFAULT          drop the keys of every label that has a key of rotation TAG,
                                                        except those keys
    api_keys.py list         FILE TAG DEFAULT           labels, key counts and tags; never a key
A new key is also written alone to FILE.new (0600) for the control node, which shows it once.
Prints one JSON object; never prints a key. The file is replaced atomically (same dir, 0600).
"""
import json
import os
import re
import secrets
import sys

LABEL = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")  # the router's caller-label rule (router/policy.py)
# "0" and "1" mean "no key" and "the site's default label" in nginx.conf's map: never a label.
RESERVED = ("0", "1")
KEY = re.compile(r'^\s*"Bearer ([0-9A-Za-z._~+/-]{16,})"\s+(1|"([^"]*)");\s*(?:#\s*(rotation|issued)=(\S+))?.*$')
HEADER = ("# selfhost API keys (root-only): one quoted Authorization value per line, then its caller label.\n"
          "# Keys are 71 characters with the scheme: more than nginx's default bucket.\n"
          "map_hash_bucket_size 128;\n"
          "map $http_authorization $selfhost_api_key_ok {\n    default \"\";\n")


def fail(message):
    sys.exit(message)


def check_label(label):
    if not LABEL.match(label) or label in RESERVED:
        fail("label %r: letters, digits and ._:@/- only (not 0 or 1)" % label)


def line_for(key, label, tag_kind, tag):
    value = "1" if label is None else '"%s"' % label
    return '    "Bearer %s" %s;  # %s=%s' % (key, value, tag_kind, tag)


def write_private(path, text, exclusive=False):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def create(path, label):
    check_label(label)
    try:
        write_private(path, HEADER + '    "Bearer %s" "%s";\n}\n' % (secrets.token_hex(32), label), exclusive=True)
    except FileExistsError:
        return {"changed": False}
    return {"changed": True}


def parse(lines, default):
    """[(line index, label, raw value, tag kind, tag)] of every key line."""
    found = []
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if m:
            found.append((i, default if m.group(2) == "1" else m.group(3), m.group(2), m.group(4), m.group(5)))
    return found


def main(argv):
    mode, path = argv[0], argv[1]
    if mode == "create":
        return create(path, argv[2])
    tag, default = argv[2], argv[3]
    with open(path) as f:
        lines = f.read().splitlines()
    keys = parse(lines, default)
    labels = sorted({k[1] for k in keys})
    if mode == "list":
        out = {}
        for _, label, raw, kind, t in keys:
            entry = out.setdefault(label, {"keys": 0, "site_default": False, "tags": []})
            entry["keys"] += 1
            entry["site_default"] = entry["site_default"] or raw == "1"
            if t and "%s=%s" % (kind, t) not in entry["tags"]:
                entry["tags"].append("%s=%s" % (kind, t))
        return {"changed": False, "keys": len(keys), "labels": out}
    new = []  # (label or None for a 1-valued key, key) to insert
    drop = set()
    if mode == "add":
        label = argv[4]
        check_label(label)
        conf = os.path.join(os.path.dirname(os.path.abspath(path)), "nginx.conf")
        if label != default and os.path.exists(conf) and "$selfhost_caller" not in open(conf).read():
            fail("the gateway's nginx.conf predates labelled keys (it would refuse this key): "
                 "deploy with this selfhost version first")
        if not any(k[4] == tag and k[3] == "issued" for k in keys):
            new.append((label, secrets.token_hex(32)))
        kind = "issued"
    elif mode == "revoke":
        label = argv[4]
        check_label(label)
        mine = [k for k in keys if k[1] == label]
        if not mine:
            fail("no key has the label %r (labels: %s)" % (label, ", ".join(labels) or "none"))
        if len(mine) == len(keys):
            fail("revoking %r would remove every key: add a key with another label first" % label)
        drop = {k[0] for k in mine}
        kind = "issued"
    elif mode == "rotate-add":
        kind = "rotation"
        if not any(k[4] == tag and k[3] == "rotation" for k in keys):
            seen = set()
            for _, label, raw, _, _ in keys:
                which = None if raw == "1" else label  # a 1-valued key's successor keeps the 1
                if which not in seen:
                    seen.add(which)
                    new.append((which, secrets.token_hex(32)))
    elif mode == "rotate-retire":
        kind = "rotation"
        rotated = {k[1] for k in keys if k[3] == "rotation" and k[4] == tag}
        if not rotated:
            fail("no key of rotation %s in %s: refusing to remove every key" % (tag, path))
        drop = {k[0] for k in keys if k[1] in rotated and not (k[3] == "rotation" and k[4] == tag)}
    else:
        fail("unknown mode %r" % mode)
    if new:
        added = [line_for(key, label, kind, tag) for label, key in new]
        at = keys[0][0] if keys else next(i for i, line in enumerate(lines) if line.strip() == "}")
        lines[at:at] = added
        write_private(path + ".new", "\n".join(added) + "\n")
    if drop:
        lines = [line for i, line in enumerate(lines) if i not in drop]
    changed = bool(new or drop)
    if changed:
        write_private(path + ".tmp", "\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    left = parse(lines, default)
    return {"changed": changed, "keys": len(left), "labels": sorted({k[1] for k in left}),
            "added": sorted(lab if lab is not None else default for lab, _ in new)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
