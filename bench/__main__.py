"""``python -m bench efficiency|overhead|compare|costaware|stopping|stopprice|robust|transfer|automl|automl-portfolio|warmstart|gpu|all``: the benchmark entry point.

The environment is prepared (quiet Prefect, isolated Prefect home) before anything imports
prefect, which is why the command modules are imported only after :func:`quiet_env`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import quiet_env


def build_parser() -> argparse.ArgumentParser:
    from bench import (  # none imports prefect at module level
        automl,
        compare,
        costaware,
        efficiency,
        overhead,
        stopping,
        warmstart,
    )

    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("efficiency", help="GPU-hours to reach random-128's best − 0.5 on LCBench (YAHPO surrogate)")
    efficiency.add_arguments(p)
    p = sub.add_parser("overhead", help="orchestration overhead per no-op trial vs plain Ray and Ray Tune")
    overhead.add_arguments(p)
    p = sub.add_parser("costaware", help="Hyperband + TPE/BOHB with and without search.cost_aware on LCBench")
    costaware.add_arguments(p)
    p = sub.add_parser("stopping", help="our stop rules vs Ray Tune's plateau stopper and Optuna's Terminator on LCBench")
    stopping.add_arguments(p)
    p = sub.add_parser("warmstart", help="week 2's GPU-hours to reach week 1's quality, warm-started vs cold")
    warmstart.add_arguments(p)
    p = sub.add_parser("automl", help="rungflow vs AutoGluon and auto-sklearn at equal wall-clock on the real tables of bench/tables.py")
    automl.add_arguments(p)
    from bench import automl_portfolio

    p = sub.add_parser("automl-portfolio", help="learn automl's portfolio from the dev tables' kept sweeps (one per table)")
    automl_portfolio.add_arguments(p)
    p = sub.add_parser("compare", help="rungflow vs Ray Tune vs Optuna on LCBench under the same GPU-hour cap")
    compare.add_arguments(p)
    from bench import robust, stop_price, transfer  # in-process simulations: no Prefect, no Ray

    p = sub.add_parser("robust", help="Hyperband + each searcher vs the expected best of random-128, in-process, dev and held-out")
    robust.add_arguments(p)
    p = sub.add_parser("transfer", help="earlier sweeps as a prior, leave-one-task-out: ours and Syne Tune's transfer schedulers")
    transfer.add_arguments(p)
    p = sub.add_parser("stopprice", help="stop rules judged at the user's price: net, hindsight net, captured, shortfall")
    stop_price.add_arguments(p)
    from bench import gpu

    p = sub.add_parser("gpu", help="a torch sweep packed 4 to a GPU: the ledger's GPU-seconds against nvidia-smi")
    gpu.add_arguments(p)
    from bench import migrate

    p = sub.add_parser("migrate", help="the peers' example programs under Ray Tune/Optuna and under rungflow, start line changed")
    migrate.add_arguments(p)
    p = sub.add_parser("all", help="efficiency then overhead, with their default settings")
    p.add_argument("--out", type=Path, default=Path("bench/out"), help="parent of efficiency/ and overhead/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Re-rendering starts no Prefect server, so it needs no Prefect home of its own.
    quiet_env(isolated_prefect_home=getattr(args, "render_only", None) in (None, False))
    from bench import automl, compare, costaware, efficiency, overhead, stopping

    t0 = time.perf_counter()
    status = 0
    if args.command == "automl":
        automl.run(args)
    elif args.command == "automl-portfolio":
        from bench import automl_portfolio

        automl_portfolio.run(args)
    elif args.command == "efficiency":
        efficiency.run(args)
    elif args.command == "overhead":
        overhead.run(args)
    elif args.command == "costaware":
        costaware.run(args)
    elif args.command == "stopping":
        stopping.run(args)
    elif args.command == "compare":
        compare.run(args)
    elif args.command == "robust":
        from bench import robust

        robust.run(args)
    elif args.command == "transfer":
        from bench import transfer

        transfer.main(args)
    elif args.command == "stopprice":
        from bench import stop_price

        stop_price.run(args)
    elif args.command == "gpu":
        from bench import gpu

        status = gpu.run(args)
    elif args.command == "warmstart":
        from bench import warmstart

        warmstart.run(args)
    elif args.command == "migrate":
        from bench import migrate

        status = migrate.run(args)
    else:
        # Each part gets its own Prefect server (started and stopped inside its run()).
        parser = build_parser()
        eff = parser.parse_args(["efficiency", "--out", str(args.out / "efficiency")])
        ovh = parser.parse_args(["overhead", "--out", str(args.out / "overhead")])
        efficiency.run(eff)
        quiet_env()  # a fresh Prefect home for the second server
        overhead.run(ovh)
    print(f"bench {args.command}: {time.perf_counter() - t0:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
