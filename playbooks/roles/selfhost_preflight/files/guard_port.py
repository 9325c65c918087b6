"""Preflight of a multi-node group, on every node: is the group guard's TCP port free on ADDRESS? Prints one
word: `free`, `guard` (this group's guard holds it: it answers its status with NAME), or
`taken: <why>` (another program). NAME is the guard's `--name` (<deployment>/<group>). Exit 0 either way;
the task reads the word."""
import json
import socket
import sys

address, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a guard that just restarted is free
try:
    s.bind((address, port))
    s.close()
    print("free")
    sys.exit(0)
except OSError as exc:
    s.close()
    why = str(exc)
try:
    with socket.create_connection((address, port), timeout=3) as c:
        c.settimeout(3)
        c.sendall(b'{"k": "status"}\n')
        data = b""
        while not data.endswith(b"\n") and len(data) < 65536:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data.decode() or "null")
    if isinstance(answer, dict) and answer.get("name") == name:
        print("guard")
        sys.exit(0)
    why = "answers, but not as this group's guard"
except (OSError, ValueError) as exc:
    why = "%s; no group guard answers (%s)" % (why, exc)
print("taken: " + why)
