"""Where latency is measured: the host's LiteRT interpreter, an Android phone through `adb`, or any
command. Every device measures a .tflite file and answers with the same `LatencyResult` and a
fingerprint; a device's own failure (unreachable, timeout, unparsable output, non-zero exit)
raises `DeviceError` carrying the device's message, which the search records as a failed trial.

    host                     the LiteRT interpreter in this process (default)
    adb[:SERIAL]             pushes the model, runs LiteRT's benchmark_model on the phone
    cmd:COMMAND              runs COMMAND with {model} replaced by the .tflite path and picks
                             the latency (ms) out of its output with a regex

Devices are frozen dataclasses of plain values, so they cross into the worker process. A phone or
a command is one device however many workers use it: its measurements take turns (an exclusive
lock per device on this machine), since two benchmarks at once would slow each other, and every
model pushed to a phone has a name of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shlex
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field

import numpy as np

from latency.fingerprint import converter, fingerprint_id, host_fingerprint
from latency.measure import LatencyProtocol, LatencyResult, busy_while, measure_tflite, summarize_rounds
from search_spaces.files import locked

DELEGATES = ("none", "xnnpack", "gpu", "nnapi")
DEFAULT_PATTERN = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*ms"
#: z of the normal 90th percentile: benchmark_model reports mean and std, not percentiles <= 90
Z90 = 1.2816


class DeviceError(RuntimeError):
    """The device could not give a latency; the message is the device's own."""


def _run(argv: list[str], *, timeout_s: float, what: str) -> str:
    """stdout+stderr of a command; its failure as a DeviceError quoting its last output line."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise DeviceError(f"{what}: {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what}: timed out after {timeout_s:g} s") from None
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
        raise DeviceError(f"{what}: exit code {done.returncode}: {last[:300]}")
    return output


@contextlib.contextmanager
def taking_turns(name: str):
    """Hold the machine-wide lock of device `name` (blocks while another process measures on it)."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    path = os.path.join(os.environ.get("NAS_LOCK_DIR", tempfile.gettempdir()), f"nas-device-{digest}.lock")
    with locked(path):
        yield


@dataclass(frozen=True)
class HostDevice:
    """The LiteRT interpreter on this machine, optionally pinned to one CPU core while measuring."""

    protocol: LatencyProtocol = field(default_factory=LatencyProtocol)
    pin_core: int | None = None
    precision: str = "fp32"

    name = "host"

    def fingerprint(self) -> dict:
        return host_fingerprint(threads=self.protocol.threads, precision=self.precision, pinned=self.pin_core is not None)

    def measure(self, path: str) -> LatencyResult:
        """The protocol's timing, with how busy other processes kept the machine meanwhile."""
        result, busy = busy_while(lambda: self._measure(path))
        return dataclasses.replace(result, busy_cores=round(busy, 2))

    def _measure(self, path: str) -> LatencyResult:
        if self.pin_core is None:
            return measure_tflite(path, self.protocol)
        # Threads inherit the affinity of the thread that creates them, so pin before the
        # interpreter exists, and give training its cores back afterwards.
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.pin_core})
        try:
            return measure_tflite(path, self.protocol)
        finally:
            os.sched_setaffinity(0, previous)


