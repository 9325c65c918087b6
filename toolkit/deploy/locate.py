"""Which bundle a read-only day-2 command (doctor, status, logs) runs.

`--bundle DIR` names a rendered bundle; otherwise PLAN is rendered on the fly into the same
default place `selfhost render` and `selfhost deploy` use (`build/<plan name>`), so the
commands always see what a deploy of that plan would. Raises `toolkit.errors`; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from toolkit.errors import ConfigError
from toolkit.render.site import GROUP, Site, load_site

BUILD_DIR = Path("build")


@dataclass(frozen=True)
class BundleRef:
    site: Site
    path: Path
    """The bundle directory (ansible-runner private_data_dir)."""
    hosts: list[str]
    """Inventory host names of the bundle, in order."""


def default_bundle_dir(plan_name: str) -> Path:
    """Where `selfhost render`/`deploy` put the bundle of a plan when not told (`--out`)."""
    return BUILD_DIR / plan_name


def resolve(site_dir: Path, plan: Path | None, bundle: Path | None) -> BundleRef:
    """The bundle for PLAN (rendered now into build/<name>) or the given `--bundle` directory."""
    site = load_site(site_dir)
    if (plan is None) == (bundle is None):
        raise ConfigError("give either PLAN or --bundle DIR (exactly one)",
                          hint=f"selfhost doctor -i {site_dir} plan.yml")
    if bundle is not None:
        path = Path(bundle)
        check_bundle(path)
    else:
        from toolkit.plan.model import Plan
        from toolkit.render.bundle import render

        the_plan = Plan.load(plan)
        path = render(the_plan, site, default_bundle_dir(the_plan.name)).path
    return BundleRef(site=site, path=path, hosts=bundle_hosts(path))


def check_bundle(path: Path) -> None:
    missing = [p for p in ("project", "env/extravars", "inventory/hosts.yml") if not (path / p).exists()]
    if missing:
        raise ConfigError(f"{path} is not a rendered bundle (missing {', '.join(missing)})",
                          hint="selfhost render PLAN -i SITE  writes one (default: build/<plan name>)")


def bundle_hosts(path: Path) -> list[str]:
    """Host names of the bundle's inventory (group `inference`, top level or under all.children)."""
    try:
        inv = yaml.safe_load((path / "inventory" / "hosts.yml").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}/inventory/hosts.yml: cannot read it ({exc})") from None
    group = inv.get(GROUP) or ((inv.get("all") or {}).get("children") or {}).get(GROUP) or {}
    return [str(h) for h in (group.get("hosts") or {})]


def limit_for(ref: BundleRef, host: str | None) -> str | None:
    """`--host H` as an Ansible limit, refusing a name the bundle does not have."""
    if host is None:
        return None
    if host not in ref.hosts:
        raise ConfigError(f"--host {host}: not a host of this deployment ({', '.join(ref.hosts)})",
                          fix=f"use one of: {', '.join(ref.hosts)}")
    return host
