"""The AutoML benchmark's figures, reported as the AutoML Benchmark reports them (Gijsbers et al. 2024).

From one row per (table, split, system) run: per-table scores (mean over the outer splits), the score normalised
between a constant predictor (0) and the best system on the table (1), the mean rank over tables, wins, ties and
losses per pair of systems, the CPU- and GPU-hours each system spent, and, for rungflow stopped at the price, the
spend it saved against the same run to the time limit and the points it lost. A run that failed counts as the
constant predictor, as the AutoML Benchmark imputes it, and is listed.

Scores are accuracy (classification) and R² (regression), higher is better, as fractions; points are hundredths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["TIE", "table_scores", "normalised", "ranks", "wins_ties_losses", "spend", "price_stop", "family_mix", "report",
           "markdown"]

# Two mean scores closer than this (0.1 accuracy points) tie: below that, one or two test rows decide.
TIE = 0.001
# rungflow with the stop at the price is judged against this system: the same run to the time limit.
FULL, STOPPED = "rungflow", "rungflow-stop"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def table_scores(rows: Sequence[Mapping[str, Any]], systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per table: each system's mean test score over the splits both it and the constant predictor have, failures
    imputed with the constant predictor's score; the constant predictor's mean; the failed runs."""
    by_table: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = by_table.setdefault(r["table"], {"task": r.get("task", ""), "constant": {}, "runs": {}, "failed": []})
        t["constant"][r["split"]] = r["constant"]
        ok = r.get("status", "ok") == "ok" and r.get("score") is not None and math.isfinite(r["score"])
        t["runs"].setdefault(r["system"], {})[r["split"]] = r["score"] if ok else None
        if not ok:
            t["failed"].append(f"{r['system']} split {r['split']}: {r.get('error', 'no score')}")
    out: dict[str, dict[str, Any]] = {}
    for name, t in by_table.items():
        splits = sorted(t["constant"])
        scores = {}
        for system in systems:
            runs = t["runs"].get(system)
            if not runs:
                continue
            # Only the splits this system ran: a half-finished resumable run still reports what it has.
            done = [s for s in splits if s in runs]
            scores[system] = _mean([runs[s] if runs[s] is not None else t["constant"][s] for s in done])
        out[name] = {"task": t["task"], "constant": _mean([t["constant"][s] for s in splits]), "scores": scores,
                     "splits": len(splits), "failed": t["failed"]}
    return out


