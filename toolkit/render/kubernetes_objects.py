"""The Kubernetes objects of one deployment, serialized from data: object names and labels shared by every
manifest, the server workload (Deployment or LeaderWorkerSet), its Service and weights claim, the TLS
gateway, the selectors the network policies use, and monitoring. The hybrid router's objects are in
kubernetes_router.py; kubernetes.py turns them into files."""

from __future__ import annotations

import math
import re

from toolkit import catalog
from toolkit.errors import CatalogError, RenderError
from toolkit.plan.model import Plan
from toolkit.render import monitoring
from toolkit.render.deploy_vars import DeployVars

CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS = f"kube-dns.kube-system.svc.{CLUSTER_DOMAIN}"  # nginx resolves this name once, at start
MONITORING_NAMESPACE = "monitoring"  # where Prometheus runs (kube-prometheus-stack's default); patch in an overlay
NGINX_UID = 101  # the `nginx` user of the official nginx images (Debian and Alpine)
LWS = "leaderworkerset.sigs.k8s.io"  # labels the LeaderWorkerSet controller puts on its pods
LWS_API = "leaderworkerset.x-k8s.io/v1"
JOB_LABEL = "org.selfhost.job"  # pod label whose value PodMonitor makes the Prometheus `job` (the alert rules use it)
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}
KEYS_FILE = "api-keys.conf"
DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.{CLUSTER_DOMAIN}"


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


def _policy(name: str, n: Names, selector: dict, types: list[str], **rules) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, _labels(n, "network-policy")),
            "spec": {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": types, **rules}}


def group_selector(n: Names, group: int) -> dict[str, str]:
    """The pods of one LeaderWorkerSet group (the controller labels them with the set's name and group)."""
    return {f"{LWS}/name": n.workload, f"{LWS}/group-index": str(group)}


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
