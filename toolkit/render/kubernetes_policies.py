"""The NetworkPolicies of one deployment: default deny for the server pods, each multi-host group talking
only to itself, the gateway's way in and out, and (with a router) the router's allow-list."""

from __future__ import annotations

from toolkit.plan.model import Plan
from toolkit.render.deploy_vars import DeployVars, EgressTarget
from toolkit.render.kubernetes_objects import (
    DNS_PEER, DNS_PORTS, Names, _policy, gateway_selector, group_selector, multi_host, server_selector)
from toolkit.render.kubernetes_router import router_network_policy, router_selector

def network_policies(plan: Plan, dv: DeployVars, n: Names,
                     egress: list[tuple[EgressTarget, list[str]]] | None = None) -> list[dict]:
    """Default deny for the server pods, in and out. In: the gateway pods (and the router's), on the API port. Out: nothing for a
    one-host replica; for a group, its own pods (any port: torch.distributed, NCCL) and DNS (the leader's
    address is a name). Policies add up, so one per group keeps group 0 from reaching group 1; a group added
    by scaling the set by hand has no such policy and can reach nothing (fail closed)."""
    server = {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "server"}
    gw = gateway_selector(n)
    api = [{"port": dv.selfhost_vllm_port, "protocol": "TCP"}]
    clients = [{"podSelector": {"matchLabels": dict(gw)}}]  # who may call the server's API
    if dv.selfhost_router is not None:
        clients.append({"podSelector": {"matchLabels": router_selector(n)}})
    out = [_policy(f"{n.name}-server-default-deny", n, server, ["Ingress", "Egress"],
                   ingress=[{"from": clients, "ports": list(api)}],
                   egress=[{"to": [dict(DNS_PEER)], "ports": list(DNS_PORTS)}] if multi_host(plan) else [])]
    if multi_host(plan):
        for g in range(plan.hardware.replicas):
            def peers(group: int = g) -> list[dict]:  # fresh objects: yaml would write an anchor for shared ones
                return [{"podSelector": {"matchLabels": group_selector(n, group)}}]
            out.append(_policy(f"{n.name}-group-{g}", n, group_selector(n, g), ["Ingress", "Egress"],
                               ingress=[{"from": peers()}], egress=[{"to": peers()}]))
    to_router = []
    if dv.selfhost_router is not None:
        to_router = [{"to": [{"podSelector": {"matchLabels": router_selector(n)}}],
                      "ports": [{"port": dv.selfhost_router.port, "protocol": "TCP"}]}]
    out.append(_policy(f"{n.name}-gateway", n, gw, ["Ingress", "Egress"],
                       ingress=[{"ports": [{"port": 443, "protocol": "TCP"}]}],  # clients, from anywhere
                       egress=[{"to": [{"podSelector": {"matchLabels": server_selector(plan, n)}}], "ports": list(api)},
                               *to_router,
                               {"to": [dict(DNS_PEER)], "ports": list(DNS_PORTS)}]))
    if dv.selfhost_router is not None:
        out.append(router_network_policy(plan, dv, n, egress or []))
    return out
