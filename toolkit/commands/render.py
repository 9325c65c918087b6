"""`selfhost render PLAN -i SITE`: write the deployment bundle for review, then `selfhost deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toolkit.commands.options import InventoryOpt, JsonOpt, PlanArg

EXAMPLES = [
    "selfhost render plan.yml -i sites/prod",
    "selfhost render plan.yml -i sites/prod --weights /srv/models/llama-8b --out build/llama-8b",
    "selfhost render plan.yml -i sites/prod --target kubernetes --image-digest vllm=sha256:… --image-digest gateway=sha256:…",
]

OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle folder (default: build/<plan name>).")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Model folder on this machine (overrides selfhost_weights_source).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the bundle even if files in it were edited or added by hand (they are lost).")]
TargetOpt = Annotated[str, typer.Option("--target", help="ansible: the bundle `selfhost deploy` runs; kubernetes: Kustomize manifests (default out: build/<plan name>-k8s).")]
DigestOpt = Annotated[Optional[list[str]], typer.Option("--image-digest", help="kubernetes: NAME=sha256:… for an image whose reference has no digest (NAME: vllm, gateway or router); repeatable.")]
RouterAddressOpt = Annotated[Optional[list[str]], typer.Option("--router-address", help="kubernetes: HOST=IP[,IP…], the addresses the hybrid router may reach the closed API's host at (its egress allow-list; render does no DNS lookup); repeatable.")]
NamespaceOpt = Annotated[Optional[str], typer.Option("--namespace", help="kubernetes: namespace of the overlay (default: the plan name).")]


def render(plan: PlanArg, inventory: InventoryOpt, out: OutOpt = None, weights: WeightsOpt = None,
           force: ForceOpt = False, json: JsonOpt = False, target: TargetOpt = "ansible",
           image_digest: DigestOpt = None, namespace: NamespaceOpt = None,
           router_address: RouterAddressOpt = None) -> None:
    """Render PLAN for the hosts of SITE into a bundle folder (nothing is contacted)."""
    from toolkit.commands import output
    from toolkit.errors import ConfigError
    from toolkit.plan.model import Plan
    from toolkit.render.bundle import render as do_render
    from toolkit.render import multinode
    from toolkit.render.site import load_site

    if target not in ("ansible", "kubernetes"):
        raise ConfigError(f"--target {target!r}: expected ansible or kubernetes")
    if target == "ansible" and (image_digest or namespace or router_address):
        raise ConfigError("--image-digest, --namespace and --router-address apply to --target kubernetes only")
    if target == "kubernetes" and weights is not None:
        raise ConfigError("--weights applies to the Ansible bundle; on Kubernetes the weights are a volume",
                          fix="fill the weights volume (k8s/README.md) and drop --weights")
    the_plan = Plan.load(plan)
    the_plan.require_license_ok("render")  # before the site is read; bundle.render() checks again
    if target == "kubernetes":
        _render_kubernetes(the_plan, load_site(inventory), out, image_digest, namespace, router_address, force, json)
        return
    bundle = do_render(the_plan, load_site(inventory), out or Path("build") / the_plan.name, weights_source=weights,
                       force=force)
    if json:
        output.as_json({"bundle": str(bundle.path), "files": bundle.files,
                        "vars": bundle.vars.model_dump(mode="json")})
        return
    output.line(f"rendered {bundle.path}/")
    for name in bundle.files:
        if not name.startswith("project/"):  # the playbook copy is the same every time
            output.line(f"  {name}")
    output.line("  project/  (playbooks)")
    for line in multinode.preview(bundle.vars.selfhost_multinode, bundle.vars.selfhost_fleet):  # which hosts form each replica
        output.line(line)
    output.line(f"next: review {bundle.path}/files/, then `{deploy_command(plan, inventory, weights, out)}`")


def _render_kubernetes(the_plan, site, out: Optional[Path], digests: Optional[list[str]], namespace: Optional[str],
                       router_addresses: Optional[list[str]], force: bool, json: bool) -> None:
    from toolkit.commands import output
    from toolkit.render import kubernetes

    result = kubernetes.render(the_plan, site, out or Path("build") / f"{the_plan.name}-k8s",
                               digests=kubernetes.parse_digests(digests), namespace=namespace,
                               router_addresses=kubernetes.parse_addresses(router_addresses), force=force)
    if json:
        output.as_json({"bundle": str(result.path), "target": "kubernetes", "files": result.files})
        return
    output.line(f"rendered {result.path}/")
    for name in result.files:
        output.line(f"  {name}")
    output.line(f"next: create the Secrets as {result.path}/k8s/README.md says, then "
                f"`kubectl apply -k {result.path}/k8s/overlays/{the_plan.name}`")


def deploy_command(plan: Path, inventory: Path, weights: Optional[Path], out: Optional[Path]) -> str:
    """The `selfhost deploy` line that deploys what was just rendered (same plan, site, weights, folder)."""
    import shlex

    args = ["selfhost", "deploy", str(plan), "-i", str(inventory)]
    args += ["--weights", str(weights)] if weights is not None else []
    args += ["--out", str(out)] if out is not None else []
    return shlex.join(args)


def register(app: typer.Typer) -> None:
    app.command("render", epilog="Examples: " + "; ".join(EXAMPLES))(render)
