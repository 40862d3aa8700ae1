"""Serve the weekly retrain deployments from this process, without a work pool: ``python -m rungflow.deployments.serve``.

The deployments (names, parameters, cron schedules with their timezones) are read from
``deployments/prefect.yaml``, so the served ones and the work-pool ones never drift apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def deployment_specs(prefect_file: Path = HERE / "prefect.yaml") -> list[dict[str, Any]]:
    """The retrain deployments declared in ``prefect.yaml`` (YAML anchors resolved)."""
    return [d for d in yaml.safe_load(prefect_file.read_text())["deployments"]
            if d["entrypoint"].endswith(":retrain_flow")]


def build(names: Sequence[str] = ()) -> list[Any]:
    from prefect.schedules import Cron

    from rungflow.flows.retrain import retrain_flow

    out = []
    for spec in deployment_specs():
        if names and spec["name"] not in names:
            continue
        schedules = [Cron(s["cron"], timezone=s["timezone"], active=s.get("active", True)) for s in spec.get("schedules", [])]
        out.append(retrain_flow.to_deployment(name=spec["name"], parameters=spec.get("parameters", {}),
                                              schedules=schedules, tags=spec.get("tags"), description=spec.get("description")))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rungflow.deployments.serve", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="deployments to serve (default: all in prefect.yaml)")
    args = parser.parse_args(argv)
    # Relative config paths in the parameters are relative to the repository root.
    os.chdir(HERE.parent)
    from prefect import serve

    serve(*build(args.names))


if __name__ == "__main__":
    main()
