"""The only module that prints. Tables and hints go to the terminal; `--json` prints one JSON document."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from toolkit.errors import SelfhostError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str = "", *, style: str | None = None) -> None:
    console.print(text, style=style, markup=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console.print(t)


def as_json(data: Any) -> None:
    """One JSON document on stdout, nothing else (scripts parse it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(exc: SelfhostError) -> None:
    err_console.print("error: " + exc.message, style="bold red", markup=False)
    if exc.fix:
        err_console.print("To fix: " + exc.fix, markup=False)
    if exc.hint:
        err_console.print("Hint:   " + exc.hint, markup=False)


OPENNESS_PARTS = (("weights", "W", "weights"), ("inference_code", "C", "inference code"),
                  ("training_code", "T", "training code"), ("training_data", "D", "training data"))


def openness_short(openness) -> str:
    """Compact openness column: `W·C·–·–` (weights · inference code · training code · training data)."""
    get = openness.get if isinstance(openness, dict) else lambda k: getattr(openness, k)
    return "·".join(mark if get(key) else "–" for key, mark, _ in OPENNESS_PARTS)


def openness_long(openness) -> str:
    """`weights ✓ · inference code ✓ · training code ✗ · training data ✗`."""
    get = openness.get if isinstance(openness, dict) else lambda k: getattr(openness, k)
    return " · ".join(f"{label} {'✓' if get(key) else '✗'}" for key, _, label in OPENNESS_PARTS)


def warn(text: str) -> None:
    err_console.print("warning: " + text, style="yellow", markup=False)


def plan_summary(report, *, written=None) -> None:
    """The human view of `selfhost plan`: best layout, memory per GPU, options, cost, licence."""
    r = report
    verdict = "fits" if r.fits else "does NOT fit"
    best = r.options[0] if r.options else None
    head = best.label if best else r.model
    console.print(f"[bold]{r.model}[/] — {head}: [{'green' if r.fits else 'red'}]{verdict}[/] (vLLM {r.vllm_version} defaults)")
    for reason in r.reasons:
        line(f"  ✗ {reason}", style="red")
    m = r.per_gpu
    table(
        "Memory per GPU (GiB)",
        ["total", "budget", "weights", "activations", "non-torch", "CUDA graphs", "KV cache", "headroom"],
        [[m.total_gib, m.requested_gib, m.weights_gib, m.activation_gib, m.non_torch_gib, m.cuda_graph_gib, m.kv_cache_gib, m.headroom_gib]],
    )
    if m.lora_gib:
        line(f"LoRA buffers: {m.lora_gib:g} GiB per GPU (already taken out of the KV cache above)")
    c, p = r.capacity, r.performance
    line(
        f"KV cache: {c.kv_cache_tokens:,} tokens · context {c.max_model_len:,} (up to {c.max_model_len_possible:,}) · "
        f"{c.max_concurrency:g} full-length requests at once"
    )
    line(
        f"Speed: {p.decode_tokens_per_s:g} tokens/s single stream · {p.aggregate_tokens_per_s:g} tokens/s at "
        f"{p.at_concurrency} concurrent ({p.per_user_tokens_per_s:g} per user)"
    )
    if len(r.options) > 1:
        table(
            "Options that fit (cheapest first)",
            ["layout", "KV GiB/GPU", "max conc.", "tok/s 1 user", "tok/s total", "$/month"],
            [[o.label, o.per_gpu.kv_cache_gib, o.max_concurrency, o.decode_tokens_per_s, o.aggregate_tokens_per_s,
              f"{o.monthly_usd:,.0f}" if o.monthly_usd is not None else "—"] for o in r.options],
        )
    if getattr(r, "sizing", None):
        line("Capacity:")
        for step in r.sizing.how:
            line(f"  · {step}")
    if r.cost:
        cost = r.cost
        parts = " + ".join(f"{k.replace('_', ' ')} ${v:,.0f}" for k, v in cost.breakdown.items())
        rows = [["own", f"{cost.monthly_usd:,.0f}", f"{cost.gpus_bought or '?'} GPUs bought for ${cost.hardware_usd:,.0f}: {parts}"]]
        if cost.cloud_monthly_usd is not None:
            rows.append(["rent GPUs in a cloud", f"{cost.cloud_monthly_usd:,.0f}", "on-demand $/GPU-hour × 730 h, + team"])
        if cost.api:
            volume = f"{cost.requests_per_month:,.0f} requests/month" if cost.requests_per_month else "no volume given"
            api_cost = f"{cost.api_monthly_usd:,.0f}" if cost.api_monthly_usd is not None else "—"
            rows.append([f"API {cost.api}", api_cost, f"{volume} (input + output tokens)"])
        h = cost.hybrid
        if h is not None:
            rows.append([f"hybrid: {h.routed_out * 100:g}% to the API", f"{h.monthly_usd:,.0f}",
                         f"API ${h.api_usd:,.0f} + own ${h.local_monthly_usd:,.0f} ({h.replicas} replica"
                         f"{'s' if h.replicas != 1 else ''}, {h.gpus_bought} GPUs for {h.local_requests_per_month:,.0f} requests/month)"])
        table("Monthly cost, side by side (USD)", ["option", "$/month", "what"], rows)
        if cost.purchase_note:
            line(f"  · {cost.purchase_note}")
        if cost.api:
            line(f"  · API compared: {cost.api} — {cost.api_reason or 'given'}; prices as of {cost.api_prices_as_of or 'unknown'}")
        for a in cost.assumptions:
            line(f"  · assumed: {a}", style="dim")
        if h is not None:
            line("Hybrid, the arithmetic:")
            for step in h.how:
                line(f"  · {step}")
        if cost.verdict:
            line(f"Verdict: {cost.verdict}", style="bold")
    line(f"Quantization {r.quantization}: {r.quantization_quality}")
    lic = r.license
    line(f"Licence: {lic.summary}", style=None if lic.allowed else "red")
    line(f"Openness: {openness_long(lic.openness)}")
    for duty in lic.duties:
        line(f"  · {duty}")
    for w in r.warnings:
        warn(w)
    line("vllm serve " + " ".join(r.vllm_argv))
    if r.explain:
        table("Where the numbers come from", ["quantity", "value", "source", "detail"],
              [[e.name, e.value, e.provenance, e.detail] for e in r.explain])
    if written:
        line(f"Plan written to {written}")


# ---------------------------------------------------------------- deploy

def confirm(question: str) -> bool:
    """Ask a yes/no question on the terminal (the caller makes sure stdin is one)."""
    from rich.prompt import Confirm

    return Confirm.ask(question, console=err_console, default=False)


class DeployProgress:
    """Live host × step grid for `selfhost deploy`; feed it `deployer.TaskEvent`s via `update`.

    Cells: `·` not yet, `…` running, `ok`, `N changed`, `FAILED`, `-` skipped. The line under the
    grid names the task running on each host. With a non-terminal stdout it prints nothing live.
    """

    _STYLE = {"failed": "bold red", "unreachable": "bold red", "changed": "yellow", "ok": "green", "running": "cyan"}

    def __init__(self, hosts: list[str], steps: list[str], *, title: str = "deploy") -> None:
        from rich.live import Live

        self.hosts, self.steps, self.title = list(hosts), list(steps), title
        self.cells: dict[tuple[str, str], dict] = {}
        self.current: dict[str, str] = {}
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False,
                          auto_refresh=True, redirect_stdout=False, redirect_stderr=False)

    def __enter__(self) -> "DeployProgress":
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.current.clear()
        self._live.update(self._render())
        self._live.__exit__(*exc)

    def update(self, event) -> None:
        if event.host not in self.hosts:
            self.hosts.append(event.host)
        if event.step not in self.steps:
            return  # fact gathering and the like: not a column
        cell = self.cells.setdefault((event.host, event.step), {"state": "running", "changed": 0})
        if event.status == "started":
            self.current[event.host] = f"{event.step}: {event.task}"
            if cell["state"] not in ("failed", "unreachable"):
                cell["state"] = "running"
        elif event.status in ("failed", "unreachable"):
            cell["state"] = event.status
        else:
            if event.status == "changed":
                cell["changed"] += 1
            if cell["state"] == "running":
                cell["state"] = "ok"
            # a later step started on this host closes the earlier ones
            for step in self.steps[: self.steps.index(event.step)]:
                prev = self.cells.get((event.host, step))
                if prev and prev["state"] == "running":
                    prev["state"] = "ok"
        self._live.update(self._render())

    def _render(self):
        from rich.console import Group
        from rich.text import Text

        t = Table(title=self.title, title_justify="left")
        t.add_column("host")
        for step in self.steps:
            t.add_column(step)
        for host in self.hosts:
            row = [host]
            for step in self.steps:
                cell = self.cells.get((host, step))
                if cell is None:
                    row.append(Text("·", style="dim"))
                    continue
                state = cell["state"]
                if state in ("failed", "unreachable"):
                    label = state.upper()
                elif state == "running":
                    label = "…"
                elif cell["changed"]:
                    label, state = f"{cell['changed']} changed", "changed"
                else:
                    label = "ok"
                row.append(Text(label, style=self._STYLE.get(state, "")))
            t.add_row(*row)
        lines = [Text(f"{h}: {task}", style="dim") for h, task in self.current.items()]
        return Group(t, *lines)


