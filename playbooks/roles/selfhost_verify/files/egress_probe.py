"""Egress probe run inside a container: can it open a TCP connection to HOST:PORT?

Exit 0 and "reached": a route out exists (a refused connection counts: something answered).
Exit 3 and "blocked": a network-layer failure (no route, unreachable, timed out, no name).
Exit 4 and "probe-error": anything else, which proves nothing either way.
"""
import errno
import socket
import sys

NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT, errno.EADDRNOTAVAIL}

try:
    host, port = sys.argv[1].rsplit(":", 1)
    socket.create_connection((host, int(port)), 3).close()
except ConnectionRefusedError:
    print("reached %s (connection refused: a route out exists)" % sys.argv[1])
    sys.exit(0)
except (socket.timeout, socket.gaierror) as exc:
    print("blocked: %s: %s" % (type(exc).__name__, exc))
    sys.exit(3)
except OSError as exc:
    if exc.errno in NO_ROUTE:
        print("blocked: %s" % exc)
        sys.exit(3)
    print("probe-error: %r" % exc)
    sys.exit(4)
except Exception as exc:  # a broken argument or interpreter: the probe did not test the network
    print("probe-error: %r" % exc)
    sys.exit(4)
print("reached %s" % sys.argv[1])
