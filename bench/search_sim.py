"""Hyperband sweeps replayed in-process on the LCBench surrogate: the search diagnosed in seconds.

The flow's synchronous driver (``flows/sweep.py::Sweep.run_synchronous``) reduced to its decisions:
per bracket the searcher proposes ``n`` configurations, every rung trains its trials to the rung's
budget (a promoted trial resumes, so it is billed the surrogate's time since its last epoch), the
gate keeps the top ``⌊n/η^i⌋`` (:func:`budgets.schedulers.gate_rung`) and every result is told to the
searcher in trial-id order, as ``promote_survivors`` does. Same proposals, same billing, no Prefect:
a 8-iteration sweep takes about a second, so a search design can be judged on many instances.

Also here: the honest reference (:func:`reference`), the expected best of 128 random full-budget
configurations from a large pool, and the rank correlation between consecutive rungs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import LCBENCH_MAX_EPOCH

__all__ = ["BracketStudies", "Curves", "Reference", "SimRun", "reference", "simulate", "spearman", "expected_max_of_k"]

POOL_SIZE = 4096  # random full-budget configurations behind the reference
REFERENCE_TRIALS = 128
PREFETCH_CHUNK = 64  # configurations per surrogate call (64 × 52 rows)


class Curves:
    """Whole learning curves (accuracy and cumulative seconds at epochs 1..52) of one instance, cached.

    The trainable queries the surrogate one (config, epoch) at a time; here one ONNX call answers all
    52 epochs of many configurations at once (the same model, inputs and output columns).
    """

    def __init__(self, instance: str) -> None:
        from rungflow.tasks.trainables.lcbench_surrogate import CONT_NAMES
        from rungflow.tasks.trainables.yahpo_lcbench import LCBenchTrainable, _yahpo_config

        self.instance = str(instance)
        self.trainable = LCBenchTrainable({"instance": self.instance})
        self.space = self.trainable.default_space()
        self._surrogate = self.trainable._bset()
        self._names = CONT_NAMES
        self._to_yahpo = _yahpo_config
        self._cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    @staticmethod
    def key(config: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(sorted(config.items()))

    def prefetch(self, configs: Sequence[Mapping[str, Any]]) -> None:
        todo = [c for c in configs if self.key(c) not in self._cache]
        if not todo:
            return
        epochs = np.arange(1, LCBENCH_MAX_EPOCH + 1, dtype=np.float32)
        rows = []
        for c in todo:
            y = self._to_yahpo(c)
            base = [float(y[n]) if n != "epoch" else 0.0 for n in self._names]
            block = np.tile(np.array(base, dtype=np.float32), (len(epochs), 1))
            block[:, self._names.index("epoch")] = epochs
            rows.append(block)
        # In chunks: onnxruntime's CPU arena keeps its peak allocation for the session's life, and one
        # 4,096-configuration pool in one call (213k rows) grew it by ~2 GB per instance, held by the
        # cached session of every instance a bench touched (22 GB over 11 instances).
        s = self._surrogate
        parts = []
        for i in range(0, len(rows), PREFETCH_CHUNK):
            x = np.concatenate(rows[i : i + PREFETCH_CHUNK])
            cat = np.repeat(s._instance_code, len(x), axis=0)
            parts.append(s._session.run([s._output], {s._cat_input: cat, s._cont_input: x})[0])
        out = np.concatenate(parts).reshape(len(todo), len(epochs), -1)
        for c, o in zip(todo, out):
            # Column 0 is "time", 1 "val_accuracy" (lcbench_surrogate.Y_NAMES).
            self._cache[self.key(c)] = (o[:, 1].astype(float), np.maximum.accumulate(o[:, 0].astype(float)))

    def curve(self, config: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy, cumulative seconds), index e − 1 for epoch e; time clamped non-decreasing as billing is."""
        k = self.key(config)
        if k not in self._cache:
            self.prefetch([config])
        return self._cache[k]

    max_budget: float = LCBENCH_MAX_EPOCH
    resumes = True

    def train(self, config: Mapping[str, Any], budget: float, state: tuple[int, float]) -> tuple[float, float, tuple[int, float]]:
        """(accuracy, seconds billed, new state) for training ``config`` on to ``budget`` epochs from
        ``state`` = (epoch reached, cumulative seconds): a promoted trial resumes, so it pays only the
        surrogate's time since its last epoch."""
        acc, sec = self.curve(config)
        epoch = int(round(budget))
        elapsed = max(sec[epoch - 1], state[1])
        return float(acc[epoch - 1]), elapsed - state[1], (epoch, elapsed)


@functools.lru_cache(maxsize=64)
def curves(instance: str) -> Curves:
    return Curves(str(instance))


