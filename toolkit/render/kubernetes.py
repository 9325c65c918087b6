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
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from pathlib import Path

import yaml

from toolkit import __version__, catalog
from toolkit.errors import CatalogError, ConfigError, RenderError
from toolkit.plan.model import Plan
from toolkit.render import bundle, monitoring
from toolkit.render import router as router_deploy
from toolkit.render.deploy_vars import DeployVars, EgressTarget, ImageArtifact, TlsConfig
from toolkit.render.site import Site
from toolkit.render.templates import Templates

K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # room for suffixes within 63 characters
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGES = ("vllm", "gateway", "router")  # the router's only when the site runs one
CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS = f"kube-dns.kube-system.svc.{CLUSTER_DOMAIN}"  # nginx resolves this name once, at start
MONITORING_NAMESPACE = "monitoring"  # where Prometheus runs (kube-prometheus-stack's default); patch in an overlay
NGINX_UID = 101  # the `nginx` user of the official nginx images (Debian and Alpine)
LWS = "leaderworkerset.sigs.k8s.io"  # labels the LeaderWorkerSet controller puts on its pods
LWS_API = "leaderworkerset.x-k8s.io/v1"
JOB_LABEL = "org.selfhost.job"  # pod label whose value PodMonitor makes the Prometheus `job` (the alert rules use it)
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
KEYS_FILE = "api-keys.conf"
OFFLINE_NOTE = "the server has no egress: DNS only where a multi-host group needs it to find its leader"
ROUTER_POLICY_FILE = "router-policy.yaml"  # overlay file; the ConfigMap key is policy.yaml
ROUTER_SECRET_FILES = ("gateway.secret", "site.secret")
ROUTER_SECRETS_SRC = "/run/selfhost/router-secrets"  # where the init container reads the projected Secrets
# The router reads its secrets only from owner-only files (router.policy.read_secret). A Secret volume's files
# are root-owned, or group-readable with fsGroup: the init container copies them (`install` follows the
# projected volume's links; the glob skips its ..data entries), 0600 and owned by the router's user, into a
# memory-backed emptyDir the router mounts read-only.
ROUTER_COPY_SECRETS = 'set -e; for f in "$1"/*; do install -m 0600 "$f" "$2/"; done'


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


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}"


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


# ---------------------------------------------------------------- the objects

class Names:
    """Object names of one deployment (the Docker container names where there is one)."""

    def __init__(self, dv: DeployVars):
        n = dv.selfhost_name
        self.name = n
        self.workload = dv.selfhost_vllm_container  # <name>-vllm; a LeaderWorkerSet's headless Service too
        self.service = f"{n}-server"
        self.gateway = dv.selfhost_gateway_container  # <name>-gateway (Deployment and Service)
        self.gateway_config = f"{n}-gateway-config"
        self.api_keys = f"{n}-api-keys"
        self.tls = f"{n}-gateway-tls"
        self.weights = f"{n}-weights"
        # The hybrid router (only with SITE/router/policy.yaml): the router's Deployment and Service, its policy
        # ConfigMap, the Secrets the team creates (router's secrets, the closed API's key, the gateway's
        # shared-secret include) and the volumes its audit log and flagged conversations survive restarts on.
        self.router = f"{n}-router"
        self.router_policy = f"{n}-router-policy"
        self.router_secrets = f"{n}-router-secrets"
        self.router_remote_key = f"{n}-router-remote-key"
        self.router_gateway = f"{n}-router-gateway"
        self.router_audit = f"{n}-router-audit"
        self.router_state = f"{n}-router-state"


def _labels(n: Names, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "selfhost", "app.kubernetes.io/instance": n.name,
            "app.kubernetes.io/component": component}


def _meta(name: str, labels: dict, **extra) -> dict:
    return {"name": name, "labels": dict(labels), **extra}


def gpus_per_host(plan: Plan) -> int:
    hw = plan.hardware
    return hw.gpus_per_replica // hw.hosts_per_replica if hw.device == "gpu" else 0


