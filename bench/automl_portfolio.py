"""``python -m bench automl-portfolio``: learn automl's portfolio from the dev tables' sweeps.

The sweeps are ``python -m bench automl --systems rungflow-cold --keep-runs DIR`` runs, one per table (the first
outer fold): only their ``config.json``, ``ledger.jsonl`` and ``result.json`` are kept, configurations and scores,
and only those are read. ``--leave-out TABLE`` builds the portfolio a table gets in the leave-one-table-out
benchmark, from every other table's sweep, so no table helps itself.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "run_dirs", "portfolio_without", "SHIPPED"]

SHIPPED = Path("tasks/automl_portfolio.json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--history", type=Path, default=Path("bench/out/automl-portfolio/history"),
                   help="the kept sweeps: DIR/<table>/.../config.json (bench automl --keep-runs DIR)")
    p.add_argument("--size", type=int, default=None, help="configurations in the portfolio (default: automl's)")
    p.add_argument("--leave-out", nargs="*", default=[], help="tables whose sweeps are not learned from")
    p.add_argument("--out", type=Path, default=SHIPPED, help=f"the portfolio JSON file (default {SHIPPED}, the shipped one)")


def run_dirs(history: Path, leave_out: Sequence[str] = ()) -> list[Path]:
    """The kept sweeps under ``history``, one or more per table, except ``leave_out``'s; sorted, so the same files
    give the same portfolio."""
    found = sorted(p.parent for p in history.glob("*/**/config.json"))
    return [d for d in found if d.relative_to(history).parts[0] not in set(leave_out)]


def portfolio_without(history: Path, leave_out: Sequence[str] = (), size: int | None = None) -> dict[str, Any]:
    """The portfolio learned from every sweep under ``history`` but ``leave_out``'s, as the shipped file holds it."""
    from rungflow.tasks.automl_portfolio import PORTFOLIO_SIZE, learn_portfolio

    dirs = run_dirs(history, leave_out)
    if not dirs:
        raise SystemExit(f"--history {history}: no kept sweep (DIR/<table>/.../config.json) outside {list(leave_out)}; "
                         "run python -m bench automl --systems rungflow-cold --keep-runs DIR first")
    k = size or PORTFOLIO_SIZE
    configs, _ = learn_portfolio(dirs, k)
    tables = sorted({d.relative_to(history).parts[0] for d in dirs})
    return {"source": f"the portfolio learned on {len(tables)} dev tables", "tables": tables, "size": k,
            "standing": "per-table normalised score (median 0, best 1) in the band of the highest rung reached",
            "learned_from": "rungflow automl sweeps with the portfolio off, 60 s, the first of 3 outer folds, seed 0",
            "configs": configs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    portfolio = portfolio_without(args.history, args.leave_out, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(portfolio, indent=1) + "\n", encoding="utf-8")
    families = [c["family"] for c in portfolio["configs"]]
    print(f"{args.out}: {len(families)} configurations from {len(portfolio['tables'])} tables: {', '.join(families)}")
    return portfolio