def expected_max_of_k(values: Sequence[float], k: int) -> float:
    """E[max of k drawn without replacement from ``values``], exactly: the i-th smallest of N is the max
    with probability C(i − 1, k − 1) / C(N, k)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be within [1, {n}]")
    i = np.arange(1, n + 1)
    logw = np.full(n, -np.inf)
    ok = i >= k
    from math import lgamma

    def lcomb(a: np.ndarray, b: int) -> np.ndarray:
        return np.array([lgamma(v + 1) - lgamma(b + 1) - lgamma(v - b + 1) for v in a])

    logw[ok] = lcomb(i[ok] - 1, k - 1) - lgamma(n + 1) + lgamma(k + 1) + lgamma(n - k + 1)
    return float(np.sum(np.exp(logw) * x))


@dataclass(frozen=True)
class Reference:
    """Random-128 in expectation: E[best at 52 epochs] and E[GPU-hours] over draws from a pool."""

    instance: str
    expected_best: float  # E[B]
    expected_gpu_hours: float  # E[G] = 128 × mean full-budget GPU-hours
    draw_std: float  # std of one draw's B (Monte Carlo over 2,000 draws)
    pool_best: float
    pool: int
    pool_accuracy: tuple[float, ...] = field(default=(), repr=False)  # every pool configuration's, at the full budget


@functools.lru_cache(maxsize=64)
def reference(instance: str, pool: int = POOL_SIZE, k: int = REFERENCE_TRIALS) -> Reference:
    """The pool is drawn with a seed of its own (not any search seed), so no run shares its configurations."""
    c = curves(instance)
    rng = np.random.default_rng(10_007)
    configs = [c.space.sample(rng) for _ in range(pool)]
    c.prefetch(configs)
    acc = np.array([c.curve(x)[0][-1] for x in configs])
    sec = np.array([c.curve(x)[1][-1] for x in configs])
    draws = [np.max(rng.choice(acc, size=k, replace=False)) for _ in range(2000)]
    return Reference(str(instance), expected_max_of_k(acc, k), k * float(np.mean(sec)) / 3600.0,
                     float(np.std(draws)), float(acc.max()), pool, tuple(acc.tolist()))


def one_draw(instance: str, seed: int, k: int = REFERENCE_TRIALS) -> tuple[float, float]:
    """(B, G) of the random-128 the compare bench runs for ``seed``: RandomSearcher(seed).suggest(128) at 52 epochs."""
    from rungflow.budgets.searchers import RandomSearcher

    c = curves(instance)
    configs = RandomSearcher(c.space, seed=seed).suggest(k)
    c.prefetch(configs)
    return (max(c.curve(x)[0][-1] for x in configs), sum(c.curve(x)[1][-1] for x in configs) / 3600.0)


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None below 3 pairs or with a constant side."""
    if len(a) < 3:
        return None
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties share their mean rank
        m = x == v
        if m.sum() > 1:
            r[m] = r[m].mean()
    return r


# --- the sweep ----------------------------------------------------------------------------------------
@dataclass
class SimRun:
    """One simulated sweep: its results in billing order (flow-shaped events) and the trials' configs."""

    instance: str
    seed: int
    method: str
    events: list[dict[str, Any]] = field(default_factory=list)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    trial_bracket: dict[str, int] = field(default_factory=dict)
    bracket_s: dict[int, int] = field(default_factory=dict)
    gpu_hours: float = 0.0
    stop_reason: str = "schedule_complete"
    max_budget: float = LCBENCH_MAX_EPOCH

    def curve(self) -> list[tuple[float, float, str]]:
        """Full-budget incumbent steps (GPU-hours, true accuracy, trial id), judged on the reported score."""
        best_reported, out = -math.inf, []
        for e in self.events:
            if e["budget"] == self.max_budget and e["score"] > best_reported:
                best_reported = e["score"]
                out.append((e["cumulative_gpu_hours"], e["clean"], e["trial_id"]))
        return out


Stop = Callable[["SimRun", int, int], bool]


