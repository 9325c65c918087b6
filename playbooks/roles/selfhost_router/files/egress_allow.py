"""The router's egress allow-list at the network layer (run by selfhost_router; root).

    egress_allow.py CHAIN NETWORK ALLOW_JSON [BOOT_FILE]   ALLOW_JSON: [{"host": ..., "port": ...}, ...]
Resolves each allowed host (IPv4) here on the host, then makes iptables chain CHAIN hold exactly:
RETURN for tcp to each allowed address:port, DROP for everything else; and jumps to it from
DOCKER-USER (forwarded traffic) and INPUT (the host itself) for packets whose source is NETWORK's
subnet. So the router's egress network reaches the closed API and nothing else, whatever its code does.
Replies to those connections are not matched (their source is outside the subnet).
The router gets the resolved names in its /etc/hosts (etc_hosts): DNS forwarded from its namespace would
be dropped like any other destination (and would be a channel out).
BOOT_FILE (optional): the same rules in iptables-restore form, for the selfhost-egress boot unit
(roles/selfhost_vllm files/egress_restore.sh), which loads them before Docker starts the router again after
a reboot: the kernel forgets the chain, Docker brings the router back by its restart policy.
Prints {"changed": bool, "subnet": ..., "allowed": ["ip:port", ...], "etc_hosts": {name: ip}}; changes
nothing when all is in place.
"""
import json
import os
import socket
import subprocess
import sys

PARENTS = ("DOCKER-USER", "INPUT")


def chain_rules(chain, allowed):
    """CHAIN's rules as `iptables -S` prints them: RETURN to each allowed ip:port, then DROP."""
    return (["-A %s -d %s/32 -p tcp -m tcp --dport %s -j RETURN" % (chain, *a.split(":")) for a in allowed]
            + ["-A %s -j DROP" % chain])


def restore_text(chain, subnet, allowed):
    """The chain and its two jumps as an iptables-restore file (loaded with --noflush: only CHAIN is flushed;
    the boot script deletes copies of the `-I <parent> 1` jumps first, so a second load adds none)."""
    lines = ["# selfhost: the hybrid router's egress allow-list, restored at boot before Docker starts", "*filter",
             ":%s - [0:0]" % chain, *chain_rules(chain, allowed)]
    lines += ["-I %s 1 -s %s -j %s" % (parent, subnet, chain) for parent in PARENTS]
    return "\n".join(lines + ["COMMIT", ""])


def write_if_changed(path, text):
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        pass
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def ipt(*args, check=True):
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, check=check)


def main(chain, network, allow, boot_file=None):
    subnet = subprocess.run(["docker", "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                             network], capture_output=True, text=True, check=True).stdout.split()
    subnet = [s for s in subnet if ":" not in s]
    if len(subnet) != 1:
        sys.exit("network %s: expected one IPv4 subnet, found %s" % (network, subnet))
    subnet = subnet[0]
    allowed, etc_hosts = [], {}
    for target in allow:
        try:
            infos = socket.getaddrinfo(target["host"], int(target["port"]), socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror as e:
            sys.exit("no IPv4 address for the closed API host %s on this host (the router's egress network is "
                     "IPv4 only): %s" % (target["host"], e))
        ips = sorted({i[4][0] for i in infos})
        for ip in ips:
            allowed.append("%s:%d" % (ip, int(target["port"])))
        if target["host"] not in ips:  # a name: the container gets it in /etc/hosts, so it needs no DNS out
            etc_hosts[target["host"]] = ips[0]
    allowed = sorted(set(allowed))
    want = ["-N %s" % chain, *chain_rules(chain, allowed)]

    changed = False
    have = ipt("-S", chain, check=False)
    if have.returncode != 0:
        ipt("-N", chain)
        have_rules = ["-N %s" % chain]
    else:
        have_rules = have.stdout.strip().splitlines()
    if have_rules != want:
        ipt("-F", chain)
        for a in allowed:
            ip, port = a.split(":")
            ipt("-A", chain, "-d", ip + "/32", "-p", "tcp", "-m", "tcp", "--dport", port, "-j", "RETURN")
        ipt("-A", chain, "-j", "DROP")
        changed = True
    for parent in PARENTS:
        if ipt("-C", parent, "-s", subnet, "-j", chain, check=False).returncode != 0:
            ipt("-I", parent, "1", "-s", subnet, "-j", chain)
            changed = True
    if boot_file:
        changed = write_if_changed(boot_file, restore_text(chain, subnet, allowed)) or changed
    print(json.dumps({"changed": changed, "subnet": subnet, "allowed": allowed, "etc_hosts": etc_hosts}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
