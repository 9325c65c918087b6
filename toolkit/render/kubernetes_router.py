"""The hybrid router on Kubernetes (only with SITE/router/policy.yaml): its policy, the closed API's
addresses it may reach, its Deployment, Service, volumes and NetworkPolicy, and its README sections."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path

from toolkit.errors import ConfigError, RenderError
from toolkit.plan.model import Plan
from toolkit.render import router as router_deploy
from toolkit.render.deploy_vars import DeployVars, EgressTarget
from toolkit.render.kubernetes_objects import (
    DNS_PEER, DNS_PORTS, KEYS_FILE, Names, _labels, _meta, _policy, gateway_selector, server_selector, service_host)
from toolkit.render.site import Site

ROUTER_POLICY_FILE = "router-policy.yaml"  # overlay file; the ConfigMap key is policy.yaml
ROUTER_SECRET_FILES = ("gateway.secret", "site.secret")
ROUTER_SECRETS_SRC = "/run/selfhost/router-secrets"  # where the init container reads the projected Secrets
# The router reads its secrets only from owner-only files (router.policy.read_secret). A Secret volume's files
# are root-owned, or group-readable with fsGroup: the init container copies them (`install` follows the
# projected volume's links; the glob skips its ..data entries), 0600 and owned by the router's user, into a
# memory-backed emptyDir the router mounts read-only.
ROUTER_COPY_SECRETS = 'set -e; for f in "$1"/*; do install -m 0600 "$f" "$2/"; done'
ROUTER_START_S = 30  # the Docker health check's start_period for the router (roles/selfhost_router)
ROUTER_AUDIT_GIB = 5  # a decision line is a few hundred bytes: millions of requests before it fills
ROUTER_STATE_GIB = 1  # flagged-conversation keys (HMACs), bounded by conversations.max_entries


def load_router(plan: Plan, site: Site, namespace: str) -> router_deploy.SiteRouter | None:
    """The site's router policy, checked by the router's own schema, its local upstream vLLM's Service in
    `namespace`; None: the site runs no router. (selfhost_fleet is the Ansible path's balancer: here the
    Service spreads requests, and one router serves them all.)"""
    return router_deploy.load(site.path, name=plan.name, vllm_container=service_host(f"{plan.name}-server", namespace),
                              vllm_port=plan.vllm.port, served_model_name=plan.vllm.served_model_name)


def router_egress(site_router: router_deploy.SiteRouter, addresses: dict[str, list[str]],
                  where: str) -> list[tuple[EgressTarget, list[str]]]:
    """Each closed-API endpoint with the addresses the router may reach it at. An IP in base_url is its own
    address; a host name needs `--router-address` (render resolves nothing: what the allow-list holds is
    what you reviewed, and the manifests do not change with the resolver of the machine that rendered them)."""
    result, hosts = [], set()
    for target in site_router.egress:
        host = target.host.lower().rstrip(".")
        hosts.add(host)
        try:
            ips = [str(ipaddress.ip_address(host))]
        except ValueError:
            ips = addresses.get(host, [])
        if not ips:
            raise RenderError(
                f"{where}: remote.base_url names the host {target.host}; the router's NetworkPolicy allows "
                "addresses, not names, and render does no DNS lookup",
                fix=f"pass --router-address {target.host}=IP[,IP…] (`dig +short {target.host}` lists them; "
                    "they become the pod's hostAliases and the egress allow-list), or put an IP in base_url")
        result.append((target, ips))
    unused = sorted(set(addresses) - hosts)
    if unused:
        raise ConfigError(f"--router-address {', '.join(unused)}: not the host of the router policy's remote.base_url"
                          + (f" ({', '.join(sorted(hosts))})" if hosts else " (the policy has no remote)"))
    return result


def router_selector(n: Names) -> dict[str, str]:
    return {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "router"}


def router_deployment(dv: DeployVars, n: Names, image: str,
                      egress: list[tuple[EgressTarget, list[str]]]) -> dict:
    """The Ansible role's container as a pod: same image, argv, user, read-only root, /tmp, paths. One
    replica, replaced by stopping the old pod first: the audit log is one hash chain with one writer, on a
    ReadWriteOnce volume."""
    r = dv.selfhost_router
    health = {"httpGet": {"path": "/health", "port": "http"},  # no secret needed; says nothing about traffic
              "periodSeconds": dv.selfhost_health_interval_s, "timeoutSeconds": dv.selfhost_health_timeout_s}
    locked = {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
              "capabilities": {"drop": ["ALL"]}}
    secrets = [{"configMap": {"name": n.router_policy, "items": [{"key": "policy.yaml", "path": "policy.yaml"}]}},
               {"secret": {"name": n.router_secrets, "items": [{"key": f, "path": f} for f in ROUTER_SECRET_FILES]}}]
    if r.remote_key_source is not None:
        secrets.append({"secret": {"name": n.router_remote_key, "items": [{"key": "remote.key", "path": "remote.key"}]}})
    # The closed API's name resolves to the reviewed addresses only (the NetworkPolicy allows no other).
    aliases = [{"ip": ip, "hostnames": [t.host]} for t, ips in egress for ip in ips if ip != t.host]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(n.router, _labels(n, "router")),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": router_selector(n)},
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": {"labels": _labels(n, "router")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": r.uid, "runAsGroup": r.uid,
                                        "fsGroup": r.uid, "seccompProfile": {"type": "RuntimeDefault"}},
                    **({"hostAliases": aliases} if aliases else {}),
                    "initContainers": [{
                        "name": "secrets",
                        "image": image,
                        "command": ["/bin/sh", "-c", ROUTER_COPY_SECRETS, "copy-secrets", ROUTER_SECRETS_SRC, r.mount],
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
                        "volumeMounts": [{"name": "secrets", "mountPath": ROUTER_SECRETS_SRC, "readOnly": True},
                                         {"name": "etc", "mountPath": r.mount}],
                        "securityContext": dict(locked),
                    }],
                    "containers": [{
                        "name": "router",
                        "image": image,
                        "args": list(r.argv),  # Docker's command (the image's entrypoint is empty)
                        "ports": [{"name": "http", "containerPort": r.port, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                        "startupProbe": {**health, "failureThreshold": max(1, math.ceil(
                            ROUTER_START_S / dv.selfhost_health_interval_s))},
                        "readinessProbe": {**health, "failureThreshold": dv.selfhost_health_retries},
                        "livenessProbe": {**health, "failureThreshold": dv.selfhost_health_retries},
                        "volumeMounts": [
                            {"name": "etc", "mountPath": r.mount, "readOnly": True},
                            {"name": "state", "mountPath": r.state_mount},
                            {"name": "audit", "mountPath": str(Path(r.audit_mount).parent)},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                        "securityContext": dict(locked),
                    }],
                    "volumes": [
                        {"name": "secrets", "projected": {"defaultMode": 0o440, "sources": secrets}},
                        {"name": "etc", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "state", "persistentVolumeClaim": {"claimName": n.router_state}},
                        {"name": "audit", "persistentVolumeClaim": {"claimName": n.router_audit}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def router_service(dv: DeployVars, n: Names) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(n.router, _labels(n, "router")),
        "spec": {"type": "ClusterIP", "selector": router_selector(n),
                 "ports": [{"name": "http", "port": dv.selfhost_router.port, "targetPort": "http", "protocol": "TCP"}]},
    }


def router_pvcs(n: Names) -> list[dict]:
    """The audit log (append-only chain, `selfhost route audit`'s input) and the flagged-conversation store
    outlive the pod; a restart continues the chain."""
    return [{"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": _meta(name, _labels(n, "router")),
             "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                      "resources": {"requests": {"storage": f"{gib}Gi"}}}}
            for name, gib in ((n.router_audit, ROUTER_AUDIT_GIB), (n.router_state, ROUTER_STATE_GIB))]


def ip_block(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def router_network_policy(plan: Plan, dv: DeployVars, n: Names, egress: list[tuple[EgressTarget, list[str]]]) -> dict:
    """The router's allow-list at the network layer. In: the gateway pods. Out: vLLM's serving pods on the API
    port, the cluster DNS (vLLM's Service is a name; the closed API's name is a hostAlias), and each closed-API
    address (/32 or /128) on its port only. Nothing else: no 0.0.0.0/0, no other port."""
    rules = [{"to": [{"podSelector": {"matchLabels": server_selector(plan, n)}}],
              "ports": [{"port": dv.selfhost_vllm_port, "protocol": "TCP"}]},
             {"to": [dict(DNS_PEER)], "ports": list(DNS_PORTS)}]
    for target, ips in egress:
        rules.append({"to": [{"ipBlock": {"cidr": ip_block(ip)}} for ip in ips],
                      "ports": [{"port": target.port, "protocol": "TCP"}]})
    return _policy(f"{n.name}-router", n, router_selector(n), ["Ingress", "Egress"],
                   ingress=[{"from": [{"podSelector": {"matchLabels": gateway_selector(n)}}],
                             "ports": [{"port": dv.selfhost_router.port, "protocol": "TCP"}]}],
                   egress=rules)


def readme_files(dv: DeployVars, n: Names, egress: list[tuple[EgressTarget, list[str]]]) -> str:
    r = dv.selfhost_router
    allowed = "; ".join(f"{', '.join(ip_block(ip) for ip in ips)} port {t.port}"
                        + (f" (`{t.host}`, pinned in the pod's hostAliases)" if ips != [t.host] else "")
                        for t, ips in egress) or "none (the policy has no remote)"
    return f"""- `base/router.yaml`: the hybrid router (SITE/router/policy.yaml; router/README.md): Deployment `{n.router}`
  (1 replica, `Recreate`: the audit log is one hash chain with one writer), non-root (uid {r.uid}), read-only
  root filesystem, no capabilities, image pinned by digest; Service `{n.router}` on port {r.port}; PVCs
  `{n.router_audit}` (the append-only audit log, `{r.audit_mount}`) and `{n.router_state}` (flagged-conversation
  keys), both ReadWriteOnce, so a restart continues the chain. The gateway sends `/v1/` to it, replacing
  any client-sent `X-Selfhost-Caller` / `X-Selfhost-Gateway-Secret` (caller: `{r.caller_label}`,
  `selfhost_router_caller_label`); `/health` and `/metrics` still go to vLLM. An init container copies the
  Secrets owner-only (0600) into a memory volume: the router refuses group-readable secret files.
- Router egress (`base/network-policies.yaml`, policy `{n.name}-router`): vLLM's serving pods on port
  {dv.selfhost_vllm_port}, the cluster DNS (vLLM's Service is a name), and the closed API: {allowed}.
  Nothing else. render does no DNS lookup: a host name in `remote.base_url` needs
  `--router-address HOST=IP[,IP…]`; when the API's addresses change, render again with the new ones.
  vLLM's own egress is unchanged (nothing, or its group).
"""


def readme_secrets(dv: DeployVars, n: Names, ns: str, site_router: router_deploy.SiteRouter,
                   site: Site | None) -> str:
    from router.policy import Gateway  # the router's own schema names the header it checks

    header = Gateway.model_fields["secret_header"].default
    r, d = dv.selfhost_router, f"$HOME/secure/{n.name}-router"
    remote = ""
    if site_router.remote_key is not None:
        key = site_router.remote_key
        if site is not None and key.is_relative_to(site.path.absolute()):
            key = Path("SITE") / key.relative_to(site.path.absolute())
        remote = (f"# The closed API's key (the file the policy names; chmod 600)\n"
                  f"kubectl -n {ns} create secret generic {n.router_remote_key} --from-file=remote.key={key}\n")
    return f"""
### The router's Secrets

The gateway's shared secret (the router accepts `/v1/` requests only with it) and the site secret (the
key of the prompt HMACs in the audit log and of the flagged-conversation store) are generated once, as
`roles/selfhost_router` does on a host. Never replace `site.secret` of a running deployment: the audit
log's HMACs and the flagged conversations are keyed by it.

```sh
(umask 077; mkdir -p {d}
 python3 -c 'import secrets; print(secrets.token_hex(32))' > {d}/gateway.secret
 python3 -c 'import secrets; print(secrets.token_hex(32))' > {d}/site.secret
 printf 'proxy_set_header {header} "%s";\\n' "$(cat {d}/gateway.secret)" > {d}/{r.gateway_include})
kubectl -n {ns} create secret generic {n.router_secrets} --from-file={d}/gateway.secret --from-file={d}/site.secret
kubectl -n {ns} create secret generic {n.router_gateway} --from-file={d}/{r.gateway_include}
{remote}```

A changed Secret reaches the router at its next start: `kubectl -n {ns} rollout restart deployment/{n.router}`
(and `deployment/{n.gateway}` for a new gateway secret; requests in between get 401 from the router).

The router's `callers` policy sees each API key's caller label: in `{KEYS_FILE}` a key mapped to `1` carries
`{r.caller_label}` (`selfhost_router_caller_label`); map it to a quoted label instead (`"Bearer …" "research";`)
to give it its own. nginx sets the header; a client cannot.
"""
