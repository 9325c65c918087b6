"""Plan + site → plain Kubernetes manifests the team owns (`selfhost render --target kubernetes`).

    OUT/k8s/base/                    one deployment's objects, serialized from data (no templates):
        vllm.yaml                    Deployment (replica on one host) or LeaderWorkerSet (replica spans hosts)
        vllm-service.yaml            ClusterIP Service in front of the replicas (rank 0 of each group)
        weights-pvc.yaml             ReadOnlyMany claim holding the model folder, mounted read-only
        gateway.yaml                 TLS gateway: nginx Deployment (the same nginx.conf as the Ansible bundle)
        gateway-service.yaml         the only listener for clients
        network-policies.yaml        default deny; the group's own traffic, DNS where needed, gateway → server
        monitoring.yaml              PodMonitor + PrometheusRule (the Ansible bundle's alert rules)
        router.yaml                  with SITE/router/policy.yaml: the hybrid router's Deployment, Service, PVCs
        kustomization.yaml
    OUT/k8s/overlays/<name>/         namespace, nginx.conf (names the Service in that namespace) as a ConfigMap;
                                     with a router, its deployed policy (names vLLM's Service) as a ConfigMap
    OUT/k8s/README.md                secrets to create, apply, what was and was not checked
    OUT/selfhost.lock.yml            what made these files

The server container is the Ansible path's `ServerSpec` (server.py), built by the same `build_vars`: same
image, argv, environment (forced offline switches included), health endpoint and timings, /dev/shm size.
Multi-host replicas add only vLLM's multi-node flags, fed by the LeaderWorkerSet's environment.
No secret is written: the API keys and the TLS key are Secrets the team creates from files it keeps
outside this folder (README.md says how); the manifests only name them. The router's secrets (closed API
key, gateway shared secret, HMAC site secret) likewise. The router's egress is an allow-list of the closed
API's addresses (ipBlock /32 or /128 and port): an IP in the policy's base_url, or a host name pinned to the
addresses given with `--router-address HOST=IP` (the pod's hostAliases; render does no DNS lookup).

This module reads the inputs and writes the files; the objects are built in kubernetes_objects.py (names,
labels, server, gateway, monitoring), kubernetes_policies.py (NetworkPolicies) and kubernetes_router.py.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import yaml

from toolkit import __version__
from toolkit.errors import ConfigError, RenderError
from toolkit.plan.model import Plan
from toolkit.render import bundle
from toolkit.render import router as router_deploy
from toolkit.render.deploy_vars import DeployVars, EgressTarget, ImageArtifact, TlsConfig
from toolkit.render.kubernetes_objects import (
    KEYS_FILE, KUBE_DNS, MONITORING_NAMESPACE, Names, gateway, gateway_service, gpu_resource, gpus_per_host,
    monitoring_objects, multi_host, server_service, service_host, weights_pvc, workload)
from toolkit.render.kubernetes_policies import network_policies
from toolkit.render.kubernetes_router import (
    ROUTER_POLICY_FILE, load_router, readme_files, readme_secrets, router_deployment, router_egress, router_pvcs,
    router_service)
from toolkit.render.site import Site
from toolkit.render.templates import Templates

K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # room for suffixes within 63 characters
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGES = ("vllm", "gateway", "router")  # the router's only when the site runs one
OFFLINE_NOTE = "the server has no egress: DNS only where a multi-host group needs it to find its leader"


# ---------------------------------------------------------------- inputs

def parse_digests(values: list[str] | None) -> dict[str, str]:
    """`--image-digest vllm=sha256:…` (repeatable) → {"vllm": "sha256:…"}."""
    result = {}
    for value in values or []:
        key, sep, digest = value.partition("=")
        if not sep or key not in IMAGES or not DIGEST_RE.match(digest):
            raise ConfigError(f"--image-digest {value!r}: expected NAME=sha256:<64 hex>, NAME one of "
                              + ", ".join(IMAGES))
        result[key] = digest
    return result


def parse_addresses(values: list[str] | None) -> dict[str, list[str]]:
    """`--router-address api.example.com=203.0.113.7[,203.0.113.8]` (repeatable) → {host: [address, …]}."""
    result: dict[str, list[str]] = {}
    for value in values or []:
        host, sep, addrs = value.partition("=")
        host = host.strip().lower().rstrip(".")
        try:
            ips = [str(ipaddress.ip_address(a.strip())) for a in addrs.split(",")] if sep and host else []
        except ValueError:
            ips = []
        if not ips:
            raise ConfigError(f"--router-address {value!r}: expected HOST=IP[,IP…] (e.g. api.example.com=203.0.113.7)")
        result[host] = sorted(set(result.get(host, []) + ips),
                              key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))
    return result


def pinned_images(plan: Plan, site: Site, digests: dict[str, str], *, router: bool = False) -> dict[str, str]:
    """Every image as `ref@sha256:…`. A site ref that already carries a digest is used as it is; otherwise
    `--image-digest` supplies it. An image with no digest is refused (a tag can move under a running cluster).
    The router's image only when the site runs one."""
    refs, result, missing = bundle.image_refs(plan, site), {}, []
    if router:
        refs["router"] = site.settings.selfhost_images_router_ref
    for key in refs:
        ref, given = refs[key], digests.get(key)
        if "@" in ref:
            digest = ref.partition("@")[2]
            if not DIGEST_RE.match(digest):
                raise RenderError(f"image {ref}: the digest after '@' is not sha256:<64 hex>")
            if given and given != digest:
                raise RenderError(f"image {ref}: --image-digest {key}={given} disagrees with the digest in the reference")
            result[key] = ref
        elif given:
            result[key] = f"{ref}@{given}"
        else:
            missing.append(f"{key} ({ref})")
    if missing:
        setting = {k: f"selfhost_images_{k}_ref" for k in IMAGES}
        raise RenderError(
            "Kubernetes manifests pin every image by digest; no digest is known for " + ", ".join(missing),
            fix="pass --image-digest " + " --image-digest ".join(f"{m.split()[0]}=sha256:<digest>" for m in missing)
                + " (`docker buildx imagetools inspect REF` or `crane digest REF` prints it), or set "
                + " / ".join(setting[m.split()[0]] for m in missing)
                + f" to REF@sha256:<digest> in {site.path}/group_vars/inference.yml")
    return result