def gpu_resource(plan: Plan) -> str:
    """`nvidia.com/gpu` or `amd.com/gpu`, from the catalog's vendor of the plan's GPU (custom: NVIDIA)."""
    try:
        vendor = catalog.gpu(plan.hardware.gpu).vendor if plan.hardware.gpu not in (None, "custom") else "nvidia"
    except CatalogError:
        vendor = "nvidia"
    return GPU_RESOURCE.get(vendor, GPU_RESOURCE["nvidia"])


def quantity(docker_size: str) -> str:
    """Docker's size (`16g`, binary units) as a Kubernetes quantity (`16Gi`)."""
    m = re.fullmatch(r"([0-9]+)([kmg]?)b?", docker_size.strip().lower())
    if not m:
        raise RenderError(f"size {docker_size!r} is not a Docker size like 16g")
    return m.group(1) + {"": "", "k": "Ki", "m": "Mi", "g": "Gi"}[m.group(2)]


def shm_size(dv: DeployVars) -> str:
    """/dev/shm as a memory emptyDir: the spec's size; with the host IPC namespace (tensor parallel on Docker) the
    spec leaves the size to the host, and a pod gets the size the decision named (no hostIPC on Kubernetes)."""
    return quantity(dv.selfhost_server.shm_size or dv.selfhost_vllm_shm_size)


def multinode_args(*, worker: bool) -> list[str]:
    """vLLM's multi-node flags (since 0.11.1), one pod per host; the LeaderWorkerSet sets these variables in
    every container and Kubernetes expands `$(VAR)` in args."""
    args = ["--nnodes", "$(LWS_GROUP_SIZE)", "--node-rank", "$(LWS_WORKER_INDEX)",
            "--master-addr", "$(LWS_LEADER_ADDRESS)", "--distributed-executor-backend", "mp"]
    return args + (["--headless"] if worker else [])


def _probes(dv: DeployVars) -> dict:
    """The container health check as probes: same endpoint, interval, timeout and retries; the start-up
    budget is the plan's load-time estimate (`runtime.load_time_s`, the Docker start_period)."""
    get = {"path": "/health", "port": "http"}
    every = {"periodSeconds": dv.selfhost_health_interval_s, "timeoutSeconds": dv.selfhost_health_timeout_s}
    return {
        "startupProbe": {"httpGet": dict(get), **every,
                         "failureThreshold": max(1, math.ceil(dv.selfhost_vllm_health_start_period_s
                                                              / dv.selfhost_health_interval_s))},
        "readinessProbe": {"httpGet": dict(get), **every, "failureThreshold": dv.selfhost_health_retries},
        "livenessProbe": {"httpGet": dict(get), **every, "failureThreshold": dv.selfhost_health_retries},
    }


def _server_container(plan: Plan, dv: DeployVars, *, extra_args: list[str], probes: bool) -> dict:
    s = dv.selfhost_server
    weights, cache = s.mounts[0], s.mounts[1]
    resources: dict = {"requests": {"memory": f"{math.ceil(dv.selfhost_preflight_min_memory_gib)}Gi"}}
    if gpus_per_host(plan):
        resources["limits"] = {gpu_resource(plan): str(gpus_per_host(plan))}
    container = {
        "name": "vllm",
        "image": s.image,
        "args": [*s.argv, *extra_args],  # the image's entrypoint is the OpenAI API server, as on Docker
        "env": [{"name": k, "value": v} for k, v in s.env.items()],
        "ports": [{"name": "http", "containerPort": dv.selfhost_vllm_port, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [
            {"name": "weights", "mountPath": weights.target, "readOnly": True},
            {"name": "cache", "mountPath": cache.target},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        # vLLM's image runs as root and its JIT compilers write under $HOME and /tmp: the root filesystem stays
        # writable; no capability, no privilege escalation.
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                            "readOnlyRootFilesystem": False, "capabilities": {"drop": ["ALL"]}},
    }
    if probes:
        container.update(_probes(dv))
    return container


def _server_pod(plan: Plan, dv: DeployVars, n: Names, *, extra_args: list[str], probes: bool) -> dict:
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no injected *_SERVICE_HOST variables: the environment is the spec's
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 60,
        "containers": [_server_container(plan, dv, extra_args=extra_args, probes=probes)],
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": n.weights, "readOnly": True}},
            {"name": "cache", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(dv)}},
        ],
    }


