"""Make the fleet's shared gateway files once, on its first host (run by selfhost_gateway fleet_keys.yml; root-only).

    fleet_keys.py DIR LABEL
                        create DIR/api-keys.conf (one fresh API key with caller label LABEL, the same format a
                        single host gets) and
                        DIR/fleet-secret.conf (the bearer secret gateways send each other) when missing
Prints {"created": [file names]}; never prints a key or the secret; never overwrites a file.
"""
import json
import os
import re
import secrets
import sys

folder = sys.argv[1]
os.makedirs(folder, mode=0o750, exist_ok=True)
created = []


def make(name, text):
    try:
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)
    created.append(name)


label = sys.argv[2] if len(sys.argv) > 2 else "default"
if not re.match(r"^[A-Za-z0-9._:@/-]{1,128}$", label) or label in ("0", "1"):
    sys.exit("label %r: letters, digits and ._:@/- only (not 0 or 1)" % label)
make("api-keys.conf",
     "# selfhost API keys (root-only): one quoted Authorization value per line, then its caller label.\n"
     "# Keys are 71 characters with the scheme: more than nginx's default bucket.\n"
     "map_hash_bucket_size 128;\n"
     "map $http_authorization $selfhost_api_key_ok {\n    default \"\";\n"
     '    "Bearer %s" "%s";\n}\n' % (secrets.token_hex(32), label))
secret = secrets.token_hex(32)
make("fleet-secret.conf",
     "# selfhost fleet secret (root-only): the bearer value gateways of one fleet send each other.\n"
     "map $http_authorization $selfhost_fleet_peer_ok {\n    default 0;\n"
     '    "Bearer %s" 1;\n}\n'
     "map $uri $selfhost_fleet_auth {\n"
     '    default "Bearer %s";\n}\n' % (secret, secret))
print(json.dumps({"created": created}))