def deploy_vars(plan: Plan, site: Site, images: dict[str, str],
                site_router: router_deploy.SiteRouter | None = None) -> DeployVars:
    """The Ansible path's decisions (`bundle.build_vars`) for these pinned images. Host paths in it (weights
    folder, TLS files, the router's host folder) do not apply here: the weights are a volume, the TLS key and
    the router's secrets Secrets, its audit log a volume."""
    return bundle.build_vars(plan, site, weights=Path("/nonexistent/weights-come-from-the-pvc"),
                             images={k: ImageArtifact(ref=v) for k, v in images.items()}, image_gib=0.0,
                             tls=TlsConfig(mode="site", ca_cert="(Kubernetes Secret)"), weights_id="pvc",
                             router=site_router)


def nginx_conf(plan: Plan, site: Site, dv: DeployVars, n: Names, namespace: str) -> str:
    """The Ansible bundle's gateway/nginx.conf (same template, site overrides included), pointed at kube-dns
    and at the server's (and router's) Service instead of Docker's DNS and the container names. The router's
    location is the Ansible one (trust headers set by nginx, the shared-secret include), only its upstream differs."""
    ctx = bundle.template_context(plan, site, dv)
    routes = [{**route, "upstream": f"{service_host(n.router, namespace)}:{dv.selfhost_router.port}"}
              for route in bundle.router_routes(dv)]
    ctx["gateway"] = {"resolver": KUBE_DNS, "resolver_note": "The cluster's DNS (kube-dns)", "listen": 443,
                      "upstream": f"{service_host(n.service, namespace)}:{dv.selfhost_vllm_port}",
                      "closed": bundle.closed_locations(dv), "routes": routes,
                      "caller_default": ctx["gateway"]["caller_default"]}
    return Templates(site.templates_dir).render("gateway/nginx.conf.j2", ctx)


