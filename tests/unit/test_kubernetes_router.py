"""`render --target kubernetes` with a hybrid router (SITE/router/policy.yaml): the router's Deployment, the
gateway sending /v1/ to it, its secrets never in the bundle, and its egress allow-list at the network layer
(only vLLM's serving pods and the closed API's addresses:port; vLLM itself still reaches nothing new).

Schema validation and golden files: tests/integration/test_kubernetes_manifests.py (case single-host-router).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from router.policy import parse_policy
from tests.unit.test_kubernetes import DIGESTS, PLANS, _matches, _one, _pod_labels
from tests.unit.test_render import HOSTS, _site
from tests.unit.test_render_router import KEY, POLICY
from toolkit.errors import ConfigError, RenderError
from toolkit.render import kubernetes, kubernetes_objects, kubernetes_router
from toolkit.render.site import load_site

ROUTER_DIGESTS = {**DIGESTS, "router": "sha256:" + "3" * 64}
API_HOST = "api.example.net"  # POLICY's remote: https://api.example.net:8443/v1
API_PORT = 8443
ADDRESSES = {API_HOST: ["203.0.113.7", "2001:db8::7"]}


def router_site(tmp: Path, policy: dict = POLICY) -> Path:
    """The golden single-host site plus a router policy and the closed API's key (0600)."""
    site = _site(tmp, HOSTS["gpu-tp1-llama8b-l40s"])
    (site / "router").mkdir()
    (site / "router" / "policy.yaml").write_text(yaml.safe_dump(policy))
    key = site / "router" / "remote.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    return site


@pytest.fixture
def site(tmp_path):
    return load_site(router_site(tmp_path))


def _objects(files: dict[str, str]) -> list[dict]:
    return [d for rel, text in sorted(files.items()) if rel.startswith("k8s/base/") and rel.endswith(".yaml")
            and not rel.endswith("kustomization.yaml") for d in yaml.safe_load_all(text) if d]


def _render(site, plan=None, **kw):
    kw.setdefault("router_addresses", ADDRESSES)
    files, dv = kubernetes.contents(plan or PLANS["single"](), site, digests=ROUTER_DIGESTS, **kw)
    return files, dv, _objects(files)


def _router_pod(objs, name="llama-8b") -> dict:
    return _one(objs, "Deployment", f"{name}-router")["spec"]["template"]


def _egress_rules(policies: list[dict], labels: dict) -> list[dict]:
    mine = [p for p in policies if _matches(p["spec"]["podSelector"], labels)]
    assert any("Egress" in p["spec"]["policyTypes"] for p in mine), "no egress policy selects the pod"
    return [rule for p in mine if "Egress" in p["spec"]["policyTypes"] for rule in p["spec"].get("egress", [])]


# ---------------------------------------------------------------- egress: the allow-list at the network layer

@pytest.mark.parametrize("case", ["single", "multi"])
def test_router_egress_allows_only_the_api_address_port_and_vllm(case, site):
    """Every egress rule selecting the router pod names its peers and ports; together they allow vLLM's serving
    pods on the API port, the cluster DNS on 53, and exactly the closed API's /32 and /128 on its port."""
    plan = PLANS[case]()
    _, dv, objs = _render(site, plan)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    router_labels = _router_pod(objs, plan.name)["metadata"]["labels"]
    rules = _egress_rules(policies, router_labels)
    seen_ip, seen_vllm = set(), False
    for rule in rules:
        assert rule.get("to"), "an egress rule without `to` allows every destination"
        assert rule.get("ports"), "an egress rule without `ports` allows every port"
        ports = {(p["port"], p["protocol"]) for p in rule["ports"]}
        for peer in rule["to"]:
            if peer == kubernetes_objects.DNS_PEER:
                assert ports == {(53, "UDP"), (53, "TCP")}
            elif "ipBlock" in peer:
                assert set(peer) == {"ipBlock"} and set(peer["ipBlock"]) == {"cidr"}, peer  # no `except` games
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert net.num_addresses == 1, net  # one host, never a range (let alone 0.0.0.0/0)
                assert ports == {(API_PORT, "TCP")}
                seen_ip.add(str(net.network_address))
            else:
                assert set(peer) == {"podSelector"}, peer  # this namespace's pods only
                assert peer["podSelector"]["matchLabels"] == kubernetes_objects.server_selector(
                    plan, kubernetes_objects.Names(dv))
                assert ports == {(dv.selfhost_vllm_port, "TCP")}
                seen_vllm = True
    assert seen_ip == set(ADDRESSES[API_HOST]) and seen_vllm
    # What the selected peers are at run time: every vLLM pod that serves HTTP (rank 0), no other selfhost pod.
    vllm_peers = [peer["podSelector"] for rule in rules for peer in rule["to"] if set(peer) == {"podSelector"}]
    leader = _pod_labels(plan, objs, 0, 0)
    gateway = _one(objs, "Deployment", f"{plan.name}-gateway")["spec"]["template"]["metadata"]["labels"]
    assert all(_matches(sel, leader) and not _matches(sel, gateway) and not _matches(sel, router_labels)
               for sel in vllm_peers)
    if kubernetes_objects.multi_host(plan):  # headless ranks serve no HTTP: the router never needs them
        assert not any(_matches(sel, _pod_labels(plan, objs, 0, 1)) for sel in vllm_peers)
    # The closed API's name resolves only to the allowed addresses (no DNS answer can widen the list).
    aliases = _router_pod(objs, plan.name)["spec"]["hostAliases"]
    assert sorted((a["ip"], tuple(a["hostnames"])) for a in aliases) == sorted(
        (ip, (API_HOST,)) for ip in ADDRESSES[API_HOST])


