"""The multi-node egress lock survives a reboot (issue 11): the boot script the selfhost_vllm role installs
(files/egress_restore.sh, run by the selfhost-egress unit before Docker) restores, from the iptables-restore
files `selfhost render` serialized, exactly the chain a deploy leaves — in a real, fresh network namespace
(a kernel that has forgotten every rule, like one just booted), and the kernel then enforces it: the server's
uid gets "no route" to a non-peer at once, while a peer and other uids are let through.

Needs root (a network namespace of its own, `setpriv` to the server's uid) and iptables; skipped otherwise.
Boot ordering itself (before docker.service / X-Start-Before: docker) is not exercised here."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.render.multinode import egress_restore, egress_rules, egress_uid

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "playbooks" / "roles" / "selfhost_vllm" / "files" / "egress_restore.sh"
# One address per probe: a failed neighbour lookup is cached, and would answer "no route" by itself.
PEER, OTHER, BEFORE, ROOT_PROBE = "10.9.9.2", "10.9.9.3", "10.9.9.5", "10.9.9.4"
# A system interpreter the server's uid can run (a venv under /root is not readable by it).
PY = shutil.which("python3", path="/usr/bin:/bin")
PROBE = ("import socket,sys\ns=socket.socket(); s.settimeout(1)\n"
         "try:\n    s.connect((sys.argv[1], 9)); print('connected')\n"
         "except socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print('errno%d' % e.errno)\n")


def _can_run() -> bool:
    if os.geteuid() != 0 or not PY or not all(shutil.which(t) for t in ("unshare", "iptables-restore", "ip", "setpriv")):
        return False
    return subprocess.run(["unshare", "-n", "iptables", "-S"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _can_run(), reason="needs root, unshare, iptables and setpriv")


def _in_fresh_netns(script: str, tmp: Path) -> dict:
    res = subprocess.run(["unshare", "-n", "sh", "-ec", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_boot_restore_rebuilds_the_deployed_chain_and_the_kernel_enforces_it(tmp_path):
    uid = egress_uid("tiny-pp")
    chain = f"SELFHOST-{uid}"
    rules = egress_rules(chain, [PEER])
    rules_dir = tmp_path / "egress"
    rules_dir.mkdir()
    for family, text in egress_restore(chain, uid, rules).items():
        (rules_dir / f"tiny-pp.{family}").write_text(text)
    probe = f"setpriv --reuid {uid} --regid {uid} --clear-groups {PY} -c \"$PROBE\""
    out = _in_fresh_netns(f"""
        PROBE={shlex.quote(PROBE)}
        ip link set lo up; ip link add v0 type veth peer name v1; ip link set v0 up; ip link set v1 up
        ip addr add 10.9.9.1/24 dev v0
        before=$({probe} {BEFORE})
        sh {SCRIPT} {rules_dir} >&2; sh {SCRIPT} {rules_dir} >&2   # twice: a restart of the unit
        other=$({probe} {OTHER}); peer=$({probe} {PEER}); root=$({PY} -c "$PROBE" {ROOT_PROBE})
        {PY} -c 'import json,sys; print(json.dumps(dict(zip(["before","other","peer","root","chain","chain6","out"],
            sys.argv[1:]))))' "$before" "$other" "$peer" "$root" "$(iptables -w -S {chain})" \\
            "$(ip6tables -w -S {chain})" "$(iptables -w -S OUTPUT)"
    """, tmp_path)
    assert out["before"] == "timeout", "a fresh kernel holds no rule: the server's packets go out"
    # exactly what the role compares on a deploy (egress_family.yml), so a deploy after the reboot changes nothing
    assert out["chain"].splitlines() == [f"-N {chain}", *(" ".join(r) for r in rules["iptables"])]
    assert out["chain6"].splitlines() == [f"-N {chain}", *(" ".join(r) for r in rules["ip6tables"])]
    assert out["out"].splitlines().count(f"-A OUTPUT -m owner --uid-owner {uid} -j {chain}") == 1, out["out"]
    assert out["other"] == "errno113", "the server's uid: no route to a non-peer (EHOSTUNREACH, at once)"
    assert out["peer"] == "timeout" and out["root"] == "timeout", "a peer, and other uids, are let through"


def test_a_rules_file_that_cannot_be_restored_fails_the_unit(tmp_path):
    rules_dir = tmp_path / "egress"
    rules_dir.mkdir()
    (rules_dir / "broken.iptables").write_text("*filter\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n")
    res = subprocess.run(["unshare", "-n", "sh", str(SCRIPT), str(rules_dir)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and "FAILED to restore" in res.stderr, res.stdout + res.stderr


ROUTER_ALLOW = ROOT / "playbooks" / "roles" / "selfhost_router" / "files" / "egress_allow.py"
BOUND_PROBE = ("import socket,sys\ns=socket.socket(); s.settimeout(1); s.bind((sys.argv[1], 0))\n"
               "try:\n    s.connect((sys.argv[2], int(sys.argv[3]))); print('connected')\n"
               "except socket.timeout:\n    print('timeout')\nexcept OSError as e:\n    print('errno%d' % e.errno)\n")


def _router_rules():
    spec = importlib.util.spec_from_file_location("egress_allow", ROUTER_ALLOW)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the script's own functions: what the role writes is what is loaded here
    return mod


def test_boot_restore_brings_back_the_routers_allow_list_beside_a_multinode_chain(tmp_path):
    """The hybrid router's allow-list (issue 12) after a reboot: its <name>.router.iptables (written by
    egress_allow.py, the same rules it installs) is loaded by the same boot script, next to a multi-node
    server's file, twice (a restart of the unit), in a fresh kernel. Docker's DOCKER-USER does not exist yet
    at boot: the script makes it. Then a source in the router's subnet reaches only the allowed address:port
    (INPUT; DOCKER-USER applies the same chain to forwarded traffic), and other sources are untouched."""
    mod = _router_rules()
    chain, subnet, api, other = "SELFHOST-R-tiny", "10.9.8.0/24", "10.9.7.1", 10
    rules_dir = tmp_path / "egress"
    rules_dir.mkdir()
    (rules_dir / "tiny.router.iptables").write_text(mod.restore_text(chain, subnet, [f"{api}:9"]))
    uid = egress_uid("tiny-pp")
    for family, text in egress_restore(f"SELFHOST-{uid}", uid, egress_rules(f"SELFHOST-{uid}", [PEER])).items():
        (rules_dir / f"tiny-pp.{family}").write_text(text)
    out = _in_fresh_netns(f"""
        PROBE={shlex.quote(BOUND_PROBE)}
        ip link set lo up; ip addr add {api}/32 dev lo
        ip link add v0 type veth peer name v1; ip link set v0 up; ip link set v1 up; ip addr add 10.9.8.1/24 dev v0
        sh {SCRIPT} {rules_dir} >&2; sh {SCRIPT} {rules_dir} >&2
        allowed=$({PY} -c "$PROBE" 10.9.8.1 {api} 9); blocked=$({PY} -c "$PROBE" 10.9.8.1 {api} {other})
        outside=$({PY} -c "$PROBE" {api} {api} {other})
        {PY} -c 'import json,sys; print(json.dumps(dict(zip(["allowed","blocked","outside","chain","du","input","out"],
            sys.argv[1:]))))' "$allowed" "$blocked" "$outside" "$(iptables -w -S {chain})" \\
            "$(iptables -w -S DOCKER-USER)" "$(iptables -w -S INPUT)" "$(iptables -w -S OUTPUT)"
    """, tmp_path)
    assert out["chain"].splitlines() == [f"-N {chain}", *mod.chain_rules(chain, [f"{api}:9"])], \
        "exactly what egress_allow.py compares on a deploy, so a deploy after the reboot changes nothing"
    assert out["du"].splitlines().count(f"-A DOCKER-USER -s {subnet} -j {chain}") == 1, out["du"]
    assert out["input"].splitlines().count(f"-A INPUT -s {subnet} -j {chain}") == 1, out["input"]
    assert out["out"].splitlines().count(f"-A OUTPUT -m owner --uid-owner {uid} -j SELFHOST-{uid}") == 1, \
        "the multi-node file beside it is loaded too"
    assert out["allowed"] == "errno111", "the allowed address:port is reached (refused by nobody listening)"
    assert out["blocked"] == "timeout", "any other port from the router's subnet is dropped"
    assert out["outside"] == "errno111", "sources outside the router's subnet are not touched"
