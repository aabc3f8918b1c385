"""A latency model: a per-layer cost table plus a fixed per-inference correction, fitted to
measured whole networks.

Every layer of an `ArchSpec` is described by what its time is made of on a CPU interpreter:
multiply-adds by kind (k x k convolution, 1x1 convolution, depthwise, dense/attention matmul),
activation elements written (memory traffic) and operator count (dispatch overhead). A layer's
cost is a non-negative weighted sum of these, so the cost of any (op, kernel, channels, feature
size, ...) entry of the lookup table follows from a handful of coefficients; the correction is a
constant per inference (interpreter overhead). The coefficients are fitted by non-negative least
squares on *relative* error to measured latencies: the study's own trials and `nas latency-fit`
samples, both kept in the latency cache.

Why not measure every table entry in isolation (MnasNet/FBNet style)? A 32x32 space has
thousands of distinct (block, input width, op, kernel, ...) entries and each needs a TFLite
conversion (3-10 s here); the whole-network measurements a study makes anyway are free and
already include the fusions and overheads that per-op tables miss.

Used only to pre-screen: a candidate is skipped when even its lowest plausible latency (the
prediction times the smallest measured/predicted ratio seen in cross-validation) exceeds a hard limit.
Nothing is ever *recorded* from the model; every trial that runs is measured.

Pure numpy: importing this never loads TensorFlow.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass

import numpy as np

from search_spaces.spec import ArchSpec, BlockSpec

FEATURES = ("conv_mmacs", "pointwise_mmacs", "depthwise_mmacs", "matmul_mmacs", "kilo_elements", "ops")
FEATURE_LABELS = ("k x k conv Mmac", "1x1 conv Mmac", "depthwise Mmac", "matmul Mmac", "k-elements written", "ops")
MIN_FIT = 8  # seven coefficients
MIN_SAMPLES = 12  # to fit and cross-validate


@dataclass(frozen=True)
class Layer:
    block: int
    key: str  # the lookup-table entry this layer is, e.g. "mbconv_r1_k5_s2_e6_c40_se0.25 in24 @16"
    features: np.ndarray  # in FEATURES order


def _vector(**values: float) -> np.ndarray:
    return np.array([values.get(name, 0.0) for name in FEATURES], dtype=np.float64)


def _conv(hw: int, k: int, cin: int, cout: int) -> np.ndarray:
    kind = "pointwise_mmacs" if k == 1 else "conv_mmacs"
    return _vector(**{kind: hw * hw * k * k * cin * cout / 1e6, "kilo_elements": hw * hw * cout / 1e3, "ops": 1})


def _depthwise(hw: int, k: int, channels: int) -> np.ndarray:
    return _vector(depthwise_mmacs=hw * hw * k * k * channels / 1e6, kilo_elements=hw * hw * channels / 1e3, ops=1)


def _squeeze_excite(hw: int, in_ch: int, channels: int, ratio: float) -> np.ndarray:
    if not ratio:
        return _vector()
    reduced = max(1, int(in_ch * ratio))
    # mean, two 1x1 convs on a 1x1 map, multiply
    return _vector(pointwise_mmacs=2 * reduced * channels / 1e6, kilo_elements=(hw * hw * channels + channels) / 1e3, ops=4)


def _elementwise(hw: int, channels: int, ops: int = 1) -> np.ndarray:
    return _vector(kilo_elements=ops * hw * hw * channels / 1e3, ops=ops)


def _shortcut(block: BlockSpec, hw_in: int, hw_out: int, cin: int, cout: int, stride: int) -> np.ndarray:
    same = stride == 1 and cin == cout
    if block.skip == "none" or (block.skip == "identity" and not same):
        return _vector()
    cost = _elementwise(hw_out, cout)
    if not same:
        if stride > 1:
            cost = cost + _elementwise(hw_out, cin)  # average pooling
        if cin != cout:
            cost = cost + _conv(hw_out, 1, cin, cout)
    return cost


def _inverted_bottleneck(block: BlockSpec, hw_in: int, hw_out: int, cin: int, cout: int) -> np.ndarray:
    mid = cin * block.expand
    cost = _conv(hw_in, 1, cin, mid) if block.expand != 1 else _vector()
    cost = cost + _depthwise(hw_out, block.kernel, mid) + _squeeze_excite(hw_out, cin, mid, block.se)
    return cost + _conv(hw_out, 1, mid, cout)


def _transformer(block: BlockSpec, hw: int) -> np.ndarray:
    tokens = hw * hw  # over all patch positions: N tokens per position x p*p positions
    per_position = tokens // (block.patch * block.patch)
    d = block.dim
    norm = _elementwise(hw, d, ops=6)  # LayerNorm lowers to mean, sub, square, mean, rsqrt, mul-add
    if block.attention == "mhsa":
        attention = _vector(matmul_mmacs=(4 * tokens * d * d + 2 * tokens * per_position * d) / 1e6, ops=10)
        attention = attention + _vector(kilo_elements=(4 * tokens * d + 2 * block.heads * tokens * per_position) / 1e3)
    else:
        attention = _vector(matmul_mmacs=(2 * tokens * d * d + 2 * tokens * d * block.memory) / 1e6, ops=10)
        attention = attention + _vector(kilo_elements=(3 * tokens * d + 2 * block.heads * tokens * block.memory) / 1e3)
    mlp = _vector(matmul_mmacs=2 * tokens * d * d * block.mlp / 1e6, kilo_elements=tokens * d * (block.mlp + 1) / 1e3, ops=3)
    return 2 * norm + attention + mlp + _elementwise(hw, d, ops=2)


def layers(spec: ArchSpec, input_hw: int, *, num_classes: int) -> list[Layer]:
    """Every layer of `spec` at `input_hw` x `input_hw` input with a `num_classes` classifier, as the
    builder lays them out."""
    out: list[Layer] = []
    hw, channels = input_hw, 3
    *body, head = spec.blocks
    out.append(Layer(-1, f"input {input_hw}x{input_hw}", _elementwise(hw, channels, ops=1)))  # normalisation
    for index, block in enumerate(body):
        for repeat in range(block.repeats):
            stride = block.stride if repeat == 0 else 1
            hw_out = -(-hw // stride)
            cin, cout = channels, block.out_ch
            if block.op == "conv":
                cost = _conv(hw_out, block.kernel, cin, cout) + _squeeze_excite(hw_out, cin, cout, block.se)
            elif block.op == "dsconv":
                cost = _depthwise(hw_out, block.kernel, cin) + _squeeze_excite(hw_out, cin, cin, block.se)
                cost = cost + _conv(hw_out, 1, cin, cout)
            else:  # mbconv, and the MV2 layer that opens a mobilevit block
                cost = _inverted_bottleneck(block, hw, hw_out, cin, cout)
            cost = cost + _shortcut(block, hw, hw_out, cin, cout, stride)
            if block.op == "mobilevit":
                cost = cost + _conv(hw_out, block.kernel, cout, cout) + _conv(hw_out, 1, cout, block.dim)
                cost = cost + _elementwise(hw_out, block.dim, ops=6)  # unfold and fold: reshapes and transposes
                cost = cost + block.depth * _transformer(block, hw_out) + _elementwise(hw_out, block.dim, ops=6)
                cost = cost + _conv(hw_out, 1, block.dim, cout) + _elementwise(hw_out, 2 * cout)  # concat
                cost = cost + _conv(hw_out, block.kernel, 2 * cout, cout)
            # the table key: one layer of this block (repeats=1, its own stride) at this input
            key = f"{dataclasses.replace(block, repeats=1, stride=stride).to_string()} in{cin} @{hw}"
            out.append(Layer(index, key, cost))
            hw, channels = hw_out, cout
    head_cost = _conv(hw, 1, channels, head.out_ch) + _elementwise(1, head.out_ch)  # pooling
    head_cost = head_cost + _vector(matmul_mmacs=head.out_ch * num_classes / 1e6, kilo_elements=num_classes / 1e3, ops=1)
    out.append(Layer(len(body), f"head {channels}->{head.out_ch} @{hw}", head_cost))
    return out


def network_features(spec: ArchSpec, input_hw: int, *, num_classes: int) -> np.ndarray:
    return np.sum([layer.features for layer in layers(spec, input_hw, num_classes=num_classes)], axis=0)


MAC_FEATURES = ("conv_mmacs", "pointwise_mmacs", "depthwise_mmacs", "matmul_mmacs")


def multiply_adds(spec: ArchSpec, input_hw: int, *, num_classes: int) -> int:
    """Multiply-adds of `spec` as this model's walk over the network counts them: tied by a test to
    the count from the converted TFLite graph (`latency.macs.tflite_macs`)."""
    features = network_features(spec, input_hw, num_classes=num_classes)
    return round(sum(features[FEATURES.index(name)] for name in MAC_FEATURES) * 1e6)


def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min sum((x w + b - y) / y)^2 over w >= 0, b >= 0 (b is the last coefficient).

    With six features, exact NNLS by trying every support set is cheap (64 small solves) and
    needs no optimiser."""
    design = np.hstack([x, np.ones((len(x), 1))]) / y[:, None]
    target = np.ones(len(y))
    best, best_loss = np.zeros(design.shape[1]), np.inf
    columns = range(design.shape[1])
    for size in range(1, design.shape[1] + 1):
        for support in itertools.combinations(columns, size):
            coef, *_ = np.linalg.lstsq(design[:, support], target, rcond=None)
            if np.any(coef < 0):
                continue
            loss = float(np.sum((design[:, support] @ coef - target) ** 2))
            if loss < best_loss:
                best, best_loss = np.zeros(design.shape[1]), loss
                best[list(support)] = coef
    return best