def deploy_preview(changed_tasks: dict[str, list[str]], hosts: list[str]) -> None:
    """What a --check run says would change, per host."""
    for host in hosts:
        tasks = changed_tasks.get(host, [])
        if not tasks:
            console.print(f"{host}: no changes", style="green", markup=False)
            continue
        console.print(f"{host}: {len(tasks)} change(s)", style="yellow", markup=False)
        for task in tasks:
            console.print(f"  ~ {task}", markup=False)


def deploy_summary(result) -> None:
    """Per-host recap of a `deployer.DeployResult`, then the failed tasks with their messages."""
    rows = [[h, s.ok, s.changed, s.failed, s.unreachable, s.skipped] for h, s in result.hosts.items()]
    what = getattr(result, "command", "deploy").split()[0]  # rollback/destroy/... name themselves
    table(f"{'check' if result.check else what}: {result.status} in {result.wall_s:.0f}s",
          ["host", "ok", "changed", "failed", "unreachable", "skipped"], rows)
    for f in result.failed:
        err_console.print(f"FAILED {f.host} [{f.step}] {f.task}", style="bold red", markup=False)
        err_console.print(f"  {f.message}", markup=False)


def api_keys(keys: dict[str, str]) -> None:
    """Show newly created API keys. They are not stored anywhere else on this machine: shown once."""
    if not keys:
        return
    console.print("New API keys (shown once; they live root-only on each host, in the gateway's api-keys.conf):",
                  style="bold", markup=False)
    for host, key in keys.items():
        console.print(f"  {host}: {key}", markup=False)


