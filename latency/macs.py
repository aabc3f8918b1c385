"""Multiply-adds of a TFLite model, counted from its graph: every op that multiplies (conv,
depthwise conv, fully connected, batch matmul) with the shapes it actually runs at, so attention
matmuls count as much as convolutions. Batch 1; elementwise ops are ignored."""

from __future__ import annotations

import numpy as np


def _conv(shapes_in, shape_out) -> int:
    _, kh, kw, cin = shapes_in[1]  # filter: [out, kh, kw, in]
    return int(np.prod(shape_out)) * kh * kw * cin


def _depthwise(shapes_in, shape_out) -> int:
    _, kh, kw, _ = shapes_in[1]  # filter: [1, kh, kw, channels]
    return int(np.prod(shape_out)) * kh * kw


def _fully_connected(shapes_in, shape_out) -> int:
    return int(np.prod(shape_out)) * shapes_in[1][-1]  # weights: [out, in]


def _batch_matmul(shapes_in, shape_out) -> int:
    a = shapes_in[0]
    return int(np.prod(shape_out)) * a[-1]  # adj_x is not emitted by the converter for our graphs


COUNTERS = {
    "CONV_2D": _conv,
    "DEPTHWISE_CONV_2D": _depthwise,
    "FULLY_CONNECTED": _fully_connected,
    "BATCH_MATMUL": _batch_matmul,
}


def tflite_macs(path: str) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    shapes = {t["index"]: tuple(t["shape"]) for t in interpreter.get_tensor_details()}
    total = 0
    for op in interpreter._get_ops_details():
        counter = COUNTERS.get(op["op_name"])
        if counter:
            total += int(counter([shapes[i] for i in op["inputs"] if i >= 0], shapes[op["outputs"][0]]))
    return total
