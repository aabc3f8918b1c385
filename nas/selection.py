"""Latency-aware candidate selection: train only what can move the front.

Latency does not depend on the weights: it is known (measured, cached, looked up or predicted)
before anything is trained, while accuracy costs a training. So for each trial this strategy

1. draws K candidates: random points of the space and mutations (one or two choices changed) of
   the current front's members, leaving out every architecture the study has already seen;
2. gets their latencies cheaply: the latency model's predictions where one is fitted, then a real
   measurement for the few best (every latency of a table);
3. predicts their accuracy with an uncertainty from the finished trials: a Gaussian process over
   the architecture's choices (exponentiated Hamming kernel; hyperparameters by marginal
   likelihood on a small grid);
4. evaluates only the candidate with the highest expected hypervolume improvement (EHVI). With
   latency known, the improvement is piecewise linear in accuracy along the front's staircase, so
   its expectation under the Gaussian prediction has a closed form.

Before `startup_trials` trials have finished, candidates are drawn at random (as TPE's start-up).
It runs as an Optuna sampler: the study, its storage, enqueued trials and resumption behave as
with any other strategy. References: expected hypervolume improvement (Emmerich et al., 2006);
regularized evolution's mutations (Real et al., arXiv:1802.01548); BANANAS' surrogate-guided
candidate pools (White et al., arXiv:1910.11858).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.samplers import BaseSampler, RandomSampler

from results.record import TrialRecord

log = logging.getLogger(__name__)


# -- the surrogate ---------------------------------------------------------------------------


class HammingGP:
    """Gaussian-process regression on categorical vectors: k(x, x') = s^2 exp(-d(x, x') / l),
    d = the number of differing choices. Targets are standardised; l and the noise are chosen by
    the log marginal likelihood over a small grid."""

    LENGTHS = (1.0, 2.0, 4.0, 8.0, 16.0)
    NOISES = (1e-3, 1e-2, 0.05, 0.2)

    def __init__(self, x: np.ndarray, y: np.ndarray, *, hyper: tuple[float, float] | None = None):
        """`hyper` = (length, noise) skips the grid (a caller may refresh it only now and then)."""
        self.x = np.asarray(x)
        y = np.asarray(y, dtype=np.float64)
        self.mean, self.scale = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mean) / self.scale
        distances = _hamming(self.x, self.x)
        best = None
        for length in (hyper[0],) if hyper else self.LENGTHS:
            kernel = np.exp(-distances / length)
            for noise in (hyper[1],) if hyper else self.NOISES:
                try:
                    chol = np.linalg.cholesky(kernel + noise * np.eye(len(z)))
                except np.linalg.LinAlgError:
                    continue
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
                evidence = -0.5 * z @ alpha - np.sum(np.log(np.diag(chol)))
                if best is None or evidence > best[0]:
                    best = (evidence, length, noise, chol, alpha)
        if best is None:  # the given hyperparameters failed: search the grid
            self.__init__(x, y)
            return
        _, self.length, self.noise, self._chol, self._alpha = best

    @property
    def hyper(self) -> tuple[float, float]:
        return self.length, self.noise

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (of the latent function, in the targets' units)."""
        cross = np.exp(-_hamming(np.asarray(x), self.x) / self.length)
        mean = cross @ self._alpha
        v = np.linalg.solve(self._chol, cross.T)
        variance = np.clip(1.0 - np.sum(v * v, axis=0), 1e-12, None)
        return self.mean + self.scale * mean, self.scale * np.sqrt(variance)


class LatencyTrendGP:
    """Accuracy = a quadratic trend in log latency + a Hamming GP on the residual. Latency is
    known before training, and larger (slower) networks tend to be more accurate: the trend
    carries that, the GP what the choices add at equal latency. Measured on NAS-Bench-201 with 20
    random training points, the rank correlation of predictions among the better half rose from
    0.32 to 0.37-0.41 (Pixel 3, Raspberry Pi 4)."""

    def __init__(self, x: np.ndarray, latencies_ms: np.ndarray, y: np.ndarray, *, hyper=None):
        design = self._design(latencies_ms)
        self.coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
        self.gp = HammingGP(x, y - design @ self.coefficients, hyper=hyper)

    @staticmethod
    def _design(latencies_ms: np.ndarray) -> np.ndarray:
        log_latency = np.log(np.asarray(latencies_ms, dtype=np.float64))
        return np.stack([np.ones_like(log_latency), log_latency, log_latency**2], axis=1)

    def predict(self, x: np.ndarray, latencies_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.gp.predict(x)
        return mean + self._design(latencies_ms) @ self.coefficients, std


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a[:, None, :] != b[None, :, :], axis=2).astype(np.float64)


# -- expected hypervolume improvement with a known latency ----------------------------------