def normalised(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per table and system: (score − constant) ÷ (best system's score − constant); 1 is the best, 0 the constant."""
    out: dict[str, dict[str, float]] = {}
    for name, t in tables.items():
        if not t["scores"]:
            continue
        best, const = max(t["scores"].values()), t["constant"]
        span = best - const
        out[name] = {s: ((v - const) / span if span > 1e-12 else (1.0 if v >= best else 0.0)) for s, v in t["scores"].items()}
    return out


def _complete(tables: Mapping[str, Mapping[str, Any]], systems: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    # Ranks and pairwise counts only over tables every system has a score on, so no system is judged on fewer.
    return {n: t for n, t in tables.items() if all(s in t["scores"] for s in systems)}


def ranks(tables: Mapping[str, Mapping[str, Any]], systems: Sequence[str], tie: float = TIE) -> dict[str, float]:
    """Mean rank per system (1 = best) over the tables every system ran; systems within ``tie`` share their rank."""
    complete = _complete(tables, systems)
    totals = dict.fromkeys(systems, 0.0)
    for t in complete.values():
        for s in systems:
            better = sum(1 for o in systems if o != s and t["scores"][o] > t["scores"][s] + tie)
            tied = sum(1 for o in systems if o != s and abs(t["scores"][o] - t["scores"][s]) <= tie)
            totals[s] += 1 + better + tied / 2
    return {s: totals[s] / len(complete) for s in systems} if complete else {}


def wins_ties_losses(tables: Mapping[str, Mapping[str, Any]], systems: Sequence[str],
                     tie: float = TIE) -> dict[str, dict[str, tuple[int, int, int]]]:
    """``out[a][b]``: on how many tables ``a`` scored above ``b`` by more than ``tie``, within it, and below it."""
    complete = _complete(tables, systems)
    out: dict[str, dict[str, tuple[int, int, int]]] = {}
    for a in systems:
        for b in systems:
            if a == b:
                continue
            diffs = [t["scores"][a] - t["scores"][b] for t in complete.values()]
            out.setdefault(a, {})[b] = (sum(d > tie for d in diffs), sum(abs(d) <= tie for d in diffs),
                                        sum(d < -tie for d in diffs))
    return out


def spend(rows: Sequence[Mapping[str, Any]], systems: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per system: CPU-hours and GPU-hours summed over its runs, and its mean wall-clock seconds per run."""
    out = {}
    for s in systems:
        mine = [r for r in rows if r["system"] == s]
        if mine:
            out[s] = {"cpu_hours": sum(r.get("cpu_hours") or 0.0 for r in mine),
                      "gpu_hours": sum(r.get("gpu_hours") or 0.0 for r in mine),
                      "wall_seconds": _mean([r.get("wall_seconds") or 0.0 for r in mine]), "runs": len(mine)}
    return out


def price_stop(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]] | None:
    """Per table, rungflow stopped at the price against the same run to the time limit: the share of its spend saved
    (GPU-hours where a GPU was billed, CPU-hours otherwise) and the test points lost (negative: it did better)."""
    pairs: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for r in rows:
        if r["system"] in (FULL, STOPPED) and r.get("status", "ok") == "ok":
            pairs.setdefault(r["table"], {}).setdefault(r["system"], []).append(r)
    out = {}
    for table, p in pairs.items():
        if FULL not in p or STOPPED not in p:
            continue
        unit = "gpu_hours" if sum(r.get("gpu_hours") or 0.0 for r in p[FULL]) > 0 else "cpu_hours"
        full, stop = (sum(r.get(unit) or 0.0 for r in p[s]) for s in (FULL, STOPPED))
        out[table] = {"saved": 1.0 - stop / full if full > 0 else 0.0, "unit": unit,
                      "points_lost": 100.0 * (_mean([r["score"] for r in p[FULL]]) - _mean([r["score"] for r in p[STOPPED]]))}
    return out or None


def family_mix(rows: Sequence[Mapping[str, Any]], systems: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """Per rungflow system, over its runs that recorded their families: the share of its trials and of its GPU-seconds
    that went to each model family, and each family's median GPU-seconds per budget unit (median over runs)."""
    out: dict[str, dict[str, Any]] = {}
    for s in systems:
        runs = [r["families"] for r in rows if r["system"] == s and r.get("families")]
        if not runs:
            continue
        trials = sum(f["trials"] for run in runs for f in run.values())
        seconds = sum(f["gpu_seconds"] for run in runs for f in run.values())
        names = sorted({name for run in runs for name in run})
        per_unit = {n: sorted(run[n]["gpu_seconds_per_unit"] for run in runs
                              if n in run and run[n]["gpu_seconds_per_unit"] is not None) for n in names}
        out[s] = {"runs": len(runs), "trials": trials, "gpu_seconds": seconds, "families": {
            n: {"trial_share": sum(run[n]["trials"] for run in runs if n in run) / trials if trials else 0.0,
                "gpu_share": sum(run[n]["gpu_seconds"] for run in runs if n in run) / seconds if seconds else 0.0,
                "gpu_seconds_per_unit": per_unit[n][len(per_unit[n]) // 2] if per_unit[n] else None}
            for n in names}}
    return out or None


def report(rows: Sequence[Mapping[str, Any]], systems: Sequence[str], tie: float = TIE) -> dict[str, Any]:
    """Every figure above, for the rows of one time limit."""
    systems = [s for s in systems if any(r["system"] == s for r in rows)]
    tables = table_scores(rows, systems)
    norm = normalised(tables)
    return {
        "systems": systems, "tables": tables, "normalised": norm,
        "mean_normalised": {s: _mean([n[s] for n in norm.values() if s in n]) for s in systems if any(s in n for n in norm.values())},
        "mean_rank": ranks(tables, systems, tie), "wins_ties_losses": wins_ties_losses(tables, systems, tie),
        "spend": spend(rows, systems), "price_stop": price_stop(rows), "tie": tie,
        "families": family_mix(rows, systems),
        "runs": [{k: r.get(k) for k in ("table", "split", "system", "score", "trials", "gpu_hours", "cpu_hours", "family",
                                        "gpu_hours_to_best")}
                 for r in rows if r.get("families")],
        "portfolio": [{"table": r["table"], "split": r["split"], "system": r["system"], **r["portfolio"]}
                      for r in rows if r.get("portfolio")],
    }


def _shortfall(t: Mapping[str, Any], a: str, b: str) -> str:
    if a in t["scores"] and b in t["scores"]:
        return f"{100 * (t['scores'][a] - t['scores'][b]):+.2f}"
    return ""


def markdown(rep: Mapping[str, Any], title: str = "") -> str:
    """Per-table scores with normalised scores, then mean rank, W/T/L, spend and the stop at the price."""
    systems = rep["systems"]
    lines = [f"### {title}", ""] if title else []
    vs_best = "ag-best" if "ag-best" in systems and "rungflow" in systems else None
    head = "| table | task | splits | constant | " + " | ".join(systems) + (" | rungflow − ag-best (points) |" if vs_best else " |")
    lines += [head, "|" + "---|" * (4 + len(systems) + (1 if vs_best else 0))]
    for name, t in sorted(rep["tables"].items()):
        cells = []
        for s in systems:
            if s in t["scores"]:
                cells.append(f"{t['scores'][s]:.4f} ({rep['normalised'][name][s]:.2f})")
            else:
                cells.append("")
        extra = f" | {_shortfall(t, 'rungflow', 'ag-best')}" if vs_best else ""
        lines.append(f"| {name} | {t['task'][:5]} | {t['splits']} | {t['constant']:.4f} | " + " | ".join(cells) + extra + " |")
    lines += ["", "Score (normalised: constant predictor 0, best system 1). Accuracy for classification, R² for regression.", ""]
    lines += ["| system | mean normalised score | mean rank | CPU-hours | GPU-hours | mean wall s | runs |", "|---|---|---|---|---|---|---|"]
    for s in systems:
        sp = rep["spend"].get(s, {})
        rank = rep["mean_rank"].get(s)
        lines.append(f"| {s} | {rep['mean_normalised'].get(s, float('nan')):.3f} | {'' if rank is None else f'{rank:.2f}'} | "
                     f"{sp.get('cpu_hours', 0):.3f} | {sp.get('gpu_hours', 0):.3f} | {sp.get('wall_seconds', 0):.0f} | {sp.get('runs', 0)} |")
    lines += ["", f"Wins/ties/losses of the row's system against the column's, per table (tie: within {100 * rep['tie']:.1f} points):", ""]
    lines += ["| | " + " | ".join(systems) + " |", "|" + "---|" * (1 + len(systems))]
    for a in systems:
        cells = ["" if a == b else "/".join(map(str, rep["wins_ties_losses"].get(a, {}).get(b, ("", "", "")))) for b in systems]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    if rep["price_stop"]:
        lines += ["", "rungflow stopped at the price against the same run to the time limit:", "",
                  "| table | spend saved | points lost |", "|---|---|---|"]
        for name, p in sorted(rep["price_stop"].items()):
            lines.append(f"| {name} | {100 * p['saved']:.0f} % of {p['unit'].replace('_', '-')} | {p['points_lost']:+.2f} |")
    if rep.get("families"):
        lines += _family_lines(rep)
    if rep.get("portfolio"):
        lines += _portfolio_lines(rep)
    failed = [f"{name}: {f}" for name, t in sorted(rep["tables"].items()) for f in t["failed"]]
    if failed:
        lines += ["", "Failed runs (scored as the constant predictor): " + "; ".join(failed)]
    return "\n".join(lines)


def _family_lines(rep: Mapping[str, Any]) -> list[str]:
    """Each rungflow run's trials and spend, then where each system's trials and GPU-seconds went, by family."""
    lines = ["", "rungflow runs (trials started, GPU-hours billed, GPU-hours when the final best validation score was "
             "first reached, the saved model's family):", "",
             "| table | split | system | score | trials | GPU-hours | to best | CPU-hours | saved model |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rep["runs"], key=lambda r: (r["table"], r["split"], r["system"])):
        score = "failed" if r["score"] is None else f"{r['score']:.4f}"
        to_best = "" if r.get("gpu_hours_to_best") is None else f"{r['gpu_hours_to_best']:.4f}"
        lines.append(f"| {r['table']} | {r['split']} | {r['system']} | {score} | {r['trials']} | {r['gpu_hours']:.4f} | "
                     f"{to_best} | {r['cpu_hours']:.4f} | {r['family'] or ''} |")
    mix = rep["families"]
    names = sorted({n for m in mix.values() for n in m["families"]})
    lines += ["", "Share of trials / share of GPU-seconds per family, and in brackets the median GPU-seconds per budget "
              "unit of the family's trials (median over runs):", "",
              "| system | trials | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for s, m in mix.items():
        cells = []
        for n in names:
            f = m["families"].get(n)
            per_unit = "" if not f or f["gpu_seconds_per_unit"] is None else f" ({f['gpu_seconds_per_unit']:.3g})"
            cells.append("" if f is None else f"{100 * f['trial_share']:.0f} % / {100 * f['gpu_share']:.0f} %{per_unit}")
        lines.append(f"| {s} | {m['trials']} | " + " | ".join(cells) + " |")
    return lines


def _portfolio_lines(rep: Mapping[str, Any]) -> list[str]:
    """Each run that started from a portfolio: the verdict on its first rung, and whether the final best came from it."""
    runs = sorted(rep["portfolio"], key=lambda r: (r["table"], r["split"], r["system"]))
    kept = sum(r["verdict"] == "kept" for r in runs)
    best = sum(bool(r["best_from_portfolio"]) for r in runs)
    lines = ["", f"Portfolio runs: kept on {kept} of {len(runs)}, the final best from it on {best} (the verdict compares the "
             "portfolio's best with the best of the searcher's own draws on the first rung):", "",
             "| table | split | system | configs | verdict | portfolio best | searcher's best | final best from it |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda x: "" if x is None else f"{x:.4f}"  # noqa: E731
    for r in runs:
        lines.append(f"| {r['table']} | {r['split']} | {r['system']} | {r['configs']} | {r['verdict']} | "
                     f"{fmt(r['portfolio_best'])} | {fmt(r['cold_best'])} | {'yes' if r['best_from_portfolio'] else 'no'} |")
    return lines
