"""`render --target kubernetes`: the manifests mean what the Ansible bundle means (no cluster, no tools).

Schema validation, kustomize builds and golden files: tests/integration/test_kubernetes_manifests.py.
"""

from __future__ import annotations

import pytest
import yaml

from tests.unit.test_render import CASES, HOSTS, _site
from toolkit.errors import ConfigError, RenderError
from toolkit.plan.model import Plan
from toolkit.render import bundle, kubernetes, kubernetes_objects, monitoring
from toolkit.render.site import load_site

DIGESTS = {"vllm": "sha256:" + "1" * 64, "gateway": "sha256:" + "2" * 64}


def multinode_plan() -> Plan:
    """A replica of two 8-GPU hosts (TP 8 inside a host, PP 2 across), two replicas."""
    data = CASES["gpu-tp4-llama70b-h100"]().model_dump(mode="json")
    data["name"] = "llama-70b-2host"
    data["hardware"].update(tensor_parallel_size=8, pipeline_parallel_size=2, gpus_per_replica=16,
                            hosts_per_replica=2, replicas=2)
    data["vllm"].update(tensor_parallel_size=8, pipeline_parallel_size=2)
    return Plan.from_dict(data)


PLANS = {"single": lambda: CASES["gpu-tp1-llama8b-l40s"](), "tp4": lambda: CASES["gpu-tp4-llama70b-h100"](),
         "cpu": lambda: CASES["cpu-tiny"](), "multi": multinode_plan}


@pytest.fixture
def site(tmp_path):
    return load_site(_site(tmp_path, HOSTS["gpu-tp1-llama8b-l40s"]))


def _objects(files: dict[str, str]) -> list[dict]:
    return [d for rel, text in sorted(files.items()) if rel.startswith("k8s/base/") and rel.endswith(".yaml")
            and not rel.endswith("kustomization.yaml") for d in yaml.safe_load_all(text) if d]


def _render(plan, site):
    files, dv = kubernetes.contents(plan, site, digests=DIGESTS)
    return files, dv, _objects(files)


def _one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def _server_pods(objs) -> list[dict]:
    w = next(o for o in objs if o["kind"] in ("Deployment", "LeaderWorkerSet")
             and o["metadata"]["labels"]["app.kubernetes.io/component"] == "server")
    if w["kind"] == "Deployment":
        return [w["spec"]["template"]]
    t = w["spec"]["leaderWorkerTemplate"]
    return [t["leaderTemplate"], t["workerTemplate"]]


# ---------------------------------------------------------------- the same server spec

@pytest.mark.parametrize("case", sorted(PLANS))
def test_server_container_is_the_server_spec(case, site):
    """Image, argv, env (forced offline switches included) are the ServerSpec's that the Ansible path runs;
    a multi-host replica adds only vLLM's multi-node flags."""
    plan = PLANS[case]()
    files, dv, objs = _render(plan, site)
    spec = dv.selfhost_server
    assert spec.env["HF_HUB_OFFLINE"] == "1" and spec.env["VLLM_NO_USAGE_STATS"] == "1"
    pods = _server_pods(objs)
    for pod in pods:
        (c,) = pod["spec"]["containers"]
        assert c["image"] == spec.image == f"{bundle.image_refs(plan, site)['vllm']}@{DIGESTS['vllm']}"
        assert {e["name"]: e["value"] for e in c["env"]} == spec.env
        assert pod["spec"]["enableServiceLinks"] is False  # nothing injected into the environment
        role = pod["metadata"]["labels"].get("org.selfhost.role")
        extra = kubernetes_objects.multinode_args(worker=role == "worker") if role else []
        assert c["args"] == spec.argv + extra
    if case == "multi":
        leader, worker = (p["spec"]["containers"][0]["args"] for p in pods)
        assert "--headless" in worker and "--headless" not in leader
        for flag, var in (("--nnodes", "LWS_GROUP_SIZE"), ("--node-rank", "LWS_WORKER_INDEX"),
                          ("--master-addr", "LWS_LEADER_ADDRESS"), ("--distributed-executor-backend", None)):
            value = leader[leader.index(flag) + 1]
            assert value == (f"$({var})" if var else "mp")
    # The same decisions as the bundle that `selfhost deploy` would build (build_vars).
    ansible = bundle.build_vars(plan, site, weights=kubernetes.Path("/w"), images={
        k: kubernetes.ImageArtifact(ref=v) for k, v in kubernetes.pinned_images(plan, site, DIGESTS).items()},
        image_gib=0.0, tls=dv.selfhost_tls, weights_id="x").selfhost_server
    assert (ansible.image, ansible.argv, ansible.env, ansible.labels) == (spec.image, spec.argv, spec.env, spec.labels)


