"""Plan + site → plain Kubernetes manifests the team owns (`selfhost render --target kubernetes`).

    OUT/k8s/base/                    one deployment's objects, serialized from data (no templates):
        vllm.yaml                    Deployment (replica on one host) or LeaderWorkerSet (replica spans hosts)
        vllm-service.yaml            ClusterIP Service in front of the replicas (rank 0 of each group)
        weights-pvc.yaml             ReadOnlyMany claim holding the model folder, mounted read-only
        gateway.yaml                 TLS gateway: nginx Deployment (the same nginx.conf as the Ansible bundle)
        gateway-service.yaml         the only listener for clients
        network-policies.yaml        default deny; the group's own traffic, DNS where needed, gateway → server
        monitoring.yaml              PodMonitor + PrometheusRule (the Ansible bundle's alert rules)
        kustomization.yaml
    OUT/k8s/overlays/<name>/         namespace, nginx.conf (names the Service in that namespace) as a ConfigMap
    OUT/k8s/README.md                secrets to create, apply, what was and was not checked
    OUT/selfhost.lock.yml            what made these files

The server container is the Ansible path's `ServerSpec` (server.py), built by the same `build_vars`: same
image, argv, environment (forced offline switches included), health endpoint and timings, /dev/shm size.
Multi-host replicas add only vLLM's multi-node flags, fed by the LeaderWorkerSet's environment.
No secret is written: the API keys and the TLS key are Secrets the team creates from files it keeps
outside this folder (README.md says how); the manifests only name them.
"""

from __future__ import annotations

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
from toolkit.render.deploy_vars import DeployVars, ImageArtifact, TlsConfig
from toolkit.render.site import Site
from toolkit.render.templates import Templates

K8S_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")  # room for suffixes within 63 characters
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
IMAGES = ("vllm", "gateway")
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


# ---------------------------------------------------------------- inputs

def parse_digests(values: list[str] | None) -> dict[str, str]:
    """`--image-digest vllm=sha256:…` (repeatable) → {"vllm": "sha256:…"}."""
    result = {}
    for value in values or []:
        key, sep, digest = value.partition("=")
        if not sep or key not in IMAGES or not DIGEST_RE.match(digest):
            raise ConfigError(f"--image-digest {value!r}: expected vllm=sha256:<64 hex> or gateway=sha256:<64 hex>")
        result[key] = digest
    return result


def pinned_images(plan: Plan, site: Site, digests: dict[str, str]) -> dict[str, str]:
    """Every image as `ref@sha256:…`. A site ref that already carries a digest is used as it is; otherwise
    `--image-digest` supplies it. An image with no digest is refused (a tag can move under a running cluster)."""
    refs, result, missing = bundle.image_refs(plan, site), {}, []
    for key in IMAGES:
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
        setting = {"vllm": "selfhost_images_vllm_ref", "gateway": "selfhost_images_gateway_ref"}
        raise RenderError(
            "Kubernetes manifests pin every image by digest; no digest is known for " + ", ".join(missing),
            fix="pass --image-digest " + " --image-digest ".join(f"{m.split()[0]}=sha256:<digest>" for m in missing)
                + " (`docker buildx imagetools inspect REF` or `crane digest REF` prints it), or set "
                + " / ".join(setting[m.split()[0]] for m in missing)
                + f" to REF@sha256:<digest> in {site.path}/group_vars/inference.yml")
    return result


def deploy_vars(plan: Plan, site: Site, images: dict[str, str]) -> DeployVars:
    """The Ansible path's decisions (`bundle.build_vars`) for these pinned images. Host paths in it (weights
    folder, TLS files) do not apply here: the weights are a volume, the TLS key a Secret."""
    return bundle.build_vars(plan, site, weights=Path("/nonexistent/weights-come-from-the-pvc"),
                             images={k: ImageArtifact(ref=v) for k, v in images.items()}, image_gib=0.0,
                             tls=TlsConfig(mode="site", ca_cert="(Kubernetes Secret)"), weights_id="pvc")


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


