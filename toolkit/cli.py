"""The `selfhost` command: composes the command modules and maps errors to exit codes (the table in
`toolkit.errors`). No logic here."""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from toolkit import __version__
from toolkit.errors import EXIT_NO, EXIT_USAGE, SelfhostError


class _Commands(TyperGroup):
    """Click exits 2 on a usage error; in selfhost's table 2 means "the hosts could not do it", so a
    wrong command line exits EXIT_USAGE (64) instead."""

    # Typer vendors its own Click: its UsageError is the base of the public typer.BadParameter.
    _usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except self._usage_error as exc:
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except self._usage_error as exc:
            exc.exit_code = EXIT_USAGE
            raise


app = typer.Typer(
    cls=_Commands,
    name="selfhost",
    help="Size GPU hardware for open-weight LLMs, then deploy and run locked-down vLLM servers on your own hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from toolkit.commands import output

        from toolkit.plan.vllm_args import VLLM_VERSION

        output.line(f"selfhost {__version__} (plans for vLLM {VLLM_VERSION} by default; see plan --vllm-version)")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and the vLLM release plans are made for."),
) -> None:
    """selfhost: plan → render → deploy → operate."""


def _register() -> None:
    # Command modules import only what they need at call time, so `selfhost plan` stays light.
    from toolkit.commands import bench, catalog, deploy, lifecycle, plan, runbook, templates
    from toolkit.commands import doctor, logs, route, status

    for module in (plan, catalog, deploy, templates, runbook, bench, lifecycle, doctor, status, logs, route):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a SelfhostError becomes a message and an exit code, never a traceback.

    Typer's standalone mode handles usage errors (exit 2), `typer.Exit` and Ctrl-C itself; what
    reaches us is our own error tree, or a bug.
    """
    from toolkit.commands import output

    _register()
    try:
        app(args=argv, standalone_mode=True)
    except SelfhostError as exc:
        if os.environ.get("SELFHOST_DEBUG"):
            raise
        output.error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if os.environ.get("SELFHOST_DEBUG"):
            raise
        output.error(SelfhostError(f"internal error: {exc!r}", hint="set SELFHOST_DEBUG=1 for a traceback and report it"))
        sys.exit(EXIT_NO)