@dataclass(frozen=True)
class AdbDevice:
    """An Android device: `adb push` the model, run LiteRT's `benchmark_model` `protocol.rounds`
    times and combine its per-run statistics. benchmark_model prints mean, std and (recent
    versions) the median; p90 is the normal approximation median + 1.28 std."""

    serial: str | None = None
    protocol: LatencyProtocol = field(default_factory=LatencyProtocol)
    adb: str = "adb"
    binary: str = "/data/local/tmp/benchmark_model"
    delegate: str = "xnnpack"
    timeout_s: float = 120.0
    precision: str = "fp32"
    remote_dir: str = "/data/local/tmp"

    @property
    def name(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def fingerprint(self) -> dict:
        properties = {}
        for key in ("ro.product.model", "ro.build.fingerprint", "ro.board.platform"):
            properties[key] = _run(self._adb("shell", "getprop", key), timeout_s=self.timeout_s, what=self.name).strip()
        info = {
            "device": self.name,
            "cpu": properties["ro.board.platform"] or "unknown",
            "model": properties["ro.product.model"],
            "build": properties["ro.build.fingerprint"],
            "runtime": f"benchmark_model {self.binary}",
            "converter": converter(),
            "threads": self.protocol.threads,
            "delegate": self.delegate,
            "precision": self.precision,
        }
        info["id"] = fingerprint_id(info)
        return info

    def command(self, remote_model: str) -> list[str]:
        flags = [
            f"--graph={remote_model}",
            f"--num_threads={self.protocol.threads}",
            f"--warmup_runs={self.protocol.warmup_runs}",
            f"--num_runs={self.protocol.runs_per_round}",
        ]
        flags += {
            "none": ["--use_xnnpack=false"],
            "xnnpack": ["--use_xnnpack=true"],
            "gpu": ["--use_gpu=true"],
            "nnapi": ["--use_nnapi=true"],
        }[self.delegate]
        return self._adb("shell", shlex.join([self.binary, *flags]))

    def measure(self, path: str) -> LatencyResult:
        with taking_turns(self.name):
            return self._measure(path)

    def _measure(self, path: str) -> LatencyResult:
        # a name of its own: another worker's clean-up never deletes this model
        remote = f"{self.remote_dir}/nas_{os.getpid()}_{uuid.uuid4().hex[:8]}_{os.path.basename(path)}"
        _run(self._adb("push", path, remote), timeout_s=self.timeout_s, what=f"{self.name} push")
        try:
            rounds = [
                parse_benchmark_model(_run(self.command(remote), timeout_s=self.timeout_s, what=f"{self.name} benchmark_model"))
                for _ in range(self.protocol.rounds)
            ]
        finally:
            with contextlib.suppress(DeviceError):  # a leftover file in /data/local/tmp is harmless
                _run(self._adb("shell", "rm", "-f", remote), timeout_s=self.timeout_s, what=f"{self.name} rm")
        medians = np.array([r["median_ms"] for r in rounds])
        stds = np.array([r["std_ms"] for r in rounds])
        means = np.array([r["mean_ms"] for r in rounds])
        median = float(np.median(medians))
        return LatencyResult(
            median_ms=median,
            p90_ms=median + Z90 * float(np.median(stds)),
            cv=float(np.std(medians) / np.mean(medians)) if len(rounds) > 1 else 0.0,
            run_cv=float(np.median(stds / means)),
            runs=int(sum(r["count"] for r in rounds)),
            attempts=1,
        )


_BENCHMARK_LINE = re.compile(r"count=(\d+)\s.*?avg=([0-9.eE+-]+)\s+std=([0-9.eE+-]+)(?:.*?median=([0-9.eE+-]+))?")


def parse_benchmark_model(output: str) -> dict:
    """The timed runs of one `benchmark_model` output (its last `count=... avg=... std=...` line;
    the earlier one is the warm-up), in ms."""
    matches = [m for m in (_BENCHMARK_LINE.search(line) for line in output.splitlines()) if m]
    if not matches:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-2:]) or "no output"
        raise DeviceError(f"benchmark_model printed no timing line (count=... avg=... std=...): {tail[:300]}")
    count, mean_us, std_us, median_us = matches[-1].groups()
    mean = float(mean_us) / 1000
    return {
        "count": int(count),
        "mean_ms": mean,
        "std_ms": float(std_us) / 1000,
        "median_ms": float(median_us) / 1000 if median_us else mean,
    }