# ---------------------------------------------------------------- day-2 writes (upgrade, rollback, rotate-keys, destroy)

def release_diffs(diffs: dict) -> None:
    """Per host, what an upgrade changes against the release it runs now (`ops.Change` lists)."""
    for host, changes in diffs.items():
        if not changes:
            console.print(f"{host}: already runs this release (no change)", style="green", markup=False)
            continue
        console.print(f"{host}: {len(changes)} change(s)", style="yellow", markup=False)
        for c in changes:
            if c.kind == "+":
                console.print(f"  + {c.what}: {c.new}", style="green", markup=False)
            elif c.kind == "-":
                console.print(f"  - {c.what}: {c.old}", style="red", markup=False)
            else:
                console.print(f"  ~ {c.what}: {c.old} -> {c.new}", markup=False)


def operations(steps: list) -> None:
    """What a --dry-run would run (`operations.Operation` / `Wait` values), one block per step."""
    for step in steps:
        if not hasattr(step, "playbook"):
            console.print(f"would wait {step.seconds}s: {step.reason}", markup=False)
            continue
        where = f"--limit {step.limit}" if step.limit else "every host"
        console.print(f"would run {step.playbook}{' (check mode)' if step.check else ''} on {where}",
                      style="bold", markup=False)
        for key, value in step.extravars.items():
            if key != "selfhost_run":  # who runs it: the same for every step, and in the audit log
                console.print(f"  -e {key}={json.dumps(value, default=str)}", markup=False)


# ---------------------------------------------------------------- day 2 (read-only): doctor, status, logs