def simulate(instance: str, searcher: Any, *, seed: int, method: str, iterations: int = 8, eta: float = 3,
             cap_gpu_hours: float | None = None, noise_std: float = 0.0, stop: Stop | None = None,
             brackets: Sequence[Any] | Callable[[SimRun], Any] | None = None, source: Any = None) -> SimRun:
    """Run Hyperband(1..max budget, η) with ``searcher`` as the flow does; ``cap_gpu_hours`` is checked
    before every stage as the controller's hard cap is, ``stop(run, bracket, rung)`` likewise.

    ``source`` trains and bills (``prefetch``, ``train``, ``max_budget``, ``initial_state``): the
    instance's LCBench curves by default, or a family whose budget is not epochs
    (:mod:`bench.fraction_family`)."""
    from rungflow.budgets.rungs import hyperband_plan
    from rungflow.budgets.schedulers import TrialScore, gate_rung
    from rungflow.budgets.searchers import Observation
    from rungflow.tasks.trainables.yahpo_lcbench import _seed, synthetic_noise

    c = source if source is not None else curves(instance)
    run = SimRun(str(instance), seed, method, max_budget=float(c.max_budget))
    if callable(brackets):  # a policy choosing each bracket from the run so far
        plan: Any = brackets(run)
    else:
        plan = list(brackets) if brackets is not None else hyperband_plan(1, c.max_budget, eta, iterations=iterations)
    spent = 0.0
    for bracket in plan:
        run.bracket_s[bracket.index] = bracket.s
        if _halt(run, spent, cap_gpu_hours, stop, bracket.index, 0):
            break
        if hasattr(searcher, "start_bracket"):  # one study per bracket (:class:`BracketStudies`)
            searcher.start_bracket(bracket.s)
        configs = searcher.suggest(bracket.rungs[0].num_trials)
        c.prefetch(configs)
        alive = []
        for config in configs:
            tid = f"t{len(run.configs):04d}"
            run.configs[tid] = dict(config)
            run.trial_bracket[tid] = bracket.index
            alive.append(tid)
        at: dict[str, Any] = {t: (0, 0.0) for t in alive}  # the source's training state: (budget reached, seconds)
        reached: dict[str, float] = {t: 0.0 for t in alive}
        stopped = False
        for position, rung in enumerate(bracket.rungs):
            if position > 0 and _halt(run, spent, cap_gpu_hours, stop, bracket.index, rung.index):
                stopped = True
                break
            epoch = int(round(rung.budget))
            observations, scores = [], []
            for tid in alive:
                # A family that cannot resume (budget = training-set share) trains each rung from scratch.
                e0 = reached[tid] if getattr(c, "resumes", True) else 0.0
                clean, billed, at[tid] = c.train(run.configs[tid], float(epoch), at[tid])
                reached[tid] = float(epoch)
                score = synthetic_noise(clean, noise_std, _seed(seed, tid, epoch)) if noise_std > 0 else clean
                spent += billed
                run.events.append({"trial_id": tid, "bracket": bracket.index, "rung": rung.index, "budget": float(epoch),
                                   "score": score, "clean": clean, "status": "completed", "gpu_seconds": billed,
                                   "budget_trained": epoch - e0, "cumulative_gpu_hours": spent / 3600.0})
                cost = billed / (epoch - e0) if epoch > e0 and billed > 0 else None
                observations.append(Observation(tid, run.configs[tid], float(epoch), score, cost=cost))
                scores.append(TrialScore(tid, score))
            last = position == len(bracket.rungs) - 1
            keep = 0 if last else bracket.rungs[position + 1].num_trials
            decision = gate_rung(scores, keep, "max")
            for obs in sorted(observations, key=lambda o: o.trial_id):
                searcher.observe(obs)
            alive = list(decision.promote)
            if not alive:
                break
        if stopped:
            break
    run.gpu_hours = spent / 3600.0
    return run


def _halt(run: SimRun, spent_seconds: float, cap_gpu_hours: float | None, stop: Stop | None, bracket: int, rung: int) -> bool:
    """Checked before every stage, as the controller is: the hard cap first, then the stop rule."""
    if cap_gpu_hours is not None and spent_seconds / 3600.0 >= cap_gpu_hours:
        run.stop_reason = "max_gpu_hours"
        return True
    if stop is not None and stop(run, bracket, rung):
        run.stop_reason = "stop_rule"
        return True
    return False


# --- diagnosis ----------------------------------------------------------------------------------------
def promoted_rank_correlation(run: SimRun) -> dict[tuple[float, float], float | None]:
    """Spearman between the scores at one rung and the next, over the trials promoted to the next rung,
    pooled over the sweep's brackets: how well a rung ranks the trials it lets through."""
    # Within a bracket the promoted set is the top of the lower rung; pooled across brackets it still is.
    return {k: spearman(*v) for k, v in sorted(_consecutive_rung_pairs(run).items())}


def _consecutive_rung_pairs(run: SimRun) -> dict[tuple[float, float], tuple[list[float], list[float]]]:
    """(scores at the lower budget, scores at the next) of every trial measured at both, per budget pair."""
    by: dict[str, dict[float, float]] = {}
    for e in run.events:
        by.setdefault(e["trial_id"], {})[e["budget"]] = e["score"]
    pairs: dict[tuple[float, float], tuple[list[float], list[float]]] = {}
    for scores in by.values():
        budgets = sorted(scores)
        for lo, hi in zip(budgets, budgets[1:]):
            a, b = pairs.setdefault((lo, hi), ([], []))
            a.append(scores[lo])
            b.append(scores[hi])
    return pairs


