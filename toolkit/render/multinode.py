"""Replicas that span hosts: vLLM's own multi-node mode (`--nnodes/--node-rank/--master-addr`, mp backend),
one container per host, host networking (a Docker bridge cannot span hosts).

Grouping: the site's inventory hosts, in inventory order, are cut into groups of the plan's
`hardware.hosts_per_replica` (hosts 1–2 form replica 1, hosts 3–4 replica 2, ...). The first host of a group is
rank 0: its server is the only one with an HTTP API, behind that host's gateway; the others run `--headless`.
Every decision is made here: each host's own ServerSpec and release record, its firewall rules (the
egress lock, enforced by iptables OUTPUT rules matched to the server's dedicated uid), written to the bundle's
inventory/host_vars/<host>.yml.
"""

from __future__ import annotations

import hashlib
import ipaddress

from toolkit.errors import RenderError
from toolkit.plan.vllm_args import vllm_cli
from toolkit.render.deploy_vars import DeployVars, Healthcheck, InfinibandVars, MultiNodeVars, NodeGroup, NodeMember, NodeVars, ServerSpec
from toolkit.render.deploy_vars import FleetVars
from toolkit.render.site import GROUP, Site
from toolkit.resources import data_dir

# vLLM's `serve` CLI on every rank (the documented multi-node path: `vllm serve --headless` on the non-zero
# ranks): the api_server module an image may use as entrypoint ignores --headless.
SERVE_COMMAND = vllm_cli("serve")
# The group guard (stdlib only) runs as every rank's PID 1 in front of vLLM, started with the image's python3
# like the vLLM CLI shim: nothing to ship or mount, and its source is part of the spec (and the release id).
GUARD_FILE = ("roles", "selfhost_vllm", "files", "group_guard.py")
UID_BASE, UID_SPAN = 61000, 4000  # dedicated server uids: below nobody (65534), above regular users
NODE_RANK_LABEL = "org.selfhost.node-rank"  # on each server: status and the ops commands tell rank 0 by it


def is_multinode(plan) -> bool:
    return plan.hardware.hosts_per_replica > 1


def groups(plan, site: Site) -> list[NodeGroup] | None:
    """The site's hosts cut into groups of hosts_per_replica (inventory order); None for a one-host replica.

    Refuses (RenderError, one line naming the numbers and the fix) a site with too few hosts, a host count that
    is not a multiple of the group size, a missing private interface or private address, and a fleet whose peer
    port collides with the server's or the master's port on the host network."""
    n, s = plan.hardware.hosts_per_replica, site.settings
    if n <= 1:
        return None
    hosts = site.hosts
    where = f"{site.path}/hosts.yml"
    if len(hosts) < n:
        raise RenderError(f"the plan needs {n} hosts per replica but {where} has {len(hosts)} in group {GROUP}",
                          fix=f"add {n - len(hosts)} host(s) with the same GPUs to {where}, or re-plan for fewer "
                              "GPUs per replica (selfhost plan ... --gpus)")
    if len(hosts) % n:
        raise RenderError(f"the plan needs groups of {n} hosts but {where} has {len(hosts)} (not a multiple of {n})",
                          fix=f"list a multiple of {n} hosts (inventory order forms the groups)")
    if s.selfhost_fleet:
        _check_fleet_ports(plan, site)
    if not s.selfhost_private_interface:
        raise RenderError(f"the plan spans {n} hosts per replica: selfhost_private_interface is not set",
                          fix=f"name the private network's interface (e.g. selfhost_private_interface: eth1) in "
                              f"{site.path}/group_vars/{GROUP}.yml")
    addresses = {h.name: _private_address(site, h) for h in hosts}
    return [NodeGroup(index=i // n + 1,
                      members=[NodeMember(name=h.name, address=addresses[h.name], rank=r)
                               for r, h in enumerate(hosts[i:i + n])])
            for i in range(0, len(hosts), n)]


def serving_hosts(node_groups: list[NodeGroup] | None) -> list[str] | None:
    """The hosts that serve the API: rank 0 of each group (the fleet's members); None for one-host replicas."""
    return [g.members[0].name for g in node_groups] if node_groups else None


