"""The Detector interface and its registry.

A detector looks at the normalised text of a whole request (router.scan builds it) and returns
`Finding`s: what kind of thing it found and where (offsets in that normalised text). It never
sees the network and never stores the text.

Built-in detectors (registered at import):
- `identifiers` — Microsoft Presidio's pattern recognizers, model-free, checksum-validated
  (router/detectors/identifiers.py);
- `lexicon` — code names, data-source names and classification markings (router/detectors/lexicon.py);
- `patterns` — the site's own regexes;
- `fault_injection` — always errors or hangs: a drill (and test hook) proving the router fails closed.

A local ML detector plugs in the same way::

    from router.detectors import Finding, register

    @register("my_ner")
    def build(policy, options):           # options: the plugin's `options` mapping in the policy
        return MyNer(options["model_dir"])  # anything with .name and .detect(text) -> list[Finding]

and is enabled with `detect.plugins: [{name: my_ner, options: {model_dir: /models/ner}}]`.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from router.policy import Policy, PolicyError


@dataclass(frozen=True)
class Finding:
    detector: str
    kind: str
    """CREDIT_CARD, IBAN_CODE, … (identifiers), CODE_NAME, DATA_SOURCE, MARKING, PATTERN:<name>."""
    start: int
    end: int
    """[start, end) in the normalised text the detector was given."""
    redactable: bool = False


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, text: str) -> list[Finding]: ...


Factory = Callable[[Policy, dict[str, Any]], Detector]
REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory
    return deco


def build_detectors(policy: Policy) -> list[Detector]:
    """The detectors the policy asks for, in a fixed order; an unknown plugin is a PolicyError."""
    importlib.import_module("router.detectors.lexicon")
    dets: list[Detector] = []
    if policy.detect.identifiers:
        importlib.import_module("router.detectors.identifiers")
        dets.append(REGISTRY["identifiers"](policy, {}))
    dets.append(REGISTRY["lexicon"](policy, {}))
    if policy.detect.patterns:
        dets.append(REGISTRY["patterns"](policy, {}))
    for plugin in policy.detect.plugins:
        if plugin.name not in REGISTRY:
            raise PolicyError(f"detect.plugins: no detector named {plugin.name!r} is registered "
                              f"(known: {', '.join(sorted(REGISTRY))})")
        dets.append(REGISTRY[plugin.name](policy, dict(plugin.options)))
    return dets


class DetectorFault(RuntimeError):
    """Raised by the fault-injection detector."""


class FaultInjection:
    """Errors (mode=error) or hangs past any timeout (mode=timeout) on every call."""

    name = "fault_injection"

    def __init__(self, mode: str = "error", sleep_s: float = 30.0):
        if mode not in ("error", "timeout"):
            raise PolicyError(f"fault_injection: mode must be error or timeout, not {mode!r}")
        self.mode, self.sleep_s = mode, float(sleep_s)

    def detect(self, text: str) -> list[Finding]:
        if self.mode == "timeout":
            time.sleep(self.sleep_s)
        raise DetectorFault("fault injected by policy (detect.plugins: fault_injection)")


@register("fault_injection")
def _fault(policy: Policy, options: dict[str, Any]) -> Detector:
    return FaultInjection(**options)
