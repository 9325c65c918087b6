"""Create the router's secrets once and keep the gateway's header include in step (run by selfhost_router).

    router_secrets.py ETC_DIR UID INCLUDE_FILE
ETC_DIR/gateway.secret and ETC_DIR/site.secret: 32 random bytes (hex) each, made only when missing
(O_EXCL), mode 0600, owned by UID (the router's user). INCLUDE_FILE (root-only, in the gateway's
directory): the nginx line that sets the shared-secret header, rewritten only when it differs.
Prints {"router_changed": bool, "gateway_changed": bool}; never prints a secret.
"""
import json
import os
import secrets
import sys

etc, uid, include = sys.argv[1], int(sys.argv[2]), sys.argv[3]
router_changed = gateway_changed = False
for name in ("gateway.secret", "site.secret"):
    path = os.path.join(etc, name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        router_changed = True
    st = os.stat(path)
    if st.st_uid != uid or st.st_mode & 0o777 != 0o600:
        os.chown(path, uid, uid)
        os.chmod(path, 0o600)
        router_changed = True

with open(os.path.join(etc, "gateway.secret")) as f:
    secret = f.read().strip()
line = ("# selfhost router: the gateway's shared secret (root-only; written by the playbook).\n"
        'proxy_set_header X-Selfhost-Gateway-Secret "%s";\n' % secret)
try:
    with open(include) as f:
        current = f.read()
except FileNotFoundError:
    current = None
if current != line:
    tmp = include + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line)
    os.replace(tmp, include)
    gateway_changed = True
elif os.stat(include).st_mode & 0o777 != 0o600:
    os.chmod(include, 0o600)
    gateway_changed = True
print(json.dumps({"router_changed": router_changed, "gateway_changed": gateway_changed}))