def _check_fleet_ports(plan, site: Site) -> None:
    """A fleet's peer listener on the host network shares the host's ports with the server (loopback) and rank
    0's torch.distributed store: the same number would fail at start-up on every rank-0 host."""
    s = site.settings
    taken = {plan.vllm.port: "the plan's vLLM port", s.selfhost_multinode_master_port: "selfhost_multinode_master_port"}
    if s.selfhost_fleet_port in taken:
        raise RenderError(f"selfhost_fleet_port {s.selfhost_fleet_port} is also {taken[s.selfhost_fleet_port]}: "
                          "a multi-node replica's gateway shares the host network with its server",
                          fix=f"set selfhost_fleet_port to a free port in {site.path}/group_vars/{GROUP}.yml")


def _private_address(site: Site, host) -> str:
    s = site.settings
    address = ((s.selfhost_private_addresses or {}).get(host.name) or (s.selfhost_fleet_peers or {}).get(host.name)
               or host.address)
    try:
        return str(ipaddress.ip_address(str(address)))
    except ValueError:
        raise RenderError(f"{host.name}: no private IP address for multi-node (ansible_host is {address!r})",
                          fix=f"set selfhost_private_addresses: {{{host.name}: 10.0.0.x}} in "
                              f"{site.path}/group_vars/{GROUP}.yml") from None


def egress_uid(name: str) -> int:
    """A uid of its own per deployment name, stable across renders (the firewall rules match it)."""
    return UID_BASE + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % UID_SPAN


def egress_rules(chain: str, peers: list[str]) -> dict[str, list[list[str]]]:
    """The chain's rules per family, in `iptables -S` form: loopback, replies, the group's peers, reject."""
    def family(v6: bool) -> list[list[str]]:
        own = [p for p in peers if (ipaddress.ip_address(p).version == 6) == v6]
        reject = "icmp6-addr-unreachable" if v6 else "icmp-host-unreachable"  # connect() fails: no route
        return ([["-A", chain, "-o", "lo", "-j", "ACCEPT"],
                 ["-A", chain, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]]
                + [["-A", chain, "-d", f"{p}/{128 if v6 else 32}", "-j", "ACCEPT"] for p in own]
                + [["-A", chain, "-j", "REJECT", "--reject-with", reject]])
    return {"iptables": family(False), "ip6tables": family(True)}


def egress_restore(chain: str, uid: int, rules: dict[str, list[list[str]]]) -> dict[str, str]:
    """Family → the chain, its rules and the OUTPUT jump for `uid`, as an iptables-restore file (`--noflush`:
    the chain's declaration flushes it, every other chain stays). The boot unit loads it before Docker starts."""
    def text(family: list[list[str]]) -> str:
        return "\n".join(["# selfhost: the multi-node server's egress lock (restored at boot, before Docker)",
                          "*filter", f":{chain} - [0:0]", *(" ".join(r) for r in family),
                          f"-I OUTPUT 1 -m owner --uid-owner {uid} -j {chain}", "COMMIT", ""])
    return {fam: text(rules[fam]) for fam in rules}


def multinode_vars(dv: DeployVars, node_groups: list[NodeGroup], site: Site) -> MultiNodeVars:
    uid = egress_uid(dv.selfhost_name)
    s = site.settings
    return MultiNodeVars(groups=node_groups, interface=s.selfhost_private_interface,
                         master_port=s.selfhost_multinode_master_port, guard_port=s.selfhost_multinode_guard_port,
                         guard_timeout_s=s.selfhost_multinode_guard_timeout_s, egress_uid=uid,
                         egress_chain=f"SELFHOST-{uid}", infiniband=InfinibandVars(mode=s.selfhost_infiniband))


def guard_entrypoint(name: str, mn: MultiNodeVars, group: NodeGroup, member: NodeMember) -> list[str]:
    """The rank's entrypoint: the group guard, then vLLM's `serve` CLI (the spec's argv follows as Docker's
    command). The guard restarts the whole group when one rank restarts or stays unreachable (README)."""
    source = data_dir("playbooks").joinpath(*GUARD_FILE).read_text()
    return ["python3", "-c", source, "--name", f"{name}/{group.index}", "--rank", str(member.rank),
            "--addresses", ",".join(m.address for m in group.members), "--port", str(mn.guard_port),
            "--timeout", str(mn.guard_timeout_s), "--", *SERVE_COMMAND]


def rank_argv(base: list[str], *, nnodes: int, rank: int, master_addr: str, master_port: int) -> list[str]:
    """vLLM's multi-node flags after the plan's arguments; `--headless` on the non-zero ranks."""
    return [*base, "--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", master_addr,
            "--master-port", str(master_port), "--distributed-executor-backend", "mp",
            *(["--headless"] if rank else [])]


