# Read what the host checks need in one round trip (one SSH call per host instead of four):
# usage: host_probe.py ROOT GATEWAY_PORT GATEWAY_CONTAINER [SYSTEM_ROOT]
# Prints one JSON document: cpu_flags, mem_total_kib, disk_free_kib (where ROOT is or would be
# created), disk_used_kib (under ROOT, this filesystem only), port_free, port_error, port_owner
# (`docker inspect` of our gateway: running, port bindings; only when the port is taken), and infiniband
# (the RDMA devices: /sys/class/infiniband/<hca>/ports/<n>/{state,link_layer} and /dev/infiniband; SYSTEM_ROOT
# prefixes both, "/" unless a test points it at a fake tree). Read-only.
import json
import os
import socket
import subprocess
import sys

root, port, container = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"cpu_flags": [], "mem_total_kib": 0}
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("flags"):
            out["cpu_flags"] = line.split(":", 1)[1].split()
            break
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal:"):
            out["mem_total_kib"] = int(line.split()[1])
            break

used = 0
if os.path.isdir(root):  # `du -skx`: this filesystem only, like the disk check has always counted
    du = subprocess.run(["du", "-skx", root], capture_output=True, text=True)
    used = int(du.stdout.split()[0]) if du.returncode == 0 and du.stdout else 0
d = root
while not os.path.exists(d):
    d = os.path.dirname(d)
st = os.statvfs(d)
out["disk_free_kib"] = st.f_bavail * st.f_frsize // 1024
out["disk_used_kib"] = used

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", port))
    out["port_free"], out["port_error"] = True, ""
except OSError as exc:
    out["port_free"], out["port_error"] = False, str(exc)
finally:
    s.close()

out["port_owner"] = None
if not out["port_free"] and container:
    try:
        r = subprocess.run(["docker", "inspect", "--format", "{{json .State.Running}} {{json .HostConfig.NetworkMode}} "
                            "{{json .HostConfig.PortBindings}}", container], capture_output=True, text=True)
    except OSError:  # no Docker yet (a fresh host): not our gateway then
        r = None
    if r is not None and r.returncode == 0:
        running, mode, bindings = r.stdout.strip().split(" ", 2)
        bindings = json.loads(bindings) or {}
        if json.loads(mode) == "host":  # multi-node: nginx on the host network listens on the port itself
            bindings = {"%d/tcp" % port: [{"HostIp": "", "HostPort": str(port)}]}
        out["port_owner"] = {"running": json.loads(running), "bindings": bindings}


def infiniband(system_root):
    """HCAs and their ports as the kernel shows them; `active_ports` (`<hca>:<port>` in state ACTIVE, any link
    layer: InfiniBand or RoCE) and `devices` (/dev/infiniband: uverbs*, rdma_cm) are what a server needs."""
    sys_dir = os.path.join(system_root, "sys/class/infiniband")
    dev_dir = os.path.join(system_root, "dev/infiniband")

    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""

    hcas = []
    for hca in sorted(os.listdir(sys_dir)) if os.path.isdir(sys_dir) else []:
        ports_dir = os.path.join(sys_dir, hca, "ports")
        ports = []
        for port in sorted(os.listdir(ports_dir), key=lambda p: (len(p), p)) if os.path.isdir(ports_dir) else []:
            state = read(os.path.join(ports_dir, port, "state"))  # e.g. "4: ACTIVE"
            ports.append({"port": port, "state": state.split(":", 1)[-1].strip(),
                          "link_layer": read(os.path.join(ports_dir, port, "link_layer"))})
        hcas.append({"name": hca, "ports": ports})
    devices = sorted(os.listdir(dev_dir)) if os.path.isdir(dev_dir) else []
    active = ["%s:%s" % (h["name"], p["port"]) for h in hcas for p in h["ports"] if p["state"] == "ACTIVE"]
    return {"hcas": hcas, "active_ports": active, "devices": devices,
            "usable": bool(active) and any(d.startswith("uverbs") for d in devices)}


out["infiniband"] = infiniband(sys.argv[4] if len(sys.argv) > 4 else "/")
print(json.dumps(out))
