"""Latency-aware candidate selection: train only what can move the front.

Latency does not depend on the weights: it is known (looked up, measured, cached, or predicted)
before anything is trained, while accuracy costs a training. So for each trial this strategy

0. never proposes a candidate that a training-free check shows to compute nothing (a NAS-Bench-201
   cell with no path from input to output: chance accuracy by construction), nor, of candidates that
   compute the same function (the same live edges), any but the fastest, nor any once one was seen;
1. starts without training: the first `startup_trials` candidates spread over the latency range
   (one per latency quantile band), each the band's unseen candidate of the largest training-free
   capacity (parameters of a NAS-Bench-201 cell, multiply-adds of a MnasNet network);
2. then scores every candidate whose latency is known: all unseen cells of a table, or thousands of
   unseen networks (random and mutations of the front) at the latency model's prediction, of which
   the few best are measured and scored again;
3. predicts accuracy with an uncertainty from the finished trials: a Gaussian process on the log
   error rate whose kernel adds a linear kernel on training-free features (what the network is
   made of, log latency) to an exponentiated Hamming kernel on the raw choices (what the features
   miss); its hyperparameters by marginal likelihood on a small grid;
4. evaluates the candidate with the highest expected hypervolume improvement (EHVI) over a fixed
   reference point (chance accuracy, below which a model is worth nothing, and the space's largest
   latency: no candidate the space can hold is outside the box). With latency known, the
   improvement is piecewise linear in accuracy along the front's staircase, so its expectation
   under a Gaussian prediction has a closed form, computed for all candidates at once.

Several workers: trials still running elsewhere count as measured at their predicted accuracy
(kriging believer), so the next pick goes where they are not.

It runs as an Optuna sampler: the study, its storage, enqueued trials and resumption behave as with
any other strategy. Measured on NAS-Bench-201 (bench/sampler_efficiency.py, README). References:
expected hypervolume improvement (Emmerich et al., 2006); BANANAS' surrogate over architectures
(White et al., arXiv:1910.11858); the kriging believer (Ginsbourger et al., 2010).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from results.dominance import non_dominated
from results.record import TrialRecord
from search_spaces import Description

log = logging.getLogger(__name__)

#: spaces this small are enumerated whole (NAS-Bench-201: 15,625 cells)
ENUMERABLE = 100_000


def known_arch_ids(study, space) -> set[str]:
    """Every architecture the study holds, whatever became of it (running ones too: the objective
    records the architecture when its trial starts), and those enqueued to come."""
    known = set()
    for trial in study.get_trials(deepcopy=False):
        arch_id = TrialRecord.from_trial(trial).arch_id
        if arch_id:
            known.add(arch_id)
        elif "fixed_params" in trial.system_attrs:
            with contextlib.suppress(Exception):  # a hand-enqueued trial of other parameters is no architecture of ours
                known.add(space.from_params(trial.system_attrs["fixed_params"]).arch_id)
    return known


# -- training-free descriptions -------------------------------------------------------------


def network_description(spec, *, num_classes: int = 10, input_hw: int = 32) -> Description:
    """A MnasNet-space network without training: the log of its work by kind (k x k, 1x1,
    depthwise and matmul multiply-adds, elements written, operators; the latency model's
    accounting) and its block count; capacity = its multiply-adds."""
    from latency.model import multiply_adds, network_features

    work = network_features(spec, input_hw, num_classes=num_classes)
    layers = sum(block.repeats for block in spec.blocks)
    return Description((*np.log1p(work).tolist(), float(layers)), float(multiply_adds(spec, input_hw, num_classes=num_classes)))


# -- the surrogate ---------------------------------------------------------------------------


class FeatureGP:
    """Gaussian-process regression of accuracy with k(x, x') = a f(x).f(x') + b exp(-d(c, c') / l),
    f the standardised features, c the categorical choices and d the number that differ. It models
    the log error rate z = -log(1 - accuracy), standardised: errors shrink by factors as networks
    improve, and on that scale 0.87 against 0.91 is as wide a gap as 0.40 against 0.60, where raw
    accuracy let a few poor points set the scale and the fit (NAS-Bench-201, 10 seeds at 50
    evaluations: regret 0.046 against 0.140 on gold_6226, 0.038 against 0.070 on fpga). Predictions
    come back as accuracy's mean and standard deviation (those of 1 - exp(-z), z Gaussian).
    (a, b, l, noise) maximise the log marginal likelihood over a small grid."""

    #: a (linear weight), b (Hamming weight), l (Hamming length), noise
    GRID = ((0.01, 0.1, 1.0), (0.1, 0.5, 1.0), (1.0, 2.0, 4.0), (0.01, 0.05, 0.2))

    def __init__(self, features: np.ndarray, codes: np.ndarray, accuracies: np.ndarray, *, hyper: tuple | None = None):
        self.features, self.codes = np.asarray(features, float), np.asarray(codes)
        log_error = -np.log(np.clip(1.0 - np.asarray(accuracies, dtype=np.float64), 1e-6, None))
        self.mean, self.scale = float(log_error.mean()), float(log_error.std()) or 1.0
        z = (log_error - self.mean) / self.scale
        linear, distances = self.features @ self.features.T, _hamming(self.codes, self.codes)
        grid = [hyper] if hyper else itertools.product(*self.GRID)
        best = None
        for a, b, length, noise in grid:
            kernel = a * linear + b * np.exp(-distances / length) + noise * np.eye(len(z))
            try:
                chol = np.linalg.cholesky(kernel)
            except np.linalg.LinAlgError:
                continue
            alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, z))
            evidence = -0.5 * z @ alpha - np.sum(np.log(np.diag(chol)))
            if best is None or evidence > best[0]:
                best = (evidence, (a, b, length, noise), chol, alpha)
        if best is None:  # the given hyperparameters failed: search the grid
            self.__init__(features, codes, accuracies)
            return
        _, self.hyper, self._chol, self._alpha = best

    def predict(self, features: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of accuracy (of the latent function: no noise)."""
        a, b, length, _ = self.hyper
        features = np.asarray(features, float)
        cross = a * features @ self.features.T + b * np.exp(-_hamming(np.asarray(codes), self.codes) / length)
        mean = cross @ self._alpha
        v = np.linalg.solve(self._chol, cross.T)
        prior = a * np.sum(features * features, axis=1) + b
        variance = np.clip(prior - np.sum(v * v, axis=0), 1e-12, None)
        # far outside the data a linear kernel's variance grows without bound; a standard deviation
        # of 2 (a factor 7 on the error rate) already says "unknown" and keeps exp() finite
        z, z_var = self.mean + self.scale * mean, np.minimum(self.scale**2 * variance, 4.0)
        error = np.exp(-z + z_var / 2)  # E[exp(-z)] of a Gaussian z
        return 1.0 - error, error * np.sqrt(np.expm1(z_var))


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a[:, None, :] != b[None, :, :], axis=2).astype(np.float64)


# -- expected hypervolume improvement with a known latency ----------------------------------


def expected_improvement(latencies_ms, means, stds, front: list[tuple[float, float]], *, reference) -> np.ndarray:
    """E[HV(front + (latency, a)) - HV(front)] for each candidate, a ~ N(mean, std^2), maximising
    accuracy and minimising latency inside `reference` = (accuracy, latency). `front` holds
    (latency, accuracy). Along latency the front is a staircase: on each step the improvement is
    the expected excess of a over the step's accuracy, times the part of the step at or beyond the
    candidate's latency."""
    latencies = np.asarray(latencies_ms, dtype=np.float64)
    means, stds = np.asarray(means, dtype=np.float64), np.maximum(np.asarray(stds, dtype=np.float64), 1e-12)
    ref_accuracy, ref_latency = reference
    steps = sorted((lat, acc) for lat, acc in front if lat < ref_latency)
    starts = [-math.inf] + [lat for lat, _ in steps]
    ends = [lat for lat, _ in steps] + [ref_latency]
    floors = [ref_accuracy]
    for _, accuracy in steps:
        floors.append(max(floors[-1], accuracy))
    total = np.zeros(len(latencies))
    for start, end, floor in zip(starts, ends, floors, strict=True):
        width = np.clip(end - np.maximum(start, latencies), 0.0, None)
        z = (means - floor) / stds
        excess = (means - floor) * _normal_cdf(z) + stds * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        total += width * excess
    total[latencies >= ref_latency] = 0.0
    return total


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Vectorised, with erf by Abramowitz & Stegun 7.1.26 (error below 1.5e-7): numpy has no erf."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def pareto_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The distinct non-dominated (latency, accuracy) points, by latency."""
    return non_dominated(set(points), lambda p: p)


# -- the strategy as an Optuna sampler -------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    params: dict
    candidates_measured: int
    predicted_accuracy: float | None


@dataclass(frozen=True)
class _Batch:
    """Candidates as arrays: their parameters, training-free descriptions, capacities, choice codes
    and (once known or predicted) latencies."""

    params: list[dict]
    description: np.ndarray
    capacity: np.ndarray
    codes: np.ndarray
    latencies_ms: np.ndarray | None

    def subset(self, indices) -> _Batch:
        indices = np.asarray(indices, dtype=np.int64)
        latencies = None if self.latencies_ms is None else self.latencies_ms[indices]
        params = [self.params[i] for i in indices]
        return _Batch(params, self.description[indices], self.capacity[indices], self.codes[indices], latencies)

    def at(self, latencies_ms) -> _Batch:
        return _Batch(self.params, self.description, self.capacity, self.codes, np.asarray(latencies_ms, dtype=np.float64))

    @property
    def raw(self) -> np.ndarray:
        """The surrogate's features before standardisation: the description, log latency and its square."""
        u = np.log(self.latencies_ms)[:, None]
        return np.hstack([self.description, u, u * u])

    def standardised(self, scaling) -> np.ndarray:
        center, spread = scaling
        return (self.raw - center) / spread


@dataclass(frozen=True)
class _Known:
    """The study's evaluated (or running) architectures, as the surrogate sees them."""

    params: list[dict]
    latencies_ms: list[float]
    accuracies: list[float | None]  # None: still running


class LatencyAwareSampler(BaseSampler):
    """See the module docstring. `space` gives the choices and turns parameters into candidates;
    `evaluator` gives latencies (`latency`, `predicted_latency`, `cheap_latency`); `describe` gives a
    candidate's training-free `Description`; the hypervolume's reference point is
    (`reference_accuracy`, `reference_latency_ms`): chance accuracy, below which a model is worth
    nothing, and the space's largest latency."""

    surrogate = FeatureGP  # (features, codes, accuracies, hyper=) -> .predict(features, codes), .hyper

    def __init__(
        self,
        *,
        space,
        evaluator,
        describe: Callable,
        reference_latency_ms: float,
        reference_accuracy: float = 0.0,
        seed: int | None = None,
        startup_trials: int = 10,
        pool: int = 2000,
        measured_per_trial: int = 4,
        mutation_share: float = 0.5,
        exploration: float = 0.5,
        believe_running: bool = True,
        warm_start: bool = True,
        score_all: bool = True,
    ):
        self.space, self.evaluator, self.describe = space, evaluator, describe
        self.reference = (float(reference_accuracy), float(reference_latency_ms))
        self.startup_trials = startup_trials
        self.pool, self.measured_per_trial, self.mutation_share = pool, measured_per_trial, mutation_share
        # scales the surrogate's uncertainty (0: greedy on its mean); 0.5 beat 1.0 on 3 of 4 NAS-Bench-201 devices at 50
        self.exploration = exploration
        self.believe_running = believe_running
        self.warm_start, self.score_all = warm_start, score_all  # off: the ablations of bench/strategy_ablation.py
        self._rng = np.random.default_rng(seed)
        self._choices = space.choices()
        self._codes = {name: {value: k for k, value in enumerate(values)} for name, values in self._choices.items()}
        self._selected: dict[int, Selection] = {}
        self._descriptions: dict[tuple, Description] = {}
        self._catalog = None  # every candidate of an enumerable space with a cheap latency: (batch, arch ids, functions)

    # Optuna's sampler interface: everything is decided in before_trial.
    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        selection = self._selected.get(trial.number)
        if selection is not None and param_name in selection.params:
            return selection.params[param_name]
        choices = param_distribution.choices
        return choices[self._rng.integers(len(choices))]

    def before_trial(self, study, trial) -> None:
        # an enqueued trial (seed, retry) or one Optuna re-created after its worker died keeps its parameters
        if "fixed_params" in trial.system_attrs or trial.params:
            return
        selection = self.select(study)
        self._selected[trial.number] = selection
        # the selection's own bookkeeping, on the trial (as NSGA-II records its generation)
        record = TrialRecord(candidates_measured=selection.candidates_measured, predicted_accuracy=selection.predicted_accuracy)
        for key, value in record.to_user_attrs().items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)

    def after_trial(self, study, trial, state, values) -> None:
        self._selected.pop(trial.number, None)

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()

    # The selection itself.
    def select(self, study) -> Selection:
        seen = known_arch_ids(study, self.space)
        known = self._known(study)
        finished = [k for k, a in enumerate(known.accuracies) if a is not None]
        points = [(known.latencies_ms[k], known.accuracies[k]) for k in finished]
        on_front = set(pareto_points(points))
        parents = [known.params[k] for k in finished if (known.latencies_ms[k], known.accuracies[k]) in on_front]
        looked_up = self._catalog is None  # this selection builds the catalog: it looks every latency up once
        pool = self._candidates(seen, parents)
        measured = len(self._catalog[1]) if looked_up and self._catalog is not None else 0
        if not pool.params:
            return Selection(self._random_params(), measured, None)
        if len(finished) < self.startup_trials:
            if not self.warm_start:
                return Selection(pool.params[int(self._rng.integers(len(pool.params)))], measured, None)
            return Selection(self._warm_start(pool, band=len(known.params)), measured, None)
        if pool.latencies_ms is not None and not self.score_all and len(pool.params) > self.pool:
            pool = pool.subset(self._rng.choice(len(pool.params), self.pool, replace=False))

        latencies = pool.latencies_ms
        if latencies is None:
            predicted = self.evaluator.predicted_latency([self.space.from_params(p) for p in pool.params])
            latencies = None if predicted is None else np.asarray(predicted, dtype=np.float64)
        trials = self._described(known.params, np.asarray(known.latencies_ms, dtype=np.float64))
        # one standardisation for the trials and the candidates of this selection
        both = trials.raw if latencies is None else np.vstack([trials.raw, pool.at(latencies).raw])
        scaling = (both.mean(axis=0), both.std(axis=0) + 1e-9)
        x_feat, x_code = trials.standardised(scaling), trials.codes
        y = np.array([known.accuracies[k] for k in finished])
        surrogate = self.surrogate(x_feat[finished], x_code[finished], y)  # the grid costs milliseconds at 200 points
        running = [k for k, a in enumerate(known.accuracies) if a is None]
        if running and self.believe_running:  # other workers' trials, believed at the surrogate's mean
            believed, _ = surrogate.predict(x_feat[running], x_code[running])
            order = finished + running
            surrogate = self.surrogate(x_feat[order], x_code[order], np.concatenate([y, believed]), hyper=surrogate.hyper)
            points += [(known.latencies_ms[k], float(b)) for k, b in zip(running, believed, strict=True)]
        front = pareto_points(points)

        def scores(batch: _Batch):
            means, stds = surrogate.predict(batch.standardised(scaling), batch.codes)
            gain = expected_improvement(batch.latencies_ms, means, self.exploration * stds, front, reference=self.reference)
            return gain, means

        if pool.latencies_ms is not None:  # every latency known: one pass over all candidates
            gain, means = scores(pool)
            best = int(np.argmax(gain))
            return Selection(pool.params[best], measured, float(means[best]))
        # predicted latencies: score all, measure the few best, score those again at their measured latency
        if latencies is None:  # no latency model yet: measure a few at random
            shortlist = list(self._rng.permutation(len(pool.params))[: self.measured_per_trial])
        else:
            gain, _ = scores(pool.at(latencies))
            shortlist = list(np.argsort(-gain)[: self.measured_per_trial])
        kept, exact = [], []
        for i in shortlist:
            try:
                answer = self.evaluator.latency(self.space.from_params(pool.params[i]))
            except Exception as error:  # a candidate that cannot be measured is left out, the others stay
                log.info("candidate left out: %s", error)
                continue
            measured += 0 if answer.cached else 1
            kept.append(int(i))
            exact.append(answer.median_ms)
        if not kept:
            return Selection(pool.params[int(shortlist[0])] if shortlist else self._random_params(), measured, None)
        gain, means = scores(pool.subset(kept).at(np.asarray(exact)))
        best = int(np.argmax(gain))
        return Selection(pool.params[kept[best]], measured, float(means[best]))

    # -- pieces

    def _known(self, study) -> _Known:
        """Finished trials with an accuracy and latency, and (for the believer) running ones."""
        params, latencies, accuracies = [], [], []
        State = optuna.trial.TrialState
        for trial in study.get_trials(deepcopy=False):
            record = TrialRecord.from_trial(trial)
            if set(trial.params) != set(self._choices) or record.reused_from is not None:
                continue
            if trial.state == State.COMPLETE and record.accuracy is not None and record.latency_ms is not None:
                params.append(trial.params)
                latencies.append(record.latency_ms)
                accuracies.append(record.accuracy)
            elif trial.state == State.RUNNING and record.arch_id:
                latency = record.latency_ms or self._cheap_latency(trial.params)
                if latency is not None:
                    params.append(trial.params)
                    latencies.append(latency)
                    accuracies.append(None)
        return _Known(params, latencies, accuracies)

    def _cheap_latency(self, params: dict) -> float | None:
        if not self.evaluator.cheap_latency:
            return None
        try:
            return self.evaluator.latency(self.space.from_params(params)).median_ms
        except Exception:
            return None

    def _candidates(self, seen: set[str], parents: list[dict]) -> _Batch:
        """The unseen candidates, with their latencies when all are known cheaply: every point of an
        enumerable space with a table's latencies, else a pool of `pool` unseen ones (mutations of
        `parents`, the front, for `mutation_share` of it; random points). None that computes nothing
        (its accuracy is known: chance). In the enumerated space, one per function: the fastest of the
        candidates that compute the same, and none of a function already seen (another member would
        teach nothing and cost more)."""
        size = math.prod(len(c) for c in self._choices.values())
        if self.evaluator.cheap_latency and size <= ENUMERABLE:
            if self._catalog is None:
                names = list(self._choices)
                every = (dict(zip(names, values, strict=True)) for values in itertools.product(*self._choices.values()))
                params = [p for p in every if not self._description(p).computes_nothing]
                specs = [self.space.from_params(p) for p in params]
                latencies = np.array([self.evaluator.latency(s).median_ms for s in specs])
                order = np.argsort(latencies, kind="stable")  # fastest first: the first of a function is its fastest
                params, specs = [params[i] for i in order], [specs[i] for i in order]
                functions = np.array([self._description(p).function or s.arch_id for p, s in zip(params, specs, strict=True)])
                self._catalog = (self._described(params, latencies[order]), np.array([s.arch_id for s in specs]), functions)
            catalog, ids, functions = self._catalog
            seen_functions = functions[np.isin(ids, list(seen))]
            unseen = np.flatnonzero(~np.isin(functions, seen_functions))
            _, first = np.unique(functions[unseen], return_index=True)
            return catalog.subset(np.sort(unseen[first]))
        pool, ids = [], set(seen)
        for _ in range(self.pool * 5):
            if len(pool) >= self.pool:
                break
            mutate = parents and self._rng.random() < self.mutation_share
            params = self._mutate(parents[self._rng.integers(len(parents))]) if mutate else self._random_params()
            arch_id = self.space.from_params(params).arch_id
            if arch_id not in ids and not self._description(params).computes_nothing:
                ids.add(arch_id)
                pool.append(params)
        return self._described(pool, None)

    def _warm_start(self, pool: _Batch, *, band: int) -> dict:
        """Band `band` of `startup_trials` latency quantile bands (capacity bands while latency is
        unknown): its candidate of the largest capacity."""
        spread = pool.capacity if pool.latencies_ms is None else pool.latencies_ms
        edges = np.quantile(spread, np.linspace(0.0, 1.0, self.startup_trials + 1))
        band = band % self.startup_trials
        inside = np.flatnonzero((spread >= edges[band]) & (spread <= edges[band + 1]))
        if not len(inside):
            inside = np.arange(len(pool.params))
        ties = self._rng.random(len(inside)) * 1e-9  # equal capacities: any of them
        return pool.params[int(inside[np.argmax(pool.capacity[inside] + ties)])]

    def _described(self, params_list: list[dict], latencies_ms) -> _Batch:
        """Candidates with their training-free descriptions (cached per architecture) and codes."""
        names = list(self._choices)
        descriptions = [self._description(params) for params in params_list]
        codes = [[self._codes[n][params[n]] for n in names] for params in params_list]
        width = len(descriptions[0].features) if descriptions else 0
        return _Batch(
            params=list(params_list),
            description=np.array([d.features for d in descriptions], dtype=np.float64).reshape(len(descriptions), width),
            capacity=np.array([d.capacity for d in descriptions], dtype=np.float64),
            codes=np.array(codes, dtype=np.int64).reshape(len(codes), len(names)),
            latencies_ms=None if latencies_ms is None else np.asarray(latencies_ms, dtype=np.float64),
        )

    def _description(self, params: dict) -> Description:
        key = tuple(params[name] for name in self._choices)
        if key not in self._descriptions:
            self._descriptions[key] = self.describe(self.space.from_params(params))
        return self._descriptions[key]

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
