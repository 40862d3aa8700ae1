"""``rungflow sweep`` and ``rungflow resume``: a validated config run as the sweep flow against a Prefect API."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from rungflow.flows.cli_common import APILostError, CLIError, console, load_cli_config, preflight
from rungflow.flows.cli_render import leaderboard_table, summary_lines
from rungflow.flows.prefect_server import SERVER_LOG, PrefectAPIDown, check_prefect_api, ensure_prefect_api, stop_prefect_server
from rungflow.flows.progress import _Progress


class _HideAPILoss(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and _api_lost(record.exc_info[1]))


def _api_lost(exc: BaseException) -> bool:
    """The sweep failed because the Prefect API went away (ours or Prefect's own call noticed first)."""
    import httpx

    from rungflow.tasks.artifacts import PrefectAPIUnreachable

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (PrefectAPIUnreachable, httpx.ConnectError, httpx.ConnectTimeout)):
            return True
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def quiet_prefect_console(verbose: bool) -> None:
    """The console shows Prefect's warnings and errors only; its INFO lines still reach the API (the UI) and the
    run directory's log file. ``-v`` brings them back. Must run before Prefect configures logging."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "INFO" if verbose else "WARNING")


def log_to_run_dir(run_dir: Path) -> logging.Handler:
    """Every Prefect log line of this sweep at INFO and above, in ``RUN_DIR/sweep.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "sweep.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    from prefect.logging.formatters import PrefectFormatter

    handler.setFormatter(PrefectFormatter(
        format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
        flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"))
    logging.getLogger("prefect").addHandler(handler)
    return handler


def cmd_sweep(args: argparse.Namespace) -> int:
    overrides = list(args.set)
    if args.out:
        overrides.append(f"storage.run_dir={args.out}")
    config = load_cli_config(args.config, overrides)
    run_dir = config.run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} is a file; pass a directory with --out")
    if (run_dir / "ledger.jsonl").exists():
        _check_resumable(run_dir, config)
        console.print(f"{run_dir} already holds this sweep's ledger: resuming it (finished trials are not rerun)")
    return _run(config)


def _check_resumable(run_dir: Path, config) -> None:
    from rungflow.config import ConfigError
    from rungflow.flows.sweep import check_resumable

    if not (run_dir / "config.json").exists():
        return
    try:
        check_resumable(run_dir / "config.json", config)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted sweep from its run directory: its config.json, ledger and checkpoints."""
    import json

    from rungflow.config import RESUMABLE, ConfigError, apply_overrides, validate

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} does not exist or is not a directory; pass the directory a sweep "
                       "wrote (rungflow sweep --out DIR)")
    config_path, ledger_path = run_dir / "config.json", run_dir / "ledger.jsonl"
    if not config_path.is_file():
        raise CLIError(f"{config_path} does not exist; is {str(run_dir)!r} a rungflow run directory (rungflow sweep --out ...)?")
    if not ledger_path.is_file():
        raise CLIError(f"{ledger_path} does not exist: nothing ran there yet; start the sweep with rungflow sweep")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CLIError(f"{config_path} is not a readable JSON config ({type(exc).__name__}); restore it from the sweep's "
                       "YAML (rungflow sweep CONFIG --out RUN_DIR resumes too)") from None
    if not isinstance(data, dict):
        raise CLIError(f"{config_path} must hold a mapping; restore it from the sweep's YAML")
    for item in args.set:
        key = item.split("=", 1)[0].strip()
        if key.split(".")[0] not in RESUMABLE or "=" not in item:
            if "=" not in item:
                raise CLIError(f"--set {item!r}: expected dotted.key=value, e.g. --set budget.max_gpu_hours=20")
            raise CLIError(f"--set {key}: only budget.*, runtime.*, storage.* and ui.* may change when resuming (the search and the "
                           f"schedule must replay as they ran); start a new sweep with --out NEW_DIR to change {key}")
    try:
        data = apply_overrides(data, list(args.set))
        data.setdefault("storage", {})
        if isinstance(data["storage"], dict):
            data["storage"]["run_dir"] = str(run_dir)
        config = validate(data)
    except ConfigError as exc:
        raise CLIError(f"config error: {exc}") from None
    return _run(config)


def _run(config) -> int:
    preflight(config)
    if config.run_dir().is_dir():
        # The flow takes this lock for the whole sweep; asking first keeps the refusal to one line.
        from rungflow.config import ConfigError
        from rungflow.flows.sweep import lock_run_dir

        try:
            lock_run_dir(config.run_dir()).close()
        except ConfigError as exc:
            raise CLIError(str(exc)) from None
    # Prefect retries a lost connection about a minute per call (5 retries, exponential backoff); a sweep
    # whose API died would crawl for many minutes before failing. Two retries ride out a blip; a longer
    # outage is the API watch's (tasks/api_watch.py), which skips the calls while the server is down.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
    server = ensure_prefect_api(config.run_dir() / SERVER_LOG)
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    # The flow engine logs a failed run with its traceback; for a lost API the one line below replaces it.
    # (Logger-level filters: Prefect installs its handlers later, when the flow starts.)
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect"):
        logging.getLogger(name).addFilter(_HideAPILoss())
    try:
        try:
            check_prefect_api()
        except PrefectAPIDown as exc:
            raise CLIError(str(exc)) from None
        with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"],
                                         PREFECT_CLIENT_MAX_RETRIES: int(os.environ["PREFECT_CLIENT_MAX_RETRIES"])}):
            return _sweep(config)
    except Exception as exc:
        if isinstance(exc, CLIError) or not _api_lost(exc):
            raise
        # Prefect's log shipper would print each failed batch to stderr from here on; the line below says it all.
        logging.raiseExceptions = False
        run_dir = config.run_dir()
        raise APILostError(f"PREFECT_API_URL={os.environ['PREFECT_API_URL']} stopped answering mid-sweep (a sweep trains "
                       f"through an outage of up to ui.api_outage_seconds={config.ui.api_outage_seconds:g} s); the sweep stopped "
                       f"and {run_dir}/ledger.jsonl and result.json keep every finished trial (`rungflow report {run_dir}`). "
                       f"Restart the Prefect server or point PREFECT_API_URL at a live one, then rerun (`rungflow resume {run_dir}` "
                       "continues from the ledger)") from None
    finally:
        if server is not None:
            stop_prefect_server(server)


def _sweep(config) -> int:
    from rungflow.flows.sweep import run_sweep, set_reporter
    from rungflow.results import plot_anytime

    progress = _Progress()
    set_reporter(progress)
    from rungflow.config import ConfigError

    log_file = log_to_run_dir(config.run_dir())
    try:
        result = run_sweep(config, config.run_dir())
    except ConfigError as exc:  # found once the flow opened the run directory (e.g. another sweep holds it)
        raise CLIError(str(exc)) from None
    finally:
        progress.stop()
        set_reporter(None)
        logging.getLogger("prefect").removeHandler(log_file)
        log_file.close()
    console.print(leaderboard_table(result))
    for line in summary_lines(result):
        console.print(line)
    plot = plot_anytime(result, config.run_dir() / "anytime.png")
    console.print(f"run directory: {config.run_dir()} (result.json, ledger.jsonl, sweep.log, {plot.name})")
    return 0