@pytest.mark.parametrize("case,kind,size,gpus", [("single", "Deployment", 1, 1), ("tp4", "Deployment", 1, 4),
                                                 ("cpu", "Deployment", 1, 0), ("multi", "LeaderWorkerSet", 2, 8)])
def test_workload_shape_gpus_shm_and_probes(case, kind, size, gpus, site):
    plan = PLANS[case]()
    files, dv, objs = _render(plan, site)
    w = _one(objs, kind, f"{plan.name}-vllm")
    assert w["spec"]["replicas"] == plan.hardware.replicas
    if kind == "LeaderWorkerSet":
        assert w["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
        assert w["spec"]["leaderWorkerTemplate"]["size"] == plan.hardware.hosts_per_replica == size
    for pod in _server_pods(objs):
        c = pod["spec"]["containers"][0]
        limits = c["resources"].get("limits", {})
        assert limits == ({"nvidia.com/gpu": str(gpus)} if gpus else {})
        if not kubernetes_objects.multi_host(plan) and gpus:
            assert [d.count for d in dv.selfhost_server.device_requests] == [gpus]  # = Docker's GPU request
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert vols["dshm"]["emptyDir"] == {"medium": "Memory",
                                            "sizeLimit": kubernetes_objects.quantity(dv.selfhost_vllm_shm_size)}
        assert vols["weights"]["persistentVolumeClaim"] == {"claimName": f"{plan.name}-weights", "readOnly": True}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["weights"] == {"name": "weights", "mountPath": dv.selfhost_vllm_model_mount, "readOnly": True}
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    leader = _server_pods(objs)[0]["spec"]["containers"][0]
    start = leader["startupProbe"]
    budget = start["periodSeconds"] * start["failureThreshold"]
    assert plan.runtime.load_time_s <= budget < plan.runtime.load_time_s + start["periodSeconds"]
    assert start["httpGet"]["path"] == "/health"
    pvc = _one(objs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_shm_sizes_follow_the_server_spec(site):
    assert kubernetes_objects.shm_size(_render(PLANS["single"](), site)[1]) == "4Gi"
    # host IPC on Docker: the decided size
    assert kubernetes_objects.shm_size(_render(PLANS["tp4"](), site)[1]) == "16Gi"
    assert kubernetes_objects.shm_size(_render(PLANS["cpu"](), site)[1]) == "2Gi"
    assert kubernetes_objects.quantity("512m") == "512Mi"


def test_amd_gpus_request_amd_resource():
    plan = PLANS["single"]()
    amd = plan.model_copy(update={"hardware": plan.hardware.model_copy(update={"gpu": "MI300X"})})
    assert kubernetes_objects.gpu_resource(amd) == "amd.com/gpu"
    assert kubernetes_objects.gpu_resource(plan) == "nvidia.com/gpu"


# ---------------------------------------------------------------- network policy semantics

def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are emitted"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _pod_labels(plan, objs, group: int, worker: int) -> dict:
    """Labels a server pod carries at run time (the LWS controller adds its own)."""
    pod = _server_pods(objs)[0 if worker == 0 else -1]
    labels = dict(pod["metadata"]["labels"])
    if kubernetes_objects.multi_host(plan):
        lws = kubernetes_objects.LWS
        labels |= {f"{lws}/name": f"{plan.name}-vllm", f"{lws}/group-index": str(group),
                   f"{lws}/worker-index": str(worker)}
    return labels


@pytest.mark.parametrize("case", ["single", "multi"])
def test_network_policy_denies_all_egress_but_the_groups(case, site):
    plan = PLANS[case]()
    _, dv, objs = _render(plan, site)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    for o in policies:
        for rule in o["spec"].get("egress", []) + o["spec"].get("ingress", []):
            for peer in rule.get("to", []) + rule.get("from", []):
                assert "ipBlock" not in peer, o["metadata"]["name"]  # no 0.0.0.0/0, no CIDR at all
    gateway_labels = _one(objs, "Deployment", f"{plan.name}-gateway")["spec"]["template"]["metadata"]["labels"]
    groups = range(plan.hardware.replicas)
    for g in groups:
        for w in range(plan.hardware.hosts_per_replica):
            me = _pod_labels(plan, objs, g, w)
            mine = [p for p in policies if _matches(p["spec"]["podSelector"], me)]
            assert any("Egress" in p["spec"]["policyTypes"] for p in mine), "no egress policy selects the pod"
            assert any("Ingress" in p["spec"]["policyTypes"] for p in mine)
            egress_peers = [peer for p in mine if "Egress" in p["spec"]["policyTypes"]
                            for rule in p["spec"].get("egress", []) for peer in rule.get("to") or [None]]
            assert None not in egress_peers, "a rule without `to` allows every destination"
            for peer in egress_peers:
                if peer == kubernetes_objects.DNS_PEER:
                    assert kubernetes_objects.multi_host(plan), "a one-host replica needs no DNS"
                    continue
                assert set(peer) == {"podSelector"}, peer  # same namespace, pods only
                # Every pod this peer selects is in my group: it names my group's index.
                assert peer["podSelector"]["matchLabels"] == kubernetes_objects.group_selector(
                    kubernetes_objects.Names(dv), g)
            if not kubernetes_objects.multi_host(plan):
                assert egress_peers == []
            else:
                others = [_pod_labels(plan, objs, h, 0) for h in groups if h != g]
                assert not any(_matches(peer["podSelector"], o) for peer in egress_peers if "podSelector" in peer
                               for o in others)
                assert any(_matches(peer["podSelector"], _pod_labels(plan, objs, g, 1 - w))
                           for peer in egress_peers if "podSelector" in peer)
            # In: the gateway (API port), the group's own pods, Prometheus (monitoring.yaml); nothing else.
            for p in mine:
                for rule in p["spec"].get("ingress", []):
                    assert rule.get("from"), "an ingress rule without `from` admits everyone"
                    for peer in rule["from"]:
                        ok = (_matches(peer.get("podSelector", {}), gateway_labels) and set(peer) == {"podSelector"}) \
                            or peer.get("podSelector", {}).get("matchLabels") == kubernetes_objects.group_selector(
                                kubernetes_objects.Names(dv), g) \
                            or peer.get("namespaceSelector") == {"matchLabels": {
                                "kubernetes.io/metadata.name": kubernetes_objects.MONITORING_NAMESPACE}}
                        assert ok, peer


def test_only_leaders_serve_and_the_service_selects_them(site):
    plan = PLANS["multi"]()
    _, dv, objs = _render(plan, site)
    svc = _one(objs, "Service", f"{plan.name}-server")
    assert svc["spec"]["selector"][f"{kubernetes_objects.LWS}/worker-index"] == "0"
    leader, worker = _server_pods(objs)
    assert "startupProbe" in leader["spec"]["containers"][0] and "startupProbe" not in worker["spec"]["containers"][0]


# ---------------------------------------------------------------- secrets, digests, gateway, monitoring

@pytest.mark.parametrize("case", sorted(PLANS))
def test_no_secret_is_written(case, site):
    files, dv, objs = _render(PLANS[case](), site)
    assert not [o for o in objs if o["kind"] == "Secret"]
    for rel, text in files.items():
        assert "BEGIN" not in text and "PRIVATE KEY" not in text, rel
    gw = _one(objs, "Deployment", f"{dv.selfhost_name}-gateway")
    sources = gw["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
    assert [s["secret"]["name"] for s in sources if "secret" in s] == [f"{dv.selfhost_name}-api-keys",
                                                                        f"{dv.selfhost_name}-gateway-tls"]


def test_images_need_a_digest(site, tmp_path):
    plan = PLANS["single"]()
    with pytest.raises(RenderError, match="digest") as err:
        kubernetes.contents(plan, site)
    assert "--image-digest" in err.value.fix
    with pytest.raises(ConfigError):
        kubernetes.parse_digests(["vllm=latest"])
    pinned = load_site(_site(tmp_path / "s2", HOSTS["cpu-tiny"],
                             f"selfhost_images_gateway_ref: nginx:1.27@{DIGESTS['gateway']}\n"))
    images = kubernetes.pinned_images(plan, pinned, {"vllm": DIGESTS["vllm"]})
    assert images == {"vllm": f"vllm/vllm-openai:v0.32.0@{DIGESTS['vllm']}", "gateway": f"nginx:1.27@{DIGESTS['gateway']}"}
    with pytest.raises(RenderError, match="disagrees"):
        kubernetes.pinned_images(plan, pinned, {"vllm": DIGESTS["vllm"], "gateway": DIGESTS["vllm"]})


def test_gateway_config_is_the_ansible_one(site):
    """nginx.conf comes from the same template and context; only the DNS server and the upstream differ."""
    plan = PLANS["single"]()
    files, dv, objs = _render(plan, site)
    ours = files[f"k8s/overlays/{plan.name}/nginx.conf"]
    ansible = bundle.Templates(site.templates_dir).render("gateway/nginx.conf.j2", bundle.template_context(plan, site, dv))
    diff = [(a, b) for a, b in zip(ansible.splitlines(), ours.splitlines()) if a != b]
    assert len(ansible.splitlines()) == len(ours.splitlines()) and len(diff) == 3, diff
    assert f"resolver {kubernetes_objects.KUBE_DNS} valid=10s ipv6=off;" in ours
    assert f"set $selfhost_upstream http://{plan.name}-server.{plan.name}.svc.cluster.local:8000;" in ours
    gw = _one(objs, "Deployment", f"{plan.name}-gateway")["spec"]["template"]["spec"]
    assert gw["securityContext"]["runAsNonRoot"] is True
    c = gw["containers"][0]
    assert c["args"] == dv.selfhost_gateway_argv and c["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("case", ["single", "multi"])
def test_monitoring_carries_the_same_alert_rules(case, site):
    plan = PLANS[case]()
    _, dv, objs = _render(plan, site)
    rule = _one(objs, "PrometheusRule")
    assert rule["spec"] == monitoring.alerts_file(plan)
    pm = _one(objs, "PodMonitor")
    job = monitoring.jobs(plan)["server"]
    job_label = kubernetes_objects.JOB_LABEL
    assert pm["spec"]["jobLabel"] == job_label and pm["spec"]["selector"]["matchLabels"][job_label] == job
    for pod in _server_pods(objs):
        assert pod["metadata"]["labels"][kubernetes_objects.JOB_LABEL] == job
    assert all(f'job="{job}"' in r["expr"] for r in rule["spec"]["groups"][0]["rules"]
               if "selfhost-" + plan.name + "-" not in r["expr"])


def test_names_must_be_dns_labels(site):
    plan = PLANS["single"]().model_copy(update={"name": "Llama_8B"})
    with pytest.raises(RenderError, match="Kubernetes"):
        kubernetes.contents(plan, site, digests=DIGESTS)
    with pytest.raises(ConfigError, match="namespace"):
        kubernetes.contents(PLANS["single"](), site, digests=DIGESTS, namespace="Bad_NS")


def test_render_writes_no_playbooks(site, tmp_path):
    b = kubernetes.render(PLANS["single"](), site, tmp_path / "k8s-out", digests=DIGESTS)
    assert not any(f.startswith("project/") for f in b.files) and "selfhost.lock.yml" in b.files
    assert not (site.path / bundle.LAST_BUNDLE).exists()  # day-2 commands keep using the Ansible bundle