@dataclass(frozen=True)
class CommandDevice:
    """Any command that takes the model path and prints latencies: run `protocol.rounds` times;
    every match of `pattern` (group 1, in ms) in its output is one sample."""

    template: str
    pattern: str = DEFAULT_PATTERN
    protocol: LatencyProtocol = field(default_factory=LatencyProtocol)
    timeout_s: float = 120.0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if "{model}" not in self.template:
            raise ValueError(f"device command {self.template!r} has no {{model}} placeholder for the .tflite path")
        try:
            compiled = re.compile(self.pattern)
        except re.error as error:
            raise ValueError(f"latency regex {self.pattern!r} is not a valid regular expression: {error}") from None
        if compiled.groups < 1:
            raise ValueError(f"latency regex {self.pattern!r} needs a group capturing the number of milliseconds")

    @property
    def name(self) -> str:
        return f"cmd:{self.template}"

    def fingerprint(self) -> dict:
        info = {"device": "cmd", "cpu": "user command", "command": self.template, "pattern": self.pattern}
        info |= {
            "runtime": "user command",
            "converter": converter(),
            "threads": self.protocol.threads,
            "precision": self.precision,
        }
        info["id"] = fingerprint_id(info)
        return info

    def measure(self, path: str) -> LatencyResult:
        with taking_turns(self.name):
            return self._measure(path)

    def _measure(self, path: str) -> LatencyResult:
        argv = [token.replace("{model}", path) for token in shlex.split(self.template)]
        groups = []
        for _ in range(self.protocol.rounds):
            output = _run(argv, timeout_s=self.timeout_s, what="device command")
            values = []
            for match in re.finditer(self.pattern, output):
                try:
                    values.append(float(match.group(1)))
                except ValueError:
                    raise DeviceError(f"device command: {match.group(1)!r} is not a number of ms") from None
            if not values:
                tail = output.strip().splitlines()[-1][:200] if output.strip() else "no output"
                raise DeviceError(f"device command printed no latency matching {self.pattern!r}: {tail}")
            if not all(v > 0 and np.isfinite(v) for v in values):
                raise DeviceError(f"device command printed a non-positive latency {min(values)}")
            groups.append(np.array(values))
        return summarize_rounds(groups)  # each round is a call of its own: spells are set aside as on the host


Device = HostDevice | AdbDevice | CommandDevice


def make_device(
    text: str,
    *,
    protocol: LatencyProtocol | None = None,
    precision: str = "fp32",
    pin_core: int | None = None,
    adb: str = "adb",
    binary: str = "/data/local/tmp/benchmark_model",
    delegate: str = "xnnpack",
    pattern: str = DEFAULT_PATTERN,
    timeout_s: float = 120.0,
) -> Device:
    """The device named by a `--device` value; ValueError with a one-line message otherwise."""
    protocol = protocol or LatencyProtocol()
    if delegate not in DELEGATES:
        raise ValueError(f"delegate={delegate!r} is not one of {', '.join(DELEGATES)}")
    if timeout_s <= 0:
        raise ValueError(f"device timeout={timeout_s!r} must be positive")
    if pin_core is not None:
        if text != "host":
            raise ValueError(f"--latency-pin-core pins the host's measurement; it means nothing for device={text!r}")
        available = sorted(os.sched_getaffinity(0))
        if pin_core not in available:
            raise ValueError(f"latency-pin-core={pin_core} is not one of this process's cores {available}")
    if text == "host":
        return HostDevice(protocol=protocol, pin_core=pin_core, precision=precision)
    if text == "adb" or text.startswith("adb:"):
        serial = text[4:] or None
        return AdbDevice(
            serial=serial, protocol=protocol, adb=adb, binary=binary, delegate=delegate, timeout_s=timeout_s, precision=precision
        )
    if text.startswith("cmd:"):
        return CommandDevice(template=text[4:], pattern=pattern, protocol=protocol, timeout_s=timeout_s, precision=precision)
    raise ValueError(f"device={text!r} is not one of host, adb[:SERIAL], cmd:COMMAND")