@pytest.mark.parametrize("case", ["single", "multi"])
def test_vllm_still_reaches_nothing_but_its_group_and_only_gateway_and_router_reach_it(case, site):
    plan = PLANS[case]()
    _, dv, objs = _render(site, plan)
    n = kubernetes_objects.Names(dv)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    router_labels = _router_pod(objs, plan.name)["metadata"]["labels"]
    gateway_labels = _one(objs, "Deployment", f"{plan.name}-gateway")["spec"]["template"]["metadata"]["labels"]
    for g in range(plan.hardware.replicas):
        for w in range(plan.hardware.hosts_per_replica):
            me = _pod_labels(plan, objs, g, w)
            for rule in _egress_rules(policies, me):
                for peer in rule["to"]:
                    assert "ipBlock" not in peer
                    assert peer == kubernetes_objects.DNS_PEER or peer["podSelector"]["matchLabels"] == \
                        kubernetes_objects.group_selector(n, g)
                    assert not (set(peer) == {"podSelector"} and _matches(peer["podSelector"], router_labels))
            if not kubernetes_objects.multi_host(plan):
                assert _egress_rules(policies, me) == []
    deny = _one(objs, "NetworkPolicy", f"{plan.name}-server-default-deny")
    (rule,) = deny["spec"]["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in rule["from"]] == [kubernetes_objects.gateway_selector(n),
                                                                      kubernetes_router.router_selector(n)]
    assert _matches(rule["from"][0]["podSelector"], gateway_labels)
    assert _matches(rule["from"][1]["podSelector"], router_labels)
    # The router admits the gateway only; the gateway may reach the router's port.
    rp = _one(objs, "NetworkPolicy", f"{plan.name}-router")
    (ing,) = rp["spec"]["ingress"]
    assert ing["from"] == [{"podSelector": {"matchLabels": kubernetes_objects.gateway_selector(n)}}]
    assert ing["ports"] == [{"port": dv.selfhost_router.port, "protocol": "TCP"}]
    gw_rules = _egress_rules(policies, gateway_labels)
    assert any(r["to"] == [{"podSelector": {"matchLabels": kubernetes_router.router_selector(n)}}] for r in gw_rules)
    assert not any("ipBlock" in peer for r in gw_rules for peer in r["to"])


