"""The ``rungflow`` command line: the parser and ``main``.

The commands live beside it: ``cli_plan`` (plan), ``cli_run`` (sweep, resume), ``cli_automl`` (automl, predict),
``cli_render`` (report and the leaderboard), ``progress`` (the live line); ``cli_common`` holds what they share.

Bad input ends with one line on stderr naming the field, the value and the fix, exit status 2,
and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.markup import escape

from rungflow.flows.cli_automl import add_automl_parsers
from rungflow.flows.cli_common import APILostError, CLIError, err_console
from rungflow.flows.cli_plan import cmd_plan, plan_rows
from rungflow.flows.cli_render import cmd_report, leaderboard_table, summary_lines, trial_counts_line
from rungflow.flows.cli_run import cmd_resume, cmd_sweep, quiet_prefect_console
from rungflow.flows.progress import _Progress

# What tests and callers import from here; the commands themselves live in the modules above.
__all__ = ["main", "build_parser", "plan_rows", "leaderboard_table", "summary_lines", "trial_counts_line", "_Progress"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) like every other CLI error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        err_console.print(f"[red]error:[/red] {escape(message)}; see `{self.prog} --help`", highlight=False, soft_wrap=True)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rungflow", description="Budget-capped AutoML sweeps as Prefect flows on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print Prefect's INFO log lines (task runs starting and finishing) on the console too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    set_help = "override a config field, e.g. --set scheduler.eta=4 (repeatable)"

    p = sub.add_parser("plan", help="show brackets, rungs, trials and predicted spend before spending anything")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument("--simulate", action="store_true",
                   help="run the sweep's own driver on a simulated cluster: wall-clock, GPU-hours, cost, utilisation")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="--simulate: GPUs (or CPU workers) in the cluster")
    p.add_argument("--costs-from", metavar="RUN_DIR", help="--simulate: trial durations from a previous run's ledger")
    p.add_argument("--seconds-per-unit", type=float, metavar="S",
                   help="--simulate: trial durations as S seconds per budget unit")
    p.add_argument("--stage-seconds", type=float, metavar="S",
                   help="--simulate: driver seconds between synchronous stages (default: measured in --costs-from, "
                        "else 0.12)")
    p.add_argument("--setup-seconds", type=float, metavar="S",
                   help="--simulate: seconds from the sweep's start to its first trial (default: measured in "
                        "--costs-from, else one stage's charge)")
    p.add_argument("--dispatch-seconds", type=float, metavar="S",
                   help="--simulate: seconds a worker holds each trial before it starts (default: measured in "
                        "--costs-from, else 0)")
    p.add_argument("--json", action="store_true", help="--simulate: print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sweep", help="run a budget-capped sweep")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", help="continue an interrupted sweep: finished trials are kept, lost work billed once")
    p.add_argument("run_dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="raise a cap or move the runtime, e.g. --set budget.max_gpu_hours=20 (budget.*, runtime.*, storage.* and ui.* only)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("report", help="leaderboard and summary of a finished or running sweep")
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=10)
    p.set_defaults(func=cmd_report)

    add_automl_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help: their message is printed already
        return int(exc.code or 0)
    from rungflow.redact import install_log_redaction, redact

    quiet_prefect_console(args.verbose)
    install_log_redaction()
    try:
        return args.func(args)
    except CLIError as exc:
        # Escaped: a message naming an extra ("rungflow[torch]") must not be read as rich markup.
        err_console.print(f"[red]error:[/red] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True, markup=True)
        if isinstance(exc, APILostError):
            _exit_now(2)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: finished trials are in the run directory's ledger.jsonl")
        return 130


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # a local Ray started by this process must not outlive it
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