def expected_improvement(
    latency_ms: float, mean: float, std: float, front: list[tuple[float, float]], *, reference: tuple[float, float]
) -> float:
    """E[HV(front + (latency, a)) - HV(front)] for a ~ N(mean, std^2), maximising accuracy and
    minimising latency inside `reference` = (accuracy, latency). `front` holds (latency, accuracy)."""
    ref_accuracy, ref_latency = reference
    if latency_ms >= ref_latency:
        return 0.0
    inside = sorted((lat, acc) for lat, acc in front if lat < ref_latency)
    # the best accuracy the front already guarantees at each latency from the candidate's onwards
    breaks = [latency_ms] + [lat for lat, _ in inside if lat > latency_ms] + [ref_latency]
    total = 0.0
    for start, end in itertools.pairwise(breaks):
        floor = max([ref_accuracy] + [acc for lat, acc in inside if lat <= start])
        total += (end - start) * _expected_excess(mean, std, floor)
    return total


def _expected_excess(mean: float, std: float, floor: float) -> float:
    """E[max(0, a - floor)] for a ~ N(mean, std^2)."""
    if std <= 1e-12:
        return max(0.0, mean - floor)
    z = (mean - floor) / std
    return (mean - floor) * 0.5 * math.erfc(-z / math.sqrt(2)) + std * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def pareto_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated (latency, accuracy) points, by latency (one sweep after sorting)."""
    front, best = [], -math.inf
    for latency, accuracy in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


# -- the strategy as an Optuna sampler -------------------------------------------------------


HYPER_EVERY = 10  # finished trials between two searches of the GP's hyperparameter grid


@dataclass(frozen=True)
class Selection:
    params: dict
    candidates_measured: int
    predicted_accuracy: float | None


class LatencyAwareSampler(BaseSampler):
    """See the module docstring. `space` gives the choices and turns parameters into candidates;
    `evaluator` gives latencies (`latency`, `predicted_latency`, `cheap_latency`)."""

    def __init__(
        self,
        *,
        space,
        evaluator,
        seed: int | None = None,
        candidates: int = 64,
        measured_per_trial: int = 4,
        startup_trials: int = 10,
        mutation_share: float = 0.9,
        exploration: float = 1.0,
        tpe_candidates: int = 32,
    ):
        self.space = space
        self.evaluator = evaluator
        self.candidates = candidates
        self.measured_per_trial = measured_per_trial
        self.startup_trials = startup_trials
        self.mutation_share = mutation_share
        self.exploration = exploration  # scales the surrogate's uncertainty (0: greedy on its mean)
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        # TPE's density model proposes too (its own proposals are good; the selection adds what latency tells)
        self.tpe_candidates = tpe_candidates
        self._tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials)
        self._distributions = {
            name: optuna.distributions.CategoricalDistribution(list(choices)) for name, choices in space.choices().items()
        }
        self._choices = space.choices()
        self._selected: dict[int, Selection] = {}
        self._hyper: tuple[float, float] | None = None  # the GP's, re-chosen every HYPER_EVERY new trials
        self._hyper_fitted_on = 0

    # Optuna's sampler interface: everything is decided in before_trial.
    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        selection = self._selected.get(trial.number)
        if selection is not None and param_name in selection.params:
            return selection.params[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        # an enqueued trial (seed, retry) or one Optuna re-created after its worker died keeps its parameters
        if "fixed_params" in trial.system_attrs or trial.params:
            return
        selection = self.select(study, trial)
        self._selected[trial.number] = selection
        # the selection's own bookkeeping, on the trial (as NSGA-II records its generation)
        record = TrialRecord(candidates_measured=selection.candidates_measured, predicted_accuracy=selection.predicted_accuracy)
        for key, value in record.to_user_attrs().items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)

    def after_trial(self, study, trial, state, values) -> None:
        self._selected.pop(trial.number, None)

    # The selection itself.
    def select(self, study, trial=None) -> Selection:
        from nas.strategies import known_arch_ids

        trials = study.get_trials(deepcopy=False)
        seen = known_arch_ids(study, self.space)
        finished = [
            (t.params, TrialRecord.from_trial(t))
            for t in trials
            if t.state == optuna.trial.TrialState.COMPLETE and TrialRecord.from_trial(t).accuracy is not None
        ]
        finished = [(p, r) for p, r in finished if r.latency_median_ms is not None and set(p) == set(self._choices)]
        if len(finished) < self.startup_trials:
            return Selection(self._unseen_random(seen), 0, None)

        points = [(r.latency_median_ms, r.accuracy) for _, r in finished]
        # The region that matters: the better half of what was found. Its front is mutated, and
        # improvements are measured inside its box (accuracy above the median, latency up to
        # 1.1 x the slowest of the better half): a fast model of chance accuracy improves nothing.
        floor = float(np.median([acc for _, acc in points]))
        better = [(lat, acc) for lat, acc in points if acc >= floor]
        reference = (floor, 1.1 * max(lat for lat, _ in better))
        front = pareto_points(better)
        on_front = set(front)
        front_params = [p for (p, r) in finished if (r.latency_median_ms, r.accuracy) in on_front]
        proposals = []
        if trial is not None and self.tpe_candidates:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                proposals = [self._tpe.sample_relative(study, trial, self._distributions) for _ in range(self.tpe_candidates)]
        pool = self._pool(front_params, seen, proposals=[p for p in proposals if p])
        if not pool:
            return Selection(self._unseen_random(seen), 0, None)
        refresh = self._hyper is None or len(finished) >= self._hyper_fitted_on + HYPER_EVERY
        # Accuracies below the median are clipped to it: the surrogate need not tell bad from
        # worse, and a few broken architectures (chance accuracy) would dominate its fit.
        surrogate = LatencyTrendGP(
            np.array([self._encode(p) for p, _ in finished]),
            np.array([r.latency_median_ms for _, r in finished]),
            np.maximum([r.accuracy for _, r in finished], floor),
            hyper=None if refresh else self._hyper,
        )
        if refresh:
            self._hyper, self._hyper_fitted_on = surrogate.gp.hyper, len(finished)
        encoded = np.array([self._encode(params) for params, _ in pool])

        def scores(indices, latencies_ms) -> list[tuple[float, int, float]]:
            """(EHVI, pool index, predicted accuracy) of candidates at the given latencies."""
            indices = list(indices)
            if not indices:
                return []
            means, stds = surrogate.predict(encoded[indices], np.asarray(latencies_ms, dtype=np.float64))
            return [
                (expected_improvement(lat, mean, self.exploration * std, front, reference=reference), i, float(mean))
                for i, lat, mean, std in zip(indices, latencies_ms, means, stds, strict=True)
            ]

        measured = 0
        if getattr(self.evaluator, "cheap_latency", False):
            shortlist = range(len(pool))
        else:
            predicted = self.evaluator.predicted_latency([spec for _, spec in pool])
            if predicted is None:  # no latency model yet: measure a few at random
                shortlist = self._rng.permutation(len(pool))[: self.measured_per_trial]
            else:
                ranked = sorted(scores(range(len(pool)), predicted), reverse=True)
                shortlist = [i for _, i, _ in ranked[: self.measured_per_trial]]
        known, latencies = [], []
        for i in shortlist:
            try:
                answer = self.evaluator.latency(pool[i][1])
            except Exception as error:  # a candidate that cannot be measured is left out, the others stay
                log.info("candidate %s left out: %s", pool[i][1].arch_id, error)
                continue
            measured += 0 if answer.cached else 1
            known.append(i)
            latencies.append(answer.median_ms)
        scored = scores(known, latencies)
        if not scored:
            return Selection(self._unseen_random(seen), measured, None)
        _, best, predicted_accuracy = max(scored)
        return Selection(pool[best][0], measured, predicted_accuracy)

    def _arch_id(self, params: dict) -> str:
        try:
            return self.space.from_params(params).arch_id
        except Exception:
            return ""

    def _encode(self, params: dict) -> list:
        return [list(choices).index(params[name]) for name, choices in self._choices.items()]

    def _random_params(self) -> dict:
        return {name: choices[self._rng.integers(len(choices))] for name, choices in self._choices.items()}

    def _mutate(self, params: dict) -> dict:
        child = dict(params)
        names = list(self._choices)
        for k in self._rng.choice(len(names), size=1 + int(self._rng.random() < 0.5), replace=False):
            name = names[k]
            others = [c for c in self._choices[name] if c != child[name]]
            child[name] = others[self._rng.integers(len(others))]
        return child

    def _pool(self, front_params: list[dict], seen: set[str], *, proposals: list[dict] = ()) -> list[tuple[dict, object]]:
        """Up to `candidates` unseen (params, candidate) pairs: TPE's proposals, then mutations of
        front members (`mutation_share` of the rest) and random points."""
        pool, ids = [], set(seen)
        queue = list(proposals)
        for _attempt in range(self.candidates * 10):
            if len(pool) >= self.candidates:
                break
            mutate = front_params and self._rng.random() < self.mutation_share
            if queue:
                params = queue.pop(0)
            elif mutate:
                params = self._mutate(front_params[self._rng.integers(len(front_params))])
            else:
                params = self._random_params()
            candidate = self.space.from_params(params)
            if candidate.arch_id not in ids:
                ids.add(candidate.arch_id)
                pool.append((params, candidate))
        return pool

    def _unseen_random(self, seen: set[str]) -> dict:
        for _ in range(100):
            params = self._random_params()
            if self._arch_id(params) not in seen:
                return params
        return params