# ---------------------------------------------------------------- files

def _yaml(*docs: dict) -> str:
    # Through JSON first: objects shared between places become copies (yaml would write &id001 anchors).
    return "---\n".join(yaml.safe_dump(json.loads(json.dumps(d)), sort_keys=False, default_flow_style=False,
                                       width=120, allow_unicode=True) for d in docs)


def contents(plan: Plan, site: Site, *, digests: dict[str, str] | None = None,
             namespace: str | None = None,
             router_addresses: dict[str, list[str]] | None = None) -> tuple[dict[str, str], DeployVars]:
    """Relative path → text of every file (pure: nothing is written, nothing outside is touched, no DNS).
    router_addresses (`parse_addresses`): the closed API's host name → the addresses the router may reach."""
    plan.require_license_ok("render")
    if plan.adapters:  # the Deployment mounts only the weights and cache volumes: vLLM would not find them
        raise RenderError("LoRA adapters are shipped by the Ansible bundle only; --target kubernetes does not mount them yet",
                          fix="render without --target kubernetes, or merge the adapter into the weights")
    if not K8S_NAME_RE.match(plan.name):
        raise RenderError(f"plan name '{plan.name}' cannot name Kubernetes objects",
                          fix="use lower-case letters, digits and '-' (at most 40, e.g. llama-8b) in `name:` of plan.yml")
    ns = namespace or plan.name
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns):
        raise ConfigError(f"--namespace {ns!r}: not a Kubernetes namespace name (lower-case letters, digits, '-')")
    bundle._check_plan_strings(plan)
    site_router = load_router(plan, site, ns)  # the policy is checked before anything else about the router
    egress = []
    if site_router is not None:
        egress = router_egress(site_router, router_addresses or {}, str(router_deploy.policy_file(site.path)))
    elif router_addresses:
        raise ConfigError("--router-address: the site has no router (no router/policy.yaml)")
    images = pinned_images(plan, site, digests or {}, router=site_router is not None)
    dv = deploy_vars(plan, site, images, site_router)
    n = Names(dv)
    base = {
        "vllm.yaml": _yaml(workload(plan, dv, n)),
        "vllm-service.yaml": _yaml(server_service(plan, dv, n)),
        "weights-pvc.yaml": _yaml(weights_pvc(plan, n)),
        "gateway.yaml": _yaml(gateway(dv, n, images["gateway"])),
        "gateway-service.yaml": _yaml(gateway_service(dv, n)),
        "network-policies.yaml": _yaml(*network_policies(plan, dv, n, egress)),
        "monitoring.yaml": _yaml(*monitoring_objects(plan, dv, n)),
    }
    if site_router is not None:
        base["router.yaml"] = _yaml(router_deployment(dv, n, images["router"], egress), router_service(dv, n),
                                    *router_pvcs(n))
    header = f"# {plan.name}: generated by `selfhost render --target kubernetes`; yours to own and edit.\n"
    files = {f"k8s/base/{k}": header + v for k, v in base.items()}
    files["k8s/base/kustomization.yaml"] = header + _yaml({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": sorted(base)})
    overlay = f"k8s/overlays/{plan.name}"
    files[f"{overlay}/namespace.yaml"] = header + _yaml({
        "apiVersion": "v1", "kind": "Namespace",
        # vLLM's image runs as root (no `restricted`); baseline still refuses hostIPC, hostNetwork, privileged.
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "baseline",
                                            "pod-security.kubernetes.io/warn": "restricted"}}})
    files[f"{overlay}/nginx.conf"] = nginx_conf(plan, site, dv, n, ns)
    generators = [{"name": n.gateway_config, "files": ["nginx.conf"]}]
    if site_router is not None:  # the deployed policy names vLLM's Service in this namespace
        files[f"{overlay}/{ROUTER_POLICY_FILE}"] = router_deploy.policy_text(site_router, header)
        generators.append({"name": n.router_policy, "files": [f"policy.yaml={ROUTER_POLICY_FILE}"]})
    files[f"{overlay}/kustomization.yaml"] = header + _yaml({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": ns,
        "resources": ["../../base", "namespace.yaml"],
        # Hash-suffixed names: a changed nginx.conf (router policy) rolls the gateway (router) pods.
        "configMapGenerator": generators,
    })
    files["k8s/README.md"] = readme(plan, dv, n, ns, images, site_router=site_router, egress=egress, site=site)
    files[bundle.LOCK] = _lock(plan, site, images, ns)
    return files, dv