def pool_rank_correlation(instance: str, budgets: Sequence[int] = (2, 6, 17, 52), top: float = 1.0) -> dict[str, float | None]:
    """Spearman between consecutive rungs over the reference pool (all, or its top share by the lower rung)."""
    c = curves(instance)
    rng = np.random.default_rng(10_007)
    configs = [c.space.sample(rng) for _ in range(POOL_SIZE)]
    c.prefetch(configs)
    acc = np.array([c.curve(x)[0] for x in configs])
    out = {}
    for lo, hi in zip(budgets, budgets[1:]):
        a, b = acc[:, lo - 1], acc[:, hi - 1]
        if top < 1.0:
            keep = a >= np.quantile(a, 1.0 - top)
            a, b = a[keep], b[keep]
        out[f"{lo}->{hi}"] = spearman(a, b)
    return out


# --- a bracket policy that distrusts misleading rungs (tried; see bench/pages/robust-search.md) ------------------
def expected_max_normal(n: int) -> float:
    """E[max of n independent standard normals], by quadrature."""
    from math import erf, pi, sqrt

    z = np.linspace(-8.0, 8.0, 4001)
    cdf = 0.5 * (1.0 + np.vectorize(erf)(z / sqrt(2.0)))
    pdf = np.exp(-z * z / 2.0) / sqrt(2.0 * pi)
    return float(np.trapezoid(z * n * pdf * cdf ** (n - 1), z))


def rung_trust_policy(max_budget: float, eta: float = 3, *, iterations: int = 40, min_pairs: int = 5) -> Callable[[SimRun], Any]:
    """Hyperband whose brackets after the first iteration run only where their rungs have been seen to rank.

    A bracket's reliability R_s is the product of the Spearman correlations (floored at 0) between the
    consecutive rungs it passes through, measured on the sweep's own promoted trials (pooled over brackets,
    a pair counted from ``min_pairs`` trials on). Under a Gaussian chain that product is the correlation
    between the bracket's entry rung and the full budget, and picking the best of n by a proxy of
    correlation R buys R·E[max of n] standard deviations. A bracket s > 0 runs only if that, per budget
    unit it costs, is at least what the full-budget bracket buys per unit: no constant to tune.
    """
    from rungflow.budgets.rungs import bracket_plan, max_bracket_index

    def policy(run: SimRun) -> Any:
        s_max = max_bracket_index(1, max_budget, eta)

        def plan(s: int, index: int) -> Any:
            return bracket_plan(s, s_max, min_budget=1, max_budget=max_budget, eta=eta, integer=True, index=index)

        full = plan(0, 0)
        full_value = expected_max_normal(full.num_trials) / full.budget_units()
        index = 0
        for iteration in range(iterations):
            rho = _consecutive_rung_rho(run, min_pairs) if iteration else {}
            for s in range(s_max, -1, -1):
                b = plan(s, index)
                if s > 0 and iteration:
                    budgets = [r.budget for r in b.rungs]
                    reliability = float(np.prod([max(rho.get((lo, hi), 1.0), 0.0) for lo, hi in zip(budgets, budgets[1:])]))
                    if reliability * expected_max_normal(b.num_trials) / b.budget_units() < full_value:
                        continue
                yield b
                index += 1

    return policy


def _consecutive_rung_rho(run: SimRun, min_pairs: int) -> dict[tuple[float, float], float]:
    """The promoted trials' rank correlations, only where ``min_pairs`` trials back them."""
    out = {}
    for k, (a, b) in _consecutive_rung_pairs(run).items():
        r = spearman(a, b)
        if r is not None and len(a) >= min_pairs:
            out[k] = r
    return out


class BracketStudies:
    """Optuna's HyperbandPruner trick: every bracket s is a study of its own. The searcher proposing for
    bracket s has only seen the trials of earlier brackets with the same s, so a bracket whose low rungs
    mislead cannot steer the proposals of the brackets that start higher.

    ``make(seed)`` builds one searcher; bracket s gets seed ``seed * 16 + s``. :func:`simulate` tells a
    bracket's results before it starts the next bracket, so they go to the study of the bracket being run.
    """

    def __init__(self, make: Callable[[int], Any], seed: int) -> None:
        self._make, self._seed = make, seed
        self._by_s: dict[int, Any] = {}
        self._current: Any = None

    def start_bracket(self, s: int) -> None:
        if s not in self._by_s:
            self._by_s[s] = self._make(self._seed * 16 + s)
        self._current = self._by_s[s]

    def suggest(self, n: int) -> list[dict[str, Any]]:
        return self._current.suggest(n)

    def observe(self, observation: Any) -> None:
        self._current.observe(observation)