def as_json_line(data: Any) -> None:
    """One compact JSON document per line (`selfhost logs --follow --json`)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


def doctor_report(report) -> None:
    """`selfhost doctor`: one line per check, grouped by host; the fixes of failed checks under them."""
    host = None
    for c in report.checks:
        if c.host != host:
            host = c.host
            console.print(host, style="bold", markup=False)
        mark, style = ("ok  ", "green") if c.ok else ("FAIL", "bold red")
        console.print(f"  {mark} {c.name:<20} ", style=style, markup=False, end="")
        console.print(c.detail, markup=False)
        if not c.ok and c.remedy:
            console.print(f"       To fix: {c.remedy}", markup=False)
    failed = report.failed()
    if report.could_not_run:
        err_console.print(f"doctor could not check: {', '.join(report.could_not_run)}", style="bold red", markup=False)
    elif failed:
        err_console.print(f"{len(failed)} of {len(report.checks)} checks failed", style="bold red", markup=False)
    else:
        console.print(f"all {len(report.checks)} checks passed", style="green", markup=False)


def _num(value, fmt: str = "{:g}") -> str:
    return "—" if value is None else fmt.format(value)


def _uptime(seconds) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    return f"{s // 86400}d{s % 86400 // 3600}h" if s >= 86400 else f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_report(statuses) -> None:
    """`selfhost status`: a table of hosts, then the live numbers from /metrics and the GPUs."""
    rows = []
    for s in statuses:
        state = s.state or "—"
        if s.health:
            state += f"/{s.health}"
        rows.append([s.host, state if s.reachable else "UNREACHABLE", s.served_model, s.revision, s.image,
                     _uptime(s.uptime_s), s.restarts, (s.gateway_state or "—") + (f"/{s.gateway_health}" if s.gateway_health else "")])
    table("servers", ["host", "server", "model", "revision", "image", "uptime", "restarts", "gateway"], rows)
    mrows = []
    for s in statuses:
        mt = s.metrics
        if mt is None:
            continue
        mrows.append([s.host, _num(mt.requests_running), _num(mt.requests_waiting), _num(mt.kv_cache_usage_pct, "{:.1f}%"),
                      _num(mt.prompt_tokens_total, "{:,.0f}"), _num(mt.generation_tokens_total, "{:,.0f}"),
                      _num(mt.prompt_tokens_per_s), _num(mt.generation_tokens_per_s),
                      _num(mt.request_errors_total, "{:,.0f}"), _num(mt.http_5xx_total, "{:,.0f}")])
    if mrows:
        window = next((s.metrics.window_s for s in statuses if s.metrics and s.metrics.window_s), None)
        table(f"live (/metrics, rates over {_num(window)} s)",
              ["host", "running", "waiting", "KV cache", "prompt tok", "gen tok", "prompt tok/s", "gen tok/s",
               "req errors", "HTTP 5xx"], mrows)
    grows = [[s.host, g.index, g.name, f"{g.memory_used_mib:,} / {g.memory_total_mib:,} MiB", _num(g.utilization_pct, "{}%")]
             for s in statuses for g in s.gpus]
    if grows:
        table("GPUs", ["host", "gpu", "name", "memory used", "utilization"], grows)
    for s in statuses:
        if s.error:
            warn(f"{s.host}: {s.error}")


def fleet_report(fleet) -> None:
    """`selfhost status` of a fleet: replicas serving, and where the requests went (each server's own count)."""
    def who(h: str) -> str:  # a multi-node replica: its serving host, then its headless ranks
        rest = [x for x in fleet.replicas.get(h, [h]) if x != h]
        return h + (f" (+ {', '.join(rest)})" if rest else "")

    rows = [[who(h), _num(v, "{:,.0f}"), _num(fleet.share_pct.get(h), "{:.1f}%")] for h, v in fleet.served.items()]
    table(f"fleet: {fleet.healthy}/{fleet.total} replicas healthy", ["replica", "requests served", "share"], rows)


def log_lines(lines, *, show_host: bool, timestamps: bool) -> None:
    """`selfhost logs`: one line each, prefixed with the host when several hosts are shown."""
    for ln in lines:
        prefix = (f"{ln.host} | " if show_host else "") + (f"{ln.ts} " if timestamps and ln.ts else "")
        console.print(prefix + ln.text, markup=False, highlight=False)


def log_errors(errors: dict[str, str]) -> None:
    for host, why in errors.items():
        warn(f"{host}: {why}")
