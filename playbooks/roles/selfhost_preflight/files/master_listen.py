"""Preflight of a multi-node group, on rank 0: accept COUNT connections on ADDRESS:PORT (the master port),
then exit; give up after 45 s. A port already in use is the running server holding it: peers can connect
to that, so the listener exits at once (exit 0 either way; the peers' connect is the check)."""
import socket
import sys

address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((address, port))
except OSError as exc:
    print("in use: %s" % exc)
    sys.exit(0)
s.listen(8)
s.settimeout(45)
try:
    for _ in range(count):
        s.accept()[0].close()
    print("accepted %d" % count)
except socket.timeout:
    print("timed out")
s.close()
