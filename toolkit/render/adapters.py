"""LoRA adapters at render: checked again, hashed into a manifest, placed content-addressed on the host.

Each adapter the plan names is read again (`check_adapter`: config and safetensors header only) before
anything is hashed or written; an adapter that no longer matches the plan (another base, rank, modules)
is refused in one line. Its files are then hashed (the site's hash cache, bounded reads) into a
`sha256sum` manifest the host checks its copy against. The host directory is named by the manifest's
digest, so an upgrade that replaces an adapter leaves the previous release's directory (and mount) intact
for a rollback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from toolkit.errors import CatalogError, RenderError
from toolkit.plan.model import Plan
from toolkit.render.deploy_vars import AdapterArtifact
from toolkit.render.manifest import HashCache, manifest


def recheck(plan: Plan, weights: Path) -> None:
    """Every planned adapter, read again and compared with the plan; RenderError (one line) on any change."""
    if not plan.adapters:
        return
    from toolkit import catalog
    from toolkit.catalog import adapters as lora_files
    from toolkit.plan.planner import _config_names

    # The weights actually shipped first (their config.json is what vLLM loads), else the planned catalog entry.
    resolved, why = None, ""
    for ref in dict.fromkeys((str(weights), plan.model.id, plan.model.base_id)):
        try:
            resolved = catalog.resolve_model(ref)
            break
        except CatalogError as exc:
            why = why or exc.message
    if resolved is None:
        raise RenderError(f"LoRA: cannot re-read the model to check the adapters against it: {why}")
    accepted = [plan.model.id, plan.model.base_id, resolved.repo_id, resolved.base_id, *_config_names(resolved)]
    for ref in plan.adapters:
        try:
            now = lora_files.check_adapter(ref.name, ref.source, resolved.spec, accepted,
                                           max_lora_rank=plan.vllm.max_lora_rank)
        except CatalogError as exc:
            raise RenderError(f"LoRA adapter {ref.name} ({ref.source}) no longer passes its check: {exc.message}",
                              fix=exc.fix or "re-plan with the adapter as it is now") from None
        planned = (ref.rank, ref.base_model, sorted(ref.modules))
        found = (now.rank, now.base_model, sorted(now.modules))
        if planned != found:
            raise RenderError(f"LoRA adapter {ref.name} ({ref.source}) changed since it was planned "
                              f"(rank/base/modules {found[0]}/{found[1]}/{','.join(found[2])}, planned "
                              f"{planned[0]}/{planned[1]}/{','.join(planned[2])})",
                              fix="re-plan with the adapter as it is now (selfhost plan … --lora NAME=PATH)")


def artifacts(plan: Plan, root: str, name: str, cache: HashCache) -> tuple[list[AdapterArtifact], dict[str, str]]:
    """(what the playbooks ship per adapter, bundle path → manifest text)."""
    arts, files = [], {}
    for ref in plan.adapters:
        text = manifest(Path(ref.source), cache)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        rel = f"files/adapters/{ref.name}.sha256"
        files[rel] = text
        arts.append(AdapterArtifact(name=ref.name, source=ref.source, manifest=rel, digest=digest,
                                    dir=f"{root}/{name}/adapters/{digest}/{ref.name}", mount=ref.path))
    return arts, files