def network_policies(plan: Plan, dv: DeployVars, n: Names) -> list[dict]:
    """Default deny for the server pods, in and out. In: the gateway pods, on the API port. Out: nothing for a
    one-host replica; for a group, its own pods (any port: torch.distributed, NCCL) and DNS (the leader's
    address is a name). Policies add up, so one per group keeps group 0 from reaching group 1; a group added
    by scaling the set by hand has no such policy and can reach nothing (fail closed)."""
    server = {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "server"}
    gw = {"app.kubernetes.io/instance": n.name, "app.kubernetes.io/component": "gateway"}
    api = [{"port": dv.selfhost_vllm_port, "protocol": "TCP"}]
    out = [_policy(f"{n.name}-server-default-deny", n, server, ["Ingress", "Egress"],
                   ingress=[{"from": [{"podSelector": {"matchLabels": dict(gw)}}], "ports": list(api)}],
                   egress=[{"to": [dict(DNS_PEER)], "ports": list(DNS_PORTS)}] if multi_host(plan) else [])]
    if multi_host(plan):
        for g in range(plan.hardware.replicas):
            def peers(group: int = g) -> list[dict]:  # fresh objects: yaml would write an anchor for shared ones
                return [{"podSelector": {"matchLabels": group_selector(n, group)}}]
            out.append(_policy(f"{n.name}-group-{g}", n, group_selector(n, g), ["Ingress", "Egress"],
                               ingress=[{"from": peers()}], egress=[{"to": peers()}]))
    out.append(_policy(f"{n.name}-gateway", n, gw, ["Ingress", "Egress"],
                       ingress=[{"ports": [{"port": 443, "protocol": "TCP"}]}],  # clients, from anywhere
                       egress=[{"to": [{"podSelector": {"matchLabels": server_selector(plan, n)}}], "ports": list(api)},
                               {"to": [dict(DNS_PEER)], "ports": list(DNS_PORTS)}]))
    return out


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
    and at the server's Service instead of Docker's DNS and the container name."""
    ctx = bundle.template_context(plan, site, dv)
    ctx["gateway"] = {"resolver": KUBE_DNS, "resolver_note": "The cluster's DNS (kube-dns)", "listen": 443,
                      "upstream": f"{n.service}.{namespace}.svc.{CLUSTER_DOMAIN}:{dv.selfhost_vllm_port}",
                      "closed": bundle.closed_locations(dv), "routes": []}  # no router on Kubernetes (yet)
    return Templates(site.templates_dir).render("gateway/nginx.conf.j2", ctx)


# ---------------------------------------------------------------- files

def _yaml(*docs: dict) -> str:
    # Through JSON first: objects shared between places become copies (yaml would write &id001 anchors).
    return "---\n".join(yaml.safe_dump(json.loads(json.dumps(d)), sort_keys=False, default_flow_style=False,
                                       width=120, allow_unicode=True) for d in docs)


def contents(plan: Plan, site: Site, *, digests: dict[str, str] | None = None,
             namespace: str | None = None) -> tuple[dict[str, str], DeployVars]:
    """Relative path → text of every file (pure: nothing is written, nothing outside is touched)."""
    plan.require_license_ok("render")
    if plan.adapters:  # the Deployment mounts only the weights and cache volumes: vLLM would not find them
        raise RenderError("LoRA adapters are shipped by the Ansible bundle only; --target kubernetes does not mount them yet",
                          fix="render without --target kubernetes, or merge the adapter into the weights")
    if router_deploy.policy_file(site.path).is_file():  # no router Deployment or egress allow-list here yet
        raise RenderError(f"{router_deploy.policy_file(site.path)}: the hybrid router is deployed by the Ansible "
                          "bundle only; --target kubernetes does not run it yet",
                          fix="render without --target kubernetes, or move router/policy.yaml out of the site")
    if not K8S_NAME_RE.match(plan.name):
        raise RenderError(f"plan name '{plan.name}' cannot name Kubernetes objects",
                          fix="use lower-case letters, digits and '-' (at most 40, e.g. llama-8b) in `name:` of plan.yml")
    ns = namespace or plan.name
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns):
        raise ConfigError(f"--namespace {ns!r}: not a Kubernetes namespace name (lower-case letters, digits, '-')")
    bundle._check_plan_strings(plan)
    images = pinned_images(plan, site, digests or {})
    dv = deploy_vars(plan, site, images)
    n = Names(dv)
    base = {
        "vllm.yaml": _yaml(workload(plan, dv, n)),
        "vllm-service.yaml": _yaml(server_service(plan, dv, n)),
        "weights-pvc.yaml": _yaml(weights_pvc(plan, n)),
        "gateway.yaml": _yaml(gateway(dv, n, images["gateway"])),
        "gateway-service.yaml": _yaml(gateway_service(dv, n)),
        "network-policies.yaml": _yaml(*network_policies(plan, dv, n)),
        "monitoring.yaml": _yaml(*monitoring_objects(plan, dv, n)),
    }
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
    files[f"{overlay}/kustomization.yaml"] = header + _yaml({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": ns,
        "resources": ["../../base", "namespace.yaml"],
        # Hash-suffixed name: a changed nginx.conf rolls the gateway pods.
        "configMapGenerator": [{"name": n.gateway_config, "files": ["nginx.conf"]}],
    })
    files["k8s/README.md"] = readme(plan, dv, n, ns, images)
    files[bundle.LOCK] = _lock(plan, site, images, ns)
    return files, dv


def render(plan: Plan, site: Site, out: Path, *, digests: dict[str, str] | None = None,
           namespace: str | None = None, force: bool = False) -> bundle.Bundle:
    """Write the manifests for `plan` on `site` to `out` (atomically, as the Ansible bundle; hand edits
    there are refused unless `force`). Nothing outside `out` is touched: no CA, no last-bundle marker."""
    files, dv = contents(plan, site, digests=digests, namespace=namespace)
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


def readme(plan: Plan, dv: DeployVars, n: Names, ns: str, images: dict[str, str]) -> str:
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
- `{o}/`: namespace `{ns}` (Pod Security `baseline`), nginx.conf as a ConfigMap (it names the Service
  in this namespace).

Images, pinned by digest: `{images['vllm']}`, `{images['gateway']}`.

## Secrets (create them before applying; the gateway does not start without them)

Keep both files outside this folder (a re-render replaces it):

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

## Apply

```sh
kubectl kustomize {o}          # review
kubectl apply -k {o}
kubectl -n {ns} rollout status {'leaderworkerset' if multi_host(plan) else 'deployment'}/{n.workload}
```

The start-up probe allows {dv.selfhost_vllm_health_start_period_s} s (the plan's load-time estimate) before a
replica counts as failed.
"""
