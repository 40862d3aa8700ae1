"""How much of the hindsight net a stop rule can capture at all: rules tuned on the very runs they are judged on.

``python -m bench stopprice --ceiling`` adds two families to each run, both chosen *in hindsight*, on the same
runs they are then scored on, so they bound what an honest rule of their kind can do:

* **fixed stop before the k-th stage** (a rung of a bracket: where the controller is asked), one k for every run
  (and, more of a cheat, one k per instance, from its own seeds): a rule that looks at nothing;
* **perfect foresight at the stage boundaries**: each run's best stage to stop before, what the controller's
  granularity alone leaves of the hindsight net (which may stop after any single result);
* **our window rule with its threshold and patience tuned**: every ``min_gain_per_gpu_hour`` of
  :data:`bench.stopping.OUR_GRID` × patience 1, 2, 3, the combination with the best median captured.

If even these capture well under 0.95 of the hindsight net, that target asks a stop rule to know the future:
the best stop of a run depends on rises that have not happened yet when it must be made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.common import median

__all__ = ["WINDOW_VARIANTS", "cell_ceiling", "summarize_ceiling", "markdown_ceiling"]

WINDOW_VARIANTS = ("rungflow window p1", "rungflow window", "rungflow window p3")  # patience 1, 2, 3


def cell_ceiling(records: Sequence[Any], scheduler: Any, seed: int,
                 score: Callable[[int | None], Mapping[str, Any]]) -> dict[str, Any]:
    """Every run's net under each fixed stop k (before its k-th stage: where the controller is asked) and each
    window setting; ``score`` judges a stop of this run (a :class:`bench.stop_price.Judge`)."""
    from bench.stopping import OUR_GRID, _stage_starts, replay_controller

    fixed = [score(start)["net"] for start in _stage_starts(records)[1:]]
    window = {}
    for variant in WINDOW_VARIANTS:
        for gain in OUR_GRID:
            stop_at, _ = replay_controller(records, scheduler, rule=variant, seed=seed, min_gain=gain)
            window[f"{variant} @ {gain:g}"] = score(stop_at)["net"]
    return {"fixed": fixed, "window": window}


def _hindsight(cell: Mapping[str, Any]) -> float:
    """The run's best net in hindsight: every rule's judgement of the run carries the same one."""
    return next(iter(cell["rules"].values()))["hindsight"]


def _captured(net: float | None, hindsight: float) -> float | None:
    if hindsight <= 1e-9:
        return None
    return (net if net is not None else -float("inf")) / hindsight


def _score(cells: Sequence[Mapping[str, Any]], nets: Sequence[float | None]) -> dict[str, Any]:
    hindsights = [_hindsight(c) for c in cells]
    captured = [_captured(n, h) for n, h in zip(nets, hindsights)]
    shortfall_small = [h - (n if n is not None else -float("inf")) for n, h in zip(nets, hindsights) if h < 2.0]
    return {"median_captured": median(captured), "runs_95": sum(1 for x in captured if x is not None and x >= 0.95),
            "min_net": min((n if n is not None else -float("inf")) for n in nets),
            "max_shortfall_small": max(shortfall_small, default=None), "small": len(shortfall_small), "runs": len(cells)}


def _fixed_net(cell: Mapping[str, Any], k: int) -> float | None:
    fixed = cell["ceiling"]["fixed"]
    return fixed[k - 1] if k <= len(fixed) else 0.0  # a sweep with fewer brackets ran to its end: net 0


def summarize_ceiling(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    most = max(len(c["ceiling"]["fixed"]) for c in cells)
    by_k = {k: _score(cells, [_fixed_net(c, k) for c in cells]) for k in range(1, most + 1)}
    k_best = max(by_k, key=lambda k: (by_k[k]["median_captured"] or -1e9))
    rows.append({"rule": "each run's best stage boundary (perfect foresight)",
                 **_score(cells, [max([0.0, *(n for n in c["ceiling"]["fixed"] if n is not None)]) for c in cells])})
    rows.append({"rule": f"fixed stop before stage k = {k_best} (k chosen on these runs)", **by_k[k_best]})

    instances = sorted({c["instance"] for c in cells})
    per_instance: dict[str, int] = {}
    for inst in instances:
        own = [c for c in cells if c["instance"] == inst]
        scores = {k: _score(own, [_fixed_net(c, k) for c in own]) for k in range(1, most + 1)}
        per_instance[inst] = max(scores, key=lambda k: (scores[k]["median_captured"] or -1e9))
    nets = [_fixed_net(c, per_instance[c["instance"]]) for c in cells]
    rows.append({"rule": "fixed stop, k chosen per instance on its own seeds ("
                 + ", ".join(f"{i}: {k}" for i, k in per_instance.items()) + ")", **_score(cells, nets)})

    settings = list(cells[0]["ceiling"]["window"])
    by_setting = {s: _score(cells, [c["ceiling"]["window"][s] for c in cells]) for s in settings}
    s_best = max(by_setting, key=lambda s: (by_setting[s]["median_captured"] or -1e9))
    rows.append({"rule": f"window rule tuned on these runs ({s_best} points/GPU-h)", **by_setting[s_best]})
    return rows


def markdown_ceiling(rows: Sequence[Mapping[str, Any]]) -> str:
    from bench.common import fmt

    lines = ["Rules tuned in hindsight on the runs they are scored on (upper bounds for their kind):", "",
             "| rule | median captured | runs ≥ 0.95 | worst net | max shortfall (small) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rule']} | {fmt(r['median_captured'])} | {r['runs_95']}/{r['runs']} | {fmt(r['min_net'])} | "
                     f"{fmt(r['max_shortfall_small'])} ({r['small']}) |")
    return "\n".join(lines)