def server_labels(plan: Plan, dv: DeployVars, n: Names) -> dict[str, str]:
    """Pod labels: selfhost's, the spec's container labels (`org.selfhost.name`, `org.selfhost.plan-digest`)
    and the Prometheus job name the alert rules select."""
    return {**_labels(n, "server"), **dv.selfhost_server.labels, JOB_LABEL: monitoring.jobs(plan)["server"]}


def multi_host(plan: Plan) -> bool:
    return plan.hardware.hosts_per_replica > 1


def server_selector(plan: Plan, n: Names) -> dict[str, str]:
    """The pods that serve HTTP: every Deployment pod; rank 0 (the leader) of each group."""
    sel = {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "server"}
    return {**sel, f"{LWS}/worker-index": "0"} if multi_host(plan) else sel


def workload(plan: Plan, dv: DeployVars, n: Names) -> dict:
    labels = server_labels(plan, dv, n)
    hw = plan.hardware
    if not multi_host(plan):
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(n.workload, _labels(n, "server")),
            "spec": {
                "replicas": hw.replicas,
                "selector": {"matchLabels": server_selector(plan, n)},
                # No spare GPUs assumed: a replica stops before its successor starts.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {"metadata": {"labels": labels},
                             "spec": _server_pod(plan, dv, n, extra_args=[], probes=True)},
            },
        }
    return {
        "apiVersion": LWS_API, "kind": "LeaderWorkerSet",
        "metadata": _meta(n.workload, _labels(n, "server")),
        "spec": {
            "replicas": hw.replicas,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": hw.hosts_per_replica,
                # A node that dies takes its group down and the group restarts together.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": {**labels, "org.selfhost.role": "leader"}},
                                   "spec": _server_pod(plan, dv, n, extra_args=multinode_args(worker=False),
                                                       probes=True)},
                # Headless ranks serve no HTTP: no probes; the leader's /health covers the group.
                "workerTemplate": {"metadata": {"labels": {**labels, "org.selfhost.role": "worker"}},
                                   "spec": _server_pod(plan, dv, n, extra_args=multinode_args(worker=True),
                                                       probes=False)},
            },
        },
    }


def server_service(plan: Plan, dv: DeployVars, n: Names) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(n.service, _labels(n, "server")),
        "spec": {"type": "ClusterIP", "selector": server_selector(plan, n),
                 "ports": [{"name": "http", "port": dv.selfhost_vllm_port, "targetPort": "http", "protocol": "TCP"}]},
    }


def weights_pvc(plan: Plan, n: Names) -> dict:
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": _meta(n.weights, _labels(n, "server")),
        "spec": {"accessModes": ["ReadOnlyMany"], "volumeMode": "Filesystem",
                 "resources": {"requests": {"storage": f"{math.ceil(plan.model.weights_gib) + 1}Gi"}}},
    }


def gateway_selector(n: Names) -> dict[str, str]:
    return {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "gateway"}