def test_an_ip_in_base_url_needs_no_address_and_no_alias(tmp_path):
    policy = {**POLICY, "remote": {**POLICY["remote"], "base_url": "https://198.51.100.9/v1"}}
    site = load_site(router_site(tmp_path, policy))
    _, _, objs = _render(site, router_addresses=None)
    assert "hostAliases" not in _router_pod(objs)["spec"]
    rules = _one(objs, "NetworkPolicy", "llama-8b-router")["spec"]["egress"]
    assert rules[-1] == {"to": [{"ipBlock": {"cidr": "198.51.100.9/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}


def test_no_remote_means_no_route_out(tmp_path):
    site = load_site(router_site(tmp_path, {"detect": {"code_names": ["Bluebird"]}}))
    _, _, objs = _render(site, router_addresses=None)
    rules = _one(objs, "NetworkPolicy", "llama-8b-router")["spec"]["egress"]
    assert not any("ipBlock" in peer for r in rules for peer in r["to"])
    pod = _router_pod(objs)["spec"]
    sources = pod["volumes"][0]["projected"]["sources"]
    assert not any(s.get("secret", {}).get("name") == "llama-8b-router-remote-key" for s in sources)


def test_a_host_name_without_addresses_is_refused_with_the_fix(site):
    with pytest.raises(RenderError, match="render does no DNS lookup") as e:
        _render(site, router_addresses=None)
    assert f"--router-address {API_HOST}=IP" in e.value.fix
    with pytest.raises(ConfigError, match="not the host"):
        _render(site, router_addresses={**ADDRESSES, "api.example.org": ["203.0.113.8"]})


def test_router_addresses_parse_and_need_a_router(tmp_path):
    assert kubernetes.parse_addresses(["API.example.net.=203.0.113.7, 2001:db8::7", "api.example.net=203.0.113.6"]) \
        == {API_HOST: ["203.0.113.6", "203.0.113.7", "2001:db8::7"]}
    for bad in ("api.example.net", "api.example.net=", "api.example.net=example.com", "=203.0.113.7"):
        with pytest.raises(ConfigError, match="--router-address"):
            kubernetes.parse_addresses([bad])
    plain = load_site(_site(tmp_path, HOSTS["gpu-tp1-llama8b-l40s"]))
    with pytest.raises(ConfigError, match="no router"):
        kubernetes.contents(PLANS["single"](), plain, digests=DIGESTS, router_addresses=ADDRESSES)


# ---------------------------------------------------------------- the router's pod, its secrets, the gateway

def test_router_pod_is_locked_down_pinned_and_keeps_its_audit_log(site):
    _, dv, objs = _render(site)
    r = dv.selfhost_router
    d = _one(objs, "Deployment", "llama-8b-router")
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}  # one chain, one writer
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == r.uid
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    (c,) = pod["containers"]
    (init,) = pod["initContainers"]
    for container in (c, init):
        assert container["image"] == f"selfhost/router:1@{ROUTER_DIGESTS['router']}"
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["memory"]
    assert c["args"] == r.argv
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[r.mount]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    audit_dir = str(Path(r.audit_mount).parent)
    assert vols[mounts[audit_dir]["name"]]["persistentVolumeClaim"] == {"claimName": "llama-8b-router-audit"}
    assert vols[mounts[r.state_mount]["name"]]["persistentVolumeClaim"] == {"claimName": "llama-8b-router-state"}
    assert vols[mounts[r.mount]["name"]]["emptyDir"]["medium"] == "Memory"  # the copied secrets never hit a disk
    pvcs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
    assert pvcs["llama-8b-router-audit"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    svc = _one(objs, "Service", "llama-8b-router")
    assert svc["spec"]["selector"] == kubernetes_router.router_selector(kubernetes_objects.Names(dv))


def test_no_router_secret_is_written(site):
    files, _, objs = _render(site)
    assert not [o for o in objs if o["kind"] == "Secret"]
    for rel, text in files.items():
        assert KEY not in text, f"the closed API's key leaked into {rel}"
    kust = yaml.safe_load(files["k8s/overlays/llama-8b/kustomization.yaml"].split("\n", 1)[1])
    assert "secretGenerator" not in kust  # the team creates the Secrets from files it keeps (README)
    pod = _router_pod(objs)["spec"]
    sources = pod["volumes"][0]["projected"]["sources"]
    assert [s["secret"]["name"] for s in sources if "secret" in s] == ["llama-8b-router-secrets",
                                                                        "llama-8b-router-remote-key"]
    gw = _one(objs, "Deployment", "llama-8b-gateway")["spec"]["template"]["spec"]
    gw_secrets = [s["secret"] for s in gw["volumes"][0]["projected"]["sources"] if "secret" in s]
    assert gw_secrets[-1] == {"name": "llama-8b-router-gateway", "items": [{"key": "router.conf", "path": "router.conf"}]}
    readme = files["k8s/README.md"]
    for name in ("llama-8b-router-secrets", "llama-8b-router-gateway", "llama-8b-router-remote-key"):
        assert f"create secret generic {name}" in readme
    assert "--from-file=remote.key=SITE/router/remote.key" in readme
    assert 'proxy_set_header X-Selfhost-Gateway-Secret "%s";' in readme


def test_deployed_policy_is_the_router_schema_and_names_the_service(site):
    files, dv, _ = _render(site)
    text = files["k8s/overlays/llama-8b/router-policy.yaml"]
    policy = yaml.safe_load(text)
    parse_policy(policy)  # what the router will load
    assert policy["local"]["base_url"] == "http://llama-8b-server.llama-8b.svc.cluster.local:8000/v1"
    assert policy["audit"]["path"] == dv.selfhost_router.audit_mount
    assert policy["remote"]["api_key_file"] == f"{dv.selfhost_router.mount}/remote.key"
    kust = yaml.safe_load(files["k8s/overlays/llama-8b/kustomization.yaml"].split("\n", 1)[1])
    assert {"name": "llama-8b-router-policy", "files": ["policy.yaml=router-policy.yaml"]} in kust["configMapGenerator"]
    other = _render(site, namespace="ai")[0]["k8s/overlays/llama-8b/router-policy.yaml"]
    assert "llama-8b-server.ai.svc.cluster.local" in other


def test_gateway_sends_v1_to_the_router_with_the_trust_headers(site):
    files, dv, _ = _render(site)
    nginx = files["k8s/overlays/llama-8b/nginx.conf"]
    assert "location /v1/ {" in nginx
    assert "set $selfhost_route_upstream http://llama-8b-router.llama-8b.svc.cluster.local:8080;" in nginx
    assert "proxy_set_header X-Selfhost-Caller " in nginx  # set by nginx: a client's own value is replaced
    assert f"include {dv.selfhost_gateway_mount}/router.conf;" in nginx
    assert "set $selfhost_upstream http://llama-8b-server.llama-8b.svc.cluster.local:8000;" in nginx


def test_router_image_needs_a_digest(site):
    with pytest.raises(RenderError, match="router") as e:
        kubernetes.contents(PLANS["single"](), site, digests=DIGESTS, router_addresses=ADDRESSES)
    assert "--image-digest router=sha256:" in e.value.fix and "selfhost_images_router_ref" in e.value.fix
    assert kubernetes.parse_digests([f"router={ROUTER_DIGESTS['router']}"]) == {"router": ROUTER_DIGESTS["router"]}


def test_a_bad_policy_stops_kubernetes_render_too(tmp_path):
    site = load_site(router_site(tmp_path, {**POLICY, "detect": {"identifers": []}}))
    with pytest.raises(RenderError, match="detect.identifers"):
        _render(site)


def test_cli_renders_the_router_with_pinned_addresses(tmp_path):
    """`selfhost render … --target kubernetes --router-address HOST=IP`; the flag is refused for the Ansible target."""
    import typer
    from typer.testing import CliRunner

    from toolkit.commands import render as render_cmd

    app = typer.Typer()
    render_cmd.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps `render` as a subcommand
    site = router_site(tmp_path)
    plan_file = tmp_path / "plan.yml"
    PLANS["single"]().dump(plan_file)
    digests = [arg for k, v in ROUTER_DIGESTS.items() for arg in ("--image-digest", f"{k}={v}")]
    out = tmp_path / "k8s-out"
    res = CliRunner().invoke(app, ["render", str(plan_file), "-i", str(site), "--target", "kubernetes", "--out",
                                   str(out), *digests, "--router-address", f"{API_HOST}=203.0.113.7"])
    assert res.exit_code == 0, res.output
    assert "k8s/base/router.yaml" in res.output
    policy = yaml.safe_load((out / "k8s" / "base" / "network-policies.yaml").read_text().split("\n", 1)[1]
                            .split("---\n")[-1])
    assert policy["spec"]["egress"][-1]["to"] == [{"ipBlock": {"cidr": "203.0.113.7/32"}}]
    res = CliRunner().invoke(app, ["render", str(plan_file), "-i", str(site), "--router-address", f"{API_HOST}=203.0.113.7"])
    assert res.exit_code != 0 and "--router-address" in str(res.exception)
