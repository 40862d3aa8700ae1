"""A history's results as a proposal density: a transfer model across earlier sweeps, mixed with the searcher's own
proposals by a share that follows this sweep's results.

The model (after Salinas, Shen & Perrone 2020, the quantile-based transfer searcher): each earlier sweep's trials
are ranked within that sweep (a trial that reached a higher rung above every trial the gate stopped earlier, by
score among equals, as :func:`rungflow.budgets.prior.utilities` ranks them) and the rank is mapped to a normal
quantile (a Gaussian copula), so sweeps whose scores live on different scales can be averaged. On each sweep a
kernel regression (Nadaraya–Watson, Gaussian kernel on the unit-scaled space) predicts a candidate's quantile;
the model's mean and spread are those predictions' mean and standard deviation across sweeps. A proposal is the
best of :data:`CANDIDATES` random candidates by a Thompson-like draw, mean + spread · ε, so the prior proposes
where the history agrees and explores where it does not.

Whether any earlier sweep speaks for this task (the ranking test of Feurer, Letham & Bakshy 2018, ranking-weighted
ensembles): each sweep's model is scored by how it ranks this sweep's own results, pairs of trials at the same
budget, as Kendall's τ, less one standard error of τ under no relation. Once :data:`MIN_PAIRS` pairs exist and no
sweep is above zero, the history ranks this task no better than chance, or backwards, and the prior's share is
zero. The scores do not weight the mean: weighting it, tried on the dev tasks, lost the gain three earlier sweeps
give (bench/pages/transfer.md).

The mix, after PriorBand (Mallik et al. 2023): each new trial comes from the prior with probability ``share`` and
from the wrapped searcher otherwise. The share starts at :data:`INITIAL_SHARE` and, before every proposal, is set
from this sweep's own results at the highest budget where both sources have at least :data:`MIN_RESULTS` results:
how often each source's trials are among the best third there. A misleading prior loses its share rung by rung as
its trials rank low at each higher budget, not once on one verdict. Every result of this sweep, the prior's trials
included, reaches the wrapped searcher's model: they are this task's own results.

Proposals and the share are a function of the seed and the calls made so far (results come in the ledger's order),
so a resumed sweep that replays its ledger makes the same proposals. Plain Python and numpy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rungflow.budgets.prior import PastSweep, _encode, config_key, last_results
from rungflow.budgets.searchers import Observation, Searcher
from rungflow.budgets.space import CategoricalParam, SearchSpace

__all__ = ["TransferModel", "TransferPriorSearcher", "ShareState", "transfer_data", "prior_share", "SweepRelevance",
           "INITIAL_SHARE", "MIN_RESULTS", "MAX_SHARE", "CANDIDATES", "BANDWIDTH", "MIN_PAIRS"]

# Random candidates the model ranks per proposal: enough to land near a sweep's good region in a handful of
# dimensions, few enough that a proposal costs milliseconds beside a history of a few thousand trials.
CANDIDATES = 512
# Kernel width on the unit-scaled space. Wider smooths one lucky trial into a region; narrower trusts single trials.
BANDWIDTH = 0.15
# PriorBand starts from its prior too; half the first bracket leaves the searcher's own draws their say.
INITIAL_SHARE = 0.5
# The searcher keeps at least a fifth of the slots however well the prior does: its model is this task's own.
MAX_SHARE = 0.8
# Results each source needs at a budget before that budget's ranking moves the share.
MIN_RESULTS = 3
# The best third at a budget (Hyperband's η = 3 survivors) is what a source is judged by.
TOP_FRACTION = 1.0 / 3.0
# Pairs of this sweep's results before the ranking test may silence the prior: five results at one budget. Fewer,
# and one unlucky pair decides that the history says nothing.
MIN_PAIRS = 10


def _quantiles(observations: Iterable[Observation], mode: str) -> tuple[list[dict[str, Any]], list[float]]:
    """Each trial at the highest budget it reached, and its rank in the sweep mapped to a normal quantile."""
    last = last_results(observations)
    sign = 1.0 if mode == "max" else -1.0
    ordered = sorted(last.values(), key=lambda o: (o.budget, sign * float(o.score)))  # type: ignore[arg-type]
    n = len(ordered)
    normal = statistics.NormalDist()
    return [dict(o.config) for o in ordered], [normal.inv_cdf((i + 0.5) / n) for i in range(n)]


def transfer_data(sweeps: Sequence[PastSweep], space: SearchSpace) -> list[dict[str, Any]]:
    """The history as the model reads it, JSON-ready: per earlier sweep, its configurations and their quantiles.

    Saved with the sweep's prior, so a resumed sweep fits the same model without reading the sources again."""
    out = []
    for sweep in sweeps:
        configs, z = _quantiles([o for o in sweep.observations if space.contains(o.config)], sweep.mode)
        if len(configs) >= MIN_RESULTS:
            out.append({"name": sweep.name, "configs": configs, "quantiles": z})
    return out


