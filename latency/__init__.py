"""Keras -> TFLite conversion, LiteRT latency measurement and the measurement fingerprint."""

from latency.fingerprint import fingerprint_id, host_fingerprint
from latency.measure import LatencyProtocol, LatencyResult, measure_tflite

__all__ = ["LatencyProtocol", "LatencyResult", "fingerprint_id", "host_fingerprint", "measure_tflite"]