@dataclass(frozen=True)
class LatencyModel:
    coefficients: tuple[float, ...]  # ms per unit of each of FEATURES
    correction_ms: float  # fixed per inference
    input_hw: int
    fingerprint_id: str
    samples: int
    min_ratio: float = 1.0  # smallest measured/predicted seen in cross-validation (1.0: unknown)
    num_classes: int = 10

    @classmethod
    def fit(cls, specs: list[ArchSpec], latencies_ms, *, input_hw: int, fingerprint_id: str, num_classes: int) -> LatencyModel:
        y = np.asarray(latencies_ms, dtype=np.float64)
        if len(specs) < MIN_FIT:
            raise ValueError(f"{len(specs)} measured architectures are too few to fit a latency model (need {MIN_FIT})")
        if np.any(y <= 0):
            raise ValueError("latencies must be positive")
        coef = _nnls_relative(np.array([network_features(s, input_hw, num_classes=num_classes) for s in specs]), y)
        return cls(
            tuple(float(c) for c in coef[:-1]), float(coef[-1]), input_hw, fingerprint_id, len(specs), num_classes=num_classes
        )

    def predict(self, spec: ArchSpec) -> float:
        features = network_features(spec, self.input_hw, num_classes=self.num_classes)
        return float(features @ np.array(self.coefficients) + self.correction_ms)

    def table(self, spec: ArchSpec) -> list[tuple[str, float]]:
        """The lookup-table entries of `spec`'s layers and their costs in ms (the correction apart)."""
        coef = np.array(self.coefficients)
        return [(layer.key, float(layer.features @ coef)) for layer in layers(spec, self.input_hw, num_classes=self.num_classes)]

    def lower_bound(self, spec: ArchSpec) -> float:
        """A latency the measurement is all but certain to exceed: the prediction scaled by the
        smallest measured/predicted ratio seen in cross-validation (its worst over-prediction), with
        5 % to spare."""
        return self.predict(spec) * min(1.0, self.min_ratio) * 0.95

    def to_json(self) -> str:
        return json.dumps(self.__dict__ | {"features": list(FEATURES)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LatencyModel:
        document = json.loads(text)
        if document.pop("features", None) != list(FEATURES):
            raise ValueError("the latency model was fitted with other features; fit it again")
        document["coefficients"] = tuple(document["coefficients"])
        return cls(**document)


def cross_validate(
    specs: list[ArchSpec], latencies_ms, *, input_hw: int, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Held-out predictions: each architecture predicted by a model fitted without its fold."""
    y = np.asarray(latencies_ms, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(specs))
    predictions = np.empty(len(specs))
    for fold in range(folds):
        held = order[fold::folds]
        kept = np.setdiff1d(order, held)
        model = LatencyModel.fit(
            [specs[i] for i in kept], y[kept], input_hw=input_hw, fingerprint_id="cv", num_classes=num_classes
        )
        predictions[held] = [model.predict(specs[i]) for i in held]
    return predictions


def fit_with_error(
    specs: list[ArchSpec], latencies_ms, *, input_hw: int, fingerprint_id: str, num_classes: int
) -> tuple[LatencyModel, np.ndarray]:
    """The model fitted on everything, carrying the smallest held-out measured/predicted ratio, and the
    held-out predictions that bound it."""
    if len(specs) < MIN_SAMPLES:
        raise ValueError(f"{len(specs)} measured architectures are too few to fit and check a latency model (need {MIN_SAMPLES})")
    folds = max(2, min(5, len(specs) // 4))  # every fold's fit keeps at least MIN_FIT
    held_out = cross_validate(specs, latencies_ms, input_hw=input_hw, num_classes=num_classes, folds=folds)
    model = LatencyModel.fit(specs, latencies_ms, input_hw=input_hw, fingerprint_id=fingerprint_id, num_classes=num_classes)
    ratio = float(np.min(np.asarray(latencies_ms) / held_out))
    return LatencyModel(**(model.__dict__ | {"min_ratio": ratio})), held_out