def _features(space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Numeric parameters on the unit scale, categorical ones one-hot scaled by 1/√2, so that one categorical
    mismatch adds 1 to a squared distance, as in the portfolio's nearest-neighbour distance."""
    x, cats = _encode(space, configs)
    columns = [x]
    for j, p in enumerate(q for q in space.params if isinstance(q, CategoricalParam)):
        values = [c[j] for c in cats]
        columns.append(np.array([[v == choice for choice in p.choices] for v in values], dtype=float).reshape(
            len(configs), len(p.choices)) / math.sqrt(2.0))
    return np.concatenate(columns, axis=1)


class TransferModel:
    """Per earlier sweep, a kernel regression of its quantiles; mean and spread across sweeps."""

    def __init__(self, space: SearchSpace, data: Sequence[Mapping[str, Any]], *, bandwidth: float = BANDWIDTH) -> None:
        self.space = space
        self.bandwidth = bandwidth
        self.sweeps = [(_features(space, d["configs"]), np.asarray(d["quantiles"], dtype=float)) for d in data]
        self.names = [str(d.get("name", i)) for i, d in enumerate(data)]

    def __len__(self) -> int:
        return len(self.sweeps)

    def predict_per_sweep(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Each earlier sweep's predicted quantile per configuration: configurations × sweeps."""
        cx = _features(self.space, configs)
        per_sweep = []
        for sx, z in self.sweeps:
            # |a - b|² = |a|² + |b|² - 2a·b: one matrix product instead of a candidates × trials × features array.
            d = np.maximum((cx ** 2).sum(axis=1)[:, None] + (sx ** 2).sum(axis=1)[None, :] - 2.0 * cx @ sx.T, 0.0)
            logw = -d / (2.0 * self.bandwidth ** 2)
            w = np.exp(logw - logw.max(axis=1, keepdims=True))  # stable: the nearest trial has weight 1
            per_sweep.append((w @ z) / w.sum(axis=1))
        return np.stack(per_sweep, axis=1)

    def predict(self, configs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quantile per configuration: mean across earlier sweeps, and their standard deviation."""
        stacked = self.predict_per_sweep(configs)
        return stacked.mean(axis=1), stacked.std(axis=1)

    def propose(self, rng: np.random.Generator, candidates: int = CANDIDATES) -> dict[str, Any]:
        """One configuration: the best of ``candidates`` random draws by mean + spread · ε (ε standard normal)."""
        drawn = [self.space.sample(rng) for _ in range(candidates)]
        mean, spread = self.predict(drawn)
        return drawn[int(np.argmax(mean + spread * rng.standard_normal(len(drawn))))]


@dataclass(frozen=True)
class ShareState:
    """The prior's share and why: the budget it was read at, and each source's trials there and in its best third."""

    share: float
    reason: str
    budget: float | None = None
    prior_results: int = 0
    prior_top: int = 0
    own_results: int = 0
    own_top: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prior_share(results: Mapping[float, Mapping[str, Sequence[float | None]]], mode: str, *,
                initial: float = INITIAL_SHARE, min_results: int = MIN_RESULTS,
                max_share: float = MAX_SHARE) -> ShareState:
    """The prior's share from ``results[budget][source]`` (source ``prior`` or ``own``; None: failed).

    At the highest budget where both sources have ``min_results``, the best third of all results there is taken;
    each source's rate is how many of its trials are in it (plus a half, so one trial more or less does not swing
    it to 0 or 1) over its trials plus one; the share is the prior's rate over the sum, capped at ``max_share``."""
    sign = 1.0 if mode == "max" else -1.0
    for budget in sorted(results, reverse=True):
        by_source = results[budget]
        prior, own = list(by_source.get("prior", ())), list(by_source.get("own", ()))
        if len(prior) < min_results or len(own) < min_results:
            continue
        ranked = sorted([(s, "prior") for s in prior] + [(s, "own") for s in own],
                        key=lambda r: -math.inf if r[0] is None or not math.isfinite(r[0]) else sign * r[0],
                        reverse=True)
        top = ranked[:max(1, math.ceil(TOP_FRACTION * len(ranked)))]
        prior_top = sum(src == "prior" for _, src in top)
        own_top = len(top) - prior_top
        prior_rate = (prior_top + 0.5) / (len(prior) + 1)
        own_rate = (own_top + 0.5) / (len(own) + 1)
        share = min(max_share, prior_rate / (prior_rate + own_rate))
        return ShareState(share, f"at budget {budget:g}, {prior_top} of the prior's {len(prior)} trials and {own_top} "
                                 f"of the searcher's {len(own)} are in the best third", budget, len(prior), prior_top,
                          len(own), own_top)
    return ShareState(min(initial, max_share), f"fewer than {min_results} results of each source at any budget yet")


class SweepRelevance:
    """How well each earlier sweep ranks this sweep's results, read as they arrive.

    Within each budget every pair of results is concordant (+1) when a sweep predicts the better one higher,
    discordant (−1) when lower, else 0 (a failed result ranks last; two failures tie). A sweep's τ is the mean over all
    pairs; its score is τ less the standard error τ would have with no relation, at least 0. Pairs are counted as
    each result arrives, so a sweep of a thousand results costs a thousand small sums, not a million-pair recount."""

    def __init__(self, sweeps: int, mode: str) -> None:
        self.sign = 1.0 if mode == "max" else -1.0
        self.total = np.zeros(sweeps)
        self.pairs = 0
        self._by_budget: dict[float, tuple[list[float], list[np.ndarray]]] = {}

    def add(self, score: float | None, budget: float, predicted: np.ndarray) -> None:
        signed = -math.inf if score is None or not math.isfinite(score) else self.sign * float(score)
        scores, rows = self._by_budget.setdefault(float(budget), ([], []))
        if scores:
            diff = signed - np.asarray(scores)
            observed = np.nan_to_num(np.sign(diff))  # -inf - -inf: two failures tie
            self.total += observed @ np.sign(predicted[None, :] - np.stack(rows))
            self.pairs += len(scores)
        scores.append(signed)
        rows.append(np.asarray(predicted, dtype=float))

    def scores(self) -> np.ndarray:
        if self.pairs == 0:
            return np.ones(len(self.total))
        # Kendall's τ over n items with no relation has variance 2(2n + 5) / (9n(n − 1)); budgets pooled by pairs.
        variance = sum((n * (n - 1) / 2) ** 2 * 2.0 * (2 * n + 5) / (9.0 * n * (n - 1))
                       for n in (len(v[0]) for v in self._by_budget.values()) if n >= 2)
        return np.maximum(self.total / self.pairs - math.sqrt(variance) / self.pairs, 0.0)


class TransferPriorSearcher(Searcher):
    """Wraps the sweep's searcher (composition, as Ray Tune's ``ConcurrencyLimiter``): each new trial comes from the
    transfer model with probability :attr:`share`, else from the searcher, which sees every result.

    ``portfolio``: the history's portfolio configurations, run beside both by
    :class:`rungflow.budgets.prior_guard.PriorGuardSearcher`; their results count for neither source."""

    def __init__(self, inner: Searcher, model: TransferModel, *, initial_share: float = INITIAL_SHARE,
                 max_share: float = MAX_SHARE, portfolio: Iterable[Mapping[str, Any]] = ()) -> None:
        super().__init__(inner.space, seed=inner.seed, mode=inner.mode, max_budget=inner.max_budget)
        self.inner = inner
        self.name = inner.name
        self.model = model
        self.initial_share = initial_share
        self.max_share = max_share
        # Streams of their own: which source fills a slot, and the prior's candidates, never move the searcher's.
        self._mix_rng = np.random.default_rng([self.seed, 2731])
        self._prior_rng = np.random.default_rng([self.seed, 2732])
        self._prior_keys: set[tuple[tuple[str, str], ...]] = set()
        self._portfolio_keys = {config_key(c) for c in portfolio}
        self._trial_source: dict[str, str] = {}  # trial id -> the source that proposed it, once it has a result
        self._results: dict[float, dict[str, dict[str, float | None]]] = {}
        # Every result of this sweep, the portfolio's included, once per trial and budget: what the ranking test reads.
        self._relevance = SweepRelevance(len(model), self.mode)
        self._weighed: set[tuple[str, float]] = set()
        self.state = ShareState(min(initial_share, max_share), "no result yet") if len(model) else \
            ShareState(0.0, "the history holds no sweep the model can fit on")
        self.share_trajectory: list[float] = []

    @property
    def share(self) -> float:
        return self.state.share

    def warm_start(self, observations: Iterable[Observation] = (), enqueue: Iterable[Mapping[str, Any]] = ()) -> None:
        self.inner.warm_start(observations, enqueue)

    def forget_prior(self, observation_ids: Iterable[str], enqueued: Iterable[Mapping[str, Any]]) -> None:
        self.inner.forget_prior(observation_ids, enqueued)

    def suggest(self, count: int) -> list[dict[str, Any]]:
        self._update_share()
        from_prior = [bool(self._mix_rng.random() < self.share) for _ in range(count)] if len(self.model) else [False] * count
        own = iter(self.inner.suggest(count - sum(from_prior)))
        out = []
        for prior in from_prior:
            if prior:
                config = self.model.propose(self._prior_rng)
                self._prior_keys.add(config_key(config))
                out.append(config)
            else:
                config = next(own, None)
                if config is not None:
                    out.append(config)
        return out

    def observe(self, observation: Observation) -> None:
        self.observations.append(observation)
        self.inner.observe(observation)
        slot = (observation.trial_id, observation.budget)
        if len(self.model) and slot not in self._weighed:
            self._weighed.add(slot)
            self._relevance.add(observation.score, observation.budget,
                                self.model.predict_per_sweep([observation.config])[0])
        key = config_key(observation.config)
        if key in self._portfolio_keys:
            return
        source = "prior" if key in self._prior_keys else "own"
        self._trial_source[observation.trial_id] = source
        by_source = self._results.setdefault(observation.budget, {}).setdefault(source, {})
        by_source[observation.trial_id] = observation.score

    def _update_share(self) -> None:
        if not len(self.model):
            return
        results = {b: {s: list(scores.values()) for s, scores in by.items()} for b, by in self._results.items()}
        if self._relevance.pairs >= MIN_PAIRS and not self._relevance.scores().any():
            self.state = ShareState(0.0, f"no earlier sweep ranks this sweep's {self._relevance.pairs} pairs of "
                                         "results better than chance")
        else:
            self.state = prior_share(results, self.mode, initial=self.initial_share, max_share=self.max_share)
        self.share_trajectory.append(round(self.state.share, 4))

    def report(self) -> dict[str, Any]:
        """What the model prior did, for result.json: the trials with a result it proposed, the searcher's (a
        proposal displaced by the portfolio never ran), and the last share and why."""
        sources = list(self._trial_source.values())
        return {"sweeps": len(self.model), "trials_from_prior": sources.count("prior"),
                "trials_from_searcher": sources.count("own"), **self.state.to_json(),
                "share_first": self.share_trajectory[0] if self.share_trajectory else None,
                "share_min": min(self.share_trajectory, default=None),
                "sweep_ranking": {name: round(float(w), 4) for name, w in zip(self.model.names, self._relevance.scores())},
                "relevance_pairs": self._relevance.pairs}
