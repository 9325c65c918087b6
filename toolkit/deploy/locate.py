"""Which bundle a read-only day-2 command (doctor, status, logs) runs.

`--bundle DIR` names a rendered bundle. With PLAN: the site's last rendered bundle when it was
made from this very plan (so weights given with `--weights` need not be given again), else PLAN
is rendered on the fly into the same default place `selfhost render` and `selfhost deploy` use
(`build/<plan name>`). With neither: the bundle the site last rendered or deployed
(SITE/.selfhost/last-bundle, written by render). Raises `toolkit.errors`; prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from toolkit.errors import ConfigError, RenderError, check_bundle
from toolkit.render.site import Site, bundle_hosts, load_site

BUILD_DIR = Path("build")
LOCK = "selfhost.lock.yml"


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
    """The given `--bundle`, the bundle of PLAN, or (neither given) the one the site last rendered."""
    site = load_site(site_dir)
    if plan is not None and bundle is not None:
        raise ConfigError("give PLAN or --bundle DIR, not both", hint=f"selfhost status -i {site_dir}")
    if bundle is not None:
        path = Path(bundle)
        check_bundle(path)
    elif plan is None:
        path = last_bundle(site)
        if path is None:
            raise ConfigError(f"{site.path}: no deployment recorded for this site yet",
                              fix="deploy (or render) first, or name it: PLAN or --bundle DIR",
                              hint=f"selfhost deploy plan.yml -i {site_dir}")
        check_bundle(path)
    else:
        from toolkit.plan.model import Plan
        from toolkit.render.bundle import render

        the_plan = Plan.load(plan)
        path = _bundle_of(site, the_plan)
        if path is None:
            try:
                path = render(the_plan, site, default_bundle_dir(the_plan.name)).path
            except RenderError as exc:
                if not exc.message.startswith("no weights folder given"):
                    raise
                raise ConfigError(f"{plan}: not rendered for {site.path} yet, and the site names no weights folder",
                                  fix="render it once with --weights DIR (day-2 commands then find it), "
                                      "or pass --bundle DIR",
                                  hint=f"selfhost render {plan} -i {site_dir} --weights DIR") from None
    return BundleRef(site=site, path=path, hosts=bundle_hosts(path))


def last_bundle(site: Site) -> Path | None:
    """The bundle SITE/.selfhost/last-bundle points at, when it is still there."""
    from toolkit.render.bundle import LAST_BUNDLE

    try:
        text = (site.path / LAST_BUNDLE).read_text(errors="replace").strip()
    except OSError:
        return None
    path = Path(text) if text and "\n" not in text else None
    return path if path is not None and (path / LOCK).is_file() else None


def _bundle_of(site: Site, plan) -> Path | None:
    """An existing bundle (the site's last, or build/<name>) rendered from exactly this plan."""
    for path in (last_bundle(site), default_bundle_dir(plan.name)):
        if path is None:
            continue
        try:
            lock = yaml.safe_load((path / LOCK).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(lock, dict) and lock.get("plan_digest") == plan.digest() \
                and set(bundle_hosts(path)) == {h.name for h in site.hosts}:
            return path
    return None


def limit_for(ref: BundleRef, host: str | None) -> str | None:
    """`--host H` as an Ansible limit, refusing a name the bundle does not have."""
    if host is None:
        return None
    if host not in ref.hosts:
        raise ConfigError(f"--host {host}: not a host of this deployment ({', '.join(ref.hosts)})",
                          fix=f"use one of: {', '.join(ref.hosts)}")
    return host