def render(plan: Plan, site: Site, out: Path, *, digests: dict[str, str] | None = None,
           namespace: str | None = None, router_addresses: dict[str, list[str]] | None = None,
           force: bool = False) -> bundle.Bundle:
    """Write the manifests for `plan` on `site` to `out` (atomically, as the Ansible bundle; hand edits
    there are refused unless `force`). Nothing outside `out` is touched: no CA, no last-bundle marker."""
    files, dv = contents(plan, site, digests=digests, namespace=namespace, router_addresses=router_addresses)
    path = bundle._write_atomically(Path(out), files, force=force, project=False)
    written = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return bundle.Bundle(path=path, files=written, vars=dv)


def _lock(plan: Plan, site: Site, images: dict[str, str], namespace: str) -> str:
    t = Templates(site.templates_dir)
    name = "gateway/nginx.conf.j2"
    lock = {"toolkit_version": __version__, "target": "kubernetes", "plan_name": plan.name,
            "plan_digest": plan.digest(), "namespace": namespace, "images": images,
            "templates": {name: {"sha256": t.sha256(name), "source": "site" if t.is_overridden(name) else "packaged"}}}
    return "# What these manifests were made from; written last.\n" + _yaml(lock)


def readme(plan: Plan, dv: DeployVars, n: Names, ns: str, images: dict[str, str], *,
           site_router: router_deploy.SiteRouter | None = None, egress: list[tuple[EgressTarget, list[str]]] = (),
           site: Site | None = None) -> str:
    hw = plan.hardware
    if multi_host(plan):
        shape = (f"a LeaderWorkerSet `{n.workload}`: {hw.replicas} group(s) of {hw.hosts_per_replica} pods, one per "
                 f"host, {gpus_per_host(plan)} GPU(s) each (tensor parallel {hw.tensor_parallel_size} inside a pod, "
                 f"pipeline parallel {hw.pipeline_parallel_size} across pods; vLLM's multi-node mode, mp backend). "
                 f"Needs the LeaderWorkerSet controller (https://lws.sigs.k8s.io) installed in the cluster")
    else:
        shape = (f"a Deployment `{n.workload}` of {hw.replicas} replica(s)"
                 + (f", {gpus_per_host(plan)} GPU(s) each ({gpu_resource(plan)})" if gpus_per_host(plan) else ", on CPU"))
    o = f"overlays/{plan.name}"
    router_files = readme_files(dv, n, egress) if site_router else ""
    policy_note = (f"; the router's deployed policy as a ConfigMap (`{ROUTER_POLICY_FILE}`, serialized from "
                   "SITE/router/policy.yaml, naming vLLM's Service in this namespace)") if site_router else ""
    return f"""# {plan.name} on Kubernetes

Generated by `selfhost render --target kubernetes` from the same plan and the same server spec as the
Ansible bundle (image, arguments, environment with the forced offline switches, health check). Plain
manifests: yours to own, edit and keep in Git. Nothing here holds a secret.

**Schema-validated, not cluster-tested.** selfhost's test suite validates these manifests offline
(`kubernetes-validate --strict` for core kinds, the upstream CRD schemas for LeaderWorkerSet,
PodMonitor and PrometheusRule) and builds the overlay with `kubectl kustomize`; it has never applied
them to a running cluster.

## What is here

- `base/vllm.yaml`: {shape}.
- `base/vllm-service.yaml`: Service `{n.service}` in front of the replicas{' (each group’s leader)' if multi_host(plan) else ''}.
  It is the router: kube-proxy spreads connections over the ready endpoints (readiness = `/health`);
  the gateway opens one connection per request, so requests spread too. No cache-aware routing.
- `base/weights-pvc.yaml`: claim `{n.weights}` (ReadOnlyMany) mounted read-only at `{dv.selfhost_vllm_model_mount}`.
  Its root must be the model folder (the files of `{plan.model.id}`). Bind it to a volume you filled
  (NFS / CephFS / a pre-populated PV); set `storageClassName` or `volumeName` in an overlay patch.
- `base/gateway.yaml`, `base/gateway-service.yaml`: the TLS gateway (nginx, 2 replicas, non-root,
  read-only root filesystem) with the Ansible bundle's nginx.conf; Service `{n.gateway}` on port {dv.selfhost_gateway_port}
  is the only way in. It is ClusterIP: expose it with a LoadBalancer/NodePort patch or a TLS-passthrough ingress.
- `base/network-policies.yaml`: server pods accept only the gateway (port {dv.selfhost_vllm_port}) and send nothing
  ({OFFLINE_NOTE}){'; each group talks only to itself' if multi_host(plan) else ''}. Needs a CNI that enforces NetworkPolicy.
- `base/monitoring.yaml`: PodMonitor + PrometheusRule (the Ansible bundle's alert rules; the two fed by
  blackbox probes stay silent without a Probe) and a policy letting Prometheus pods in namespace
  `{MONITORING_NAMESPACE}` scrape port {dv.selfhost_vllm_port}. Needs the Prometheus operator; add the labels your
  Prometheus selects on. Delete the file from `base/kustomization.yaml` if you do not run it.
{router_files}- `{o}/`: namespace `{ns}` (Pod Security `baseline`), nginx.conf as a ConfigMap (it names the Service
  in this namespace){policy_note}.

Images, pinned by digest: {', '.join(f'`{ref}`' for ref in images.values())}.

## Secrets (create them before applying; the gateway does not start without them)

Keep {'these' if site_router else 'both'} files outside this folder (a re-render replaces it):

```sh
kubectl create namespace {ns}   # or apply the overlay first
# API keys: nginx map syntax, as on the hosts
KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
printf 'map_hash_bucket_size 128;\\nmap $http_authorization $selfhost_api_key_ok {{\\n    default 0;\\n    "Bearer %s" 1;\\n}}\\n' "$KEY" > ~/secure/{plan.name}-{KEYS_FILE}
kubectl -n {ns} create secret generic {n.api_keys} --from-file={KEYS_FILE}=$HOME/secure/{plan.name}-{KEYS_FILE}
# TLS certificate for the name clients use
kubectl -n {ns} create secret tls {n.tls} --cert=server.crt --key=server.key
```

Rotate keys without downtime: add the new `"Bearer …" 1;` line, update the Secret
(`kubectl create secret generic … --dry-run=client -o yaml | kubectl apply -f -`),
`kubectl -n {ns} rollout restart deployment/{n.gateway}` (one pod at a time), then remove the old line the same way.
{readme_secrets(dv, n, ns, site_router, site) if site_router else ''}
## Apply

```sh
kubectl kustomize {o}          # review
kubectl apply -k {o}
kubectl -n {ns} rollout status {'leaderworkerset' if multi_host(plan) else 'deployment'}/{n.workload}
```

The start-up probe allows {dv.selfhost_vllm_health_start_period_s} s (the plan's load-time estimate) before a
replica counts as failed.
"""