def node_spec(dv: DeployVars, mn: MultiNodeVars, group: NodeGroup, member: NodeMember) -> ServerSpec:
    """This host's server: the one-host spec on the host network, with its rank's flags, environment and uid."""
    base, master = dv.selfhost_server, group.members[0]
    argv = rank_argv(_loopback(base.argv), nnodes=len(group.members), rank=member.rank,
                     master_addr=master.address, master_port=mn.master_port)
    env = dict(sorted({**base.env,
                       # The private network, for every process of the node (torch.distributed, gloo, NCCL).
                       "VLLM_HOST_IP": member.address, "GLOO_SOCKET_IFNAME": mn.interface,
                       "NCCL_SOCKET_IFNAME": mn.interface,
                       # The dedicated uid has no home in the image: caches go to the writable compile cache.
                       "HOME": dv.selfhost_vllm_cache_mount, "USER": "selfhost",
                       # InfiniBand forced off: NCCL must not try RDMA even where it finds some.
                       **({"NCCL_IB_DISABLE": "1"} if mn.infiniband.mode == "off" else {})}.items()))
    health = base.healthcheck if member.rank == 0 else Healthcheck(
        # A headless rank serves no HTTP: it is healthy while rank 0's torch.distributed store answers.
        test=["CMD", "python3", "-c", "import socket; socket.create_connection("
              f"({master.address!r}, {mn.master_port}), 4).close()"],
        interval=base.healthcheck.interval, timeout=base.healthcheck.timeout, retries=base.healthcheck.retries,
        start_period=base.healthcheck.start_period)
    return base.model_copy(update={
        "argv": argv, "env": env, "network": "host", "healthcheck": health,
        "labels": {**base.labels, NODE_RANK_LABEL: str(member.rank)},
        "entrypoint": guard_entrypoint(dv.selfhost_name, mn, group, member),
        "user": f"{mn.egress_uid}:{mn.egress_uid}"})


def _loopback(argv: list[str]) -> list[str]:
    """On the host network the API server listens on loopback only: the gateway (host network too) fronts it."""
    out = list(argv)
    if "--host" in out:
        out[out.index("--host") + 1] = "127.0.0.1"
    return out


def nodes(dv: DeployVars, mn: MultiNodeVars, release_info) -> dict[str, dict]:
    """Inventory host → the vars its host_vars file holds: selfhost_server, selfhost_release, selfhost_node."""
    result = {}
    for group in mn.groups:
        for member in group.members:
            spec = node_spec(dv, mn, group, member)
            peers = [m.address for m in group.members if m.name != member.name]
            rules = egress_rules(mn.egress_chain, peers)
            node = NodeVars(group=group.index, rank=member.rank, address=member.address,
                            master_addr=group.members[0].address, members=[m.name for m in group.members],
                            peers=peers, egress_rules=rules, egress_chain=mn.egress_chain, egress_uid=mn.egress_uid,
                            egress_restore=egress_restore(mn.egress_chain, mn.egress_uid, rules))
            result[member.name] = {"selfhost_server": spec, "selfhost_node": node,
                                   "selfhost_release": release_info(dv, spec, node.model_dump(mode="json"))}
    return result


def with_nodes(dv: DeployVars, node_groups: list[NodeGroup] | None, site: Site, release_info) -> DeployVars:
    """dv plus the multi-node vars and each host's own spec (dv unchanged for one-host replicas)."""
    if not node_groups:
        return dv
    mn = multinode_vars(dv, node_groups, site)
    return dv.model_copy(update={"selfhost_multinode": mn, "selfhost_nodes": nodes(dv, mn, release_info)})


def preview(mn: MultiNodeVars | None, fleet: FleetVars | None = None) -> list[str]:
    """One line per group for render/deploy output: which hosts form it, rank 0 first; then the fleet's members."""
    if mn is None:
        return []
    lines = [f"replica {g.index}: " + ", ".join(f"{m.name} (rank {m.rank}, {m.address})" for m in g.members)
             + f"; master {g.members[0].address}:{mn.master_port}, only {g.members[0].name} behind its gateway"
             for g in mn.groups]
    if fleet is not None:
        lines.append(f"fleet: one endpoint over {len(fleet.members)} replica(s): every rank-0 gateway ("
                     + ", ".join(m.name for m in fleet.members) + f") balances over all of them (peers on port {fleet.port})")
    return lines
