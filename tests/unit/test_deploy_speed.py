"""What keeps a re-deploy fast without giving up a guarantee: the weights are hashed only when a file's
stat identity moved (files/verify_weights.py), the host checks read the host in one probe
(files/host_probe.py), facts are cached between the runs of a bundle, and a full verify is one flag.

The two scripts are run for real (they are what the roles run on the hosts, with the same argv)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from toolkit.deploy import runner
from toolkit.operate import operations

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "playbooks" / "roles" / "selfhost_weights" / "files" / "verify_weights.py"
PROBE = ROOT / "playbooks" / "roles" / "selfhost_preflight" / "files" / "host_probe.py"


def _model(tmp: Path) -> tuple[Path, Path]:
    import hashlib

    d = tmp / "weights"
    d.mkdir()
    (d / "config.json").write_text("{}\n")
    (d / "model.safetensors").write_bytes(b"\x01" * 300_000)
    manifest = tmp / "weights.sha256"
    manifest.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                                for p in sorted(d.iterdir())))
    return d, manifest


def _verify(d: Path, manifest: Path, mode: str = "changed") -> dict:
    out = subprocess.run([sys.executable, "-c", VERIFY.read_text(), str(d), str(manifest), f"{d}.verified.json", mode],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_a_re_verify_reads_no_bytes_until_a_file_changes(tmp_path):
    d, manifest = _model(tmp_path)
    assert _verify(d, manifest) == {"bad": [], "hashed": 2, "trusted": 0, "hashed_bytes": 300_003}
    assert _verify(d, manifest) == {"bad": [], "hashed": 0, "trusted": 2, "hashed_bytes": 0}
    assert _verify(d, manifest, "full") == {"bad": [], "hashed": 2, "trusted": 0, "hashed_bytes": 300_003}


def test_corruption_with_size_and_mtime_put_back_is_still_caught(tmp_path):
    """rsync's quick check (size + mtime) cannot see this write; ctime, which nobody can set back, can."""
    d, manifest = _model(tmp_path)
    _verify(d, manifest)
    target = d / "model.safetensors"
    st = target.stat()
    with open(target, "r+b") as f:
        f.seek(1000)
        f.write(b"corrupt!")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    result = _verify(d, manifest)
    assert result["bad"] == ["model.safetensors"] and result["trusted"] == 1
    assert _verify(d, manifest)["bad"] == ["model.safetensors"], "a bad file is never stamped as verified"


def test_a_missing_file_or_a_new_manifest_is_checked_again(tmp_path):
    d, manifest = _model(tmp_path)
    _verify(d, manifest)
    (d / "config.json").unlink()
    assert _verify(d, manifest)["bad"] == ["config.json"]
    (d / "config.json").write_text("{}\n")  # copied again: a new file, so it is hashed
    assert _verify(d, manifest) == {"bad": [], "hashed": 1, "trusted": 1, "hashed_bytes": 3}
    manifest.write_text(manifest.read_text().replace("  config.json", " *config.json"))  # another revision
    assert _verify(d, manifest)["hashed"] == 2, "a changed manifest re-hashes every file"


def test_the_host_probe_reads_memory_disk_flags_and_the_port_in_one_call(tmp_path):
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        taken = json.loads(subprocess.run([sys.executable, "-c", PROBE.read_text(), str(tmp_path / "nope" / "root"),
                                           str(port), ""], capture_output=True, text=True, check=True).stdout)
    assert taken["port_free"] is False and taken["port_error"] and taken["port_owner"] is None
    free = json.loads(subprocess.run([sys.executable, "-c", PROBE.read_text(), str(tmp_path), str(port), ""],
                                     capture_output=True, text=True, check=True).stdout)
    assert free["port_free"] is True
    meminfo = {line.split(":")[0]: line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()}
    assert free["mem_total_kib"] == int(meminfo["MemTotal"])
    st = os.statvfs(tmp_path)
    assert abs(free["disk_free_kib"] - st.f_bavail * st.f_frsize // 1024) < 256 * 1024  # other writers: 256 MiB slack
    assert taken["disk_used_kib"] == 0, "a root that does not exist yet uses nothing"
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    assert free["cpu_flags"] == flags.split(":", 1)[1].split() if flags else free["cpu_flags"] == []


def test_a_full_weights_verify_is_one_deploy_flag():
    who = runner.invocation("selfhost deploy")
    assert "selfhost_weights_verify_full" not in operations.deploy(limit=None, invocation=who).extravars
    op = operations.deploy(limit=None, invocation=who, verify_weights=True)
    assert op.extravars["selfhost_weights_verify_full"] is True


def test_facts_are_cached_beside_the_artifacts_not_in_the_bundle(tmp_path):
    env = runner.fact_cache_env(tmp_path / "bundle")
    assert env["ANSIBLE_GATHERING"] == "smart"
    cache = Path(env["ANSIBLE_CACHE_PLUGIN_CONNECTION"])
    artifacts = runner.artifacts_dir(tmp_path / "bundle")
    assert cache.parent == artifacts.parent, "beside the runs, where a re-render does not delete it"
    assert not cache.is_relative_to(artifacts), "not inside: ansible-runner's rotation would delete it"
    assert not cache.is_relative_to(tmp_path / "bundle")
