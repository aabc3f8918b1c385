"""The worker process: replaced after `trials_per_worker` trainings (what leaks memory), while
latency measurements, which the latency-aware strategy runs several of per trial, do not count."""

import pytest

from nas.worker import MeasureJob, Status, TrialJob, TrialRunner

ARCH = "conv_r1_k3_s2_c8-mbconv_r1_k3_s2_e3_c16-head_c32"


@pytest.mark.slow
def test_the_worker_is_replaced_after_its_trainings_not_its_measurements(cifar_dir, tmp_path):
    from latency.devices import HostDevice
    from latency.measure import LatencyProtocol

    device = HostDevice(protocol=LatencyProtocol(warmup_runs=1, rounds=2, runs_per_round=3))
    measure = MeasureJob(ARCH, 32, 10, device, str(tmp_path / "m.tflite"))
    train = TrialJob(
        arch=ARCH, dataset="cifar10", data_dir=str(cifar_dir), train_images=128, val_images=64, epochs=1, batch_size=32, seed=0
    )
    with TrialRunner(trials_per_worker=1) as runner:
        outcomes = [runner.run(measure)]
        first = runner.worker_pid
        outcomes.append(runner.run(measure))
        assert runner.worker_pid == first  # measurements do not use the worker up
        outcomes.append(runner.run(train))
        assert runner.worker_pid is None  # one training: replaced
        outcomes.append(runner.run(measure))
        assert runner.worker_pid not in (None, first)
    assert [o.status for o in outcomes] == [Status.OK] * 4, [o.reason for o in outcomes]


def a_job_without_data(data_dir: str) -> TrialJob:
    """A training job that fails as soon as the worker has imported TensorFlow: its data directory is missing."""
    return TrialJob(arch=ARCH, dataset="cifar10", data_dir=data_dir, train_images=1, val_images=1, epochs=1, batch_size=1, seed=0)


def test_a_hung_worker_job_is_stopped_after_its_timeout():
    with TrialRunner() as runner:  # in half a second the worker cannot even import TensorFlow
        outcome = runner.run(a_job_without_data("/nonexistent"), timeout_s=0.5)
    assert outcome.status is Status.FAILED and outcome.reason.startswith("timed out after 0.5 s")


def test_a_failed_job_says_why_on_one_line(tmp_path):
    """A job's exception comes back as the trial's failure reason: its kind and the first line of its message."""
    with TrialRunner() as runner:
        outcome = runner.run(a_job_without_data(str(tmp_path / "none")))
    assert outcome.status is Status.FAILED, outcome
    assert outcome.reason == f"DataError: data directory '{tmp_path / 'none'}' does not exist", outcome.reason