def gateway(dv: DeployVars, n: Names, gateway_image: str) -> dict:
    mount = dv.selfhost_gateway_mount
    labels = _labels(n, "gateway")
    health = {"httpGet": {"path": "/_gateway/health", "port": "https", "scheme": "HTTPS"},
              "periodSeconds": dv.selfhost_health_interval_s, "timeoutSeconds": dv.selfhost_health_timeout_s,
              "failureThreshold": dv.selfhost_health_retries}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(n.gateway, labels),
        "spec": {
            "replicas": 2,  # any gateway pod takes traffic; one may restart or move at a time
            "selector": {"matchLabels": {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "gateway"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": NGINX_UID, "runAsGroup": NGINX_UID, "fsGroup": NGINX_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                        # nginx listens on 443 as its own user, without CAP_NET_BIND_SERVICE (a safe sysctl).
                        "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                    },
                    "containers": [{
                        "name": "gateway",
                        "image": gateway_image,
                        "args": list(dv.selfhost_gateway_argv),  # Docker's command: nginx -c <mount>/nginx.conf
                        "ports": [{"name": "https", "containerPort": 443, "protocol": "TCP"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "readinessProbe": dict(health),
                        "livenessProbe": dict(health),
                        "volumeMounts": [
                            {"name": "gateway", "mountPath": mount, "readOnly": True},
                            {"name": "nginx-cache", "mountPath": "/var/cache/nginx"},
                            {"name": "run", "mountPath": "/run"},
                        ],
                        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                    }],
                    "volumes": [
                        # The host's gateway folder, rebuilt: nginx.conf, api-keys.conf and tls/server.{crt,key}.
                        {"name": "gateway", "projected": {"defaultMode": 0o440, "sources": [
                            {"configMap": {"name": n.gateway_config, "items": [{"key": "nginx.conf", "path": "nginx.conf"}]}},
                            {"secret": {"name": n.api_keys, "items": [{"key": KEYS_FILE, "path": KEYS_FILE}]}},
                            {"secret": {"name": n.tls, "items": [{"key": "tls.crt", "path": "tls/server.crt"},
                                                                 {"key": "tls.key", "path": "tls/server.key"}]}},
                            # With a router: the include setting the shared-secret header on /v1/ (router.conf).
                            *([{"secret": {"name": n.router_gateway, "items": [
                                {"key": dv.selfhost_router.gateway_include, "path": dv.selfhost_router.gateway_include}]}}]
                              if dv.selfhost_router else []),
                        ]}},
                        {"name": "nginx-cache", "emptyDir": {}},
                        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }


def gateway_service(dv: DeployVars, n: Names) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(n.gateway, _labels(n, "gateway")),
        "spec": {"type": "ClusterIP",
                 "selector": {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "gateway"},
                 "ports": [{"name": "https", "port": dv.selfhost_gateway_port, "targetPort": "https", "protocol": "TCP"}]},
    }


# ---------------------------------------------------------------- the hybrid router

ROUTER_START_S = 30  # the Docker health check's start_period for the router (roles/selfhost_router)
ROUTER_AUDIT_GIB = 5  # a decision line is a few hundred bytes: millions of requests before it fills
ROUTER_STATE_GIB = 1  # flagged-conversation keys (HMACs), bounded by conversations.max_entries


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


DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def _policy(name: str, n: Names, selector: dict, types: list[str], **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, _labels(n, "network-policy")),
            "spec": {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": types, **rules}}


def group_selector(n: Names, group: int) -> dict[str, str]:
    """The pods of one LeaderWorkerSet group (the controller labels them with the set's name and group)."""
    return {f"{LWS}/name": n.workload, f"{LWS}/group-index": str(group)}


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


def monitoring_objects(plan: Plan, dv: DeployVars, n: Names) -> list[dict]:
    """PodMonitor (each serving pod's /metrics, job named as in the Ansible scrape config) + PrometheusRule
    (the Ansible bundle's prometheus/alerts.yml groups) + the ingress Prometheus needs to scrape."""
    job = monitoring.jobs(plan)["server"]
    return [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
         "metadata": _meta(n.workload, _labels(n, "monitoring")),
         "spec": {"jobLabel": JOB_LABEL,
                  "selector": {"matchLabels": {**server_selector(plan, n), JOB_LABEL: job}},
                  "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": _meta(f"{n.name}-alerts", _labels(n, "monitoring")),
         "spec": monitoring.alerts_file(plan)},
        _policy(f"{n.name}-allow-prometheus", n, server_selector(plan, n), ["Ingress"],
                ingress=[{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}},
                                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                          "ports": [{"port": dv.selfhost_vllm_port, "protocol": "TCP"}]}]),
    ]


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
    router_files = _readme_router_files(dv, n, egress) if site_router else ""
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
{_readme_router_secrets(dv, n, ns, site_router, site) if site_router else ''}
## Apply

```sh
kubectl kustomize {o}          # review
kubectl apply -k {o}
kubectl -n {ns} rollout status {'leaderworkerset' if multi_host(plan) else 'deployment'}/{n.workload}
```

The start-up probe allows {dv.selfhost_vllm_health_start_period_s} s (the plan's load-time estimate) before a
replica counts as failed.
"""


def _readme_router_files(dv: DeployVars, n: Names, egress: list[tuple[EgressTarget, list[str]]]) -> str:
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


def _readme_router_secrets(dv: DeployVars, n: Names, ns: str, site_router: router_deploy.SiteRouter,
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
