import os
import pickle
import shutil
import tracemalloc

import numpy as np
import pytest

from trainers.cifar import DataError, load_cifar, locate_cifar, train_val_split


def test_both_official_formats_give_identical_real_data(cifar_dir, tmp_path):
    binary = load_cifar("cifar10", data_dir=str(cifar_dir))  # bin is preferred when both exist
    assert binary.source.endswith("cifar-10-batches-bin")
    shutil.copytree(cifar_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    python = load_cifar("cifar10", data_dir=str(tmp_path))
    assert python.source.endswith("cifar-10-batches-py")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(binary, name), getattr(python, name))
    assert binary.x_train.shape == (5000, 32, 32, 3) and binary.x_train.dtype == np.uint8
    assert binary.x_test.shape == (1000, 32, 32, 3)
    assert binary.class_names[:3] == ("airplane", "automobile", "bird") == python.class_names[:3]
    # Real photographs, not noise: all ten classes present, typical CIFAR mean brightness.
    assert set(np.unique(binary.y_train)) == set(range(10))
    assert 100 < binary.x_train.mean() < 140


def test_train_val_split_is_fixed_and_disjoint(cifar_dir):
    data = load_cifar(data_dir=str(cifar_dir))
    train, val = train_val_split(data, val_size=500)
    _, val2 = train_val_split(data, val_size=500)
    np.testing.assert_array_equal(val, val2)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == 5000


def test_both_official_cifar100_formats_give_identical_real_data_with_the_fine_label(cifar100_dir, tmp_path):
    binary = load_cifar("cifar100", data_dir=str(cifar100_dir))
    assert binary.source.endswith("cifar-100-binary")
    shutil.copytree(cifar100_dir / "cifar-100-python", tmp_path / "cifar-100-python")
    python = load_cifar("cifar100", data_dir=str(tmp_path))
    assert python.source.endswith("cifar-100-python")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(binary, name), getattr(python, name))
    assert binary.x_train.shape == (10_000, 32, 32, 3) and binary.x_test.shape == (2000, 32, 32, 3)
    assert binary.num_classes == 100 and binary.class_names[:3] == ("apple", "aquarium_fish", "baby")
    # the fine label, not the superclass: the official files carry both
    with open(cifar100_dir / "cifar-100-python" / "train", "rb") as f:
        official = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(binary.y_train, official[b"fine_labels"])
    assert not np.array_equal(binary.y_train, official[b"coarse_labels"])
    assert len(np.unique(binary.y_train)) > 90 and binary.y_train.max() > 19  # 100 classes in a shuffled prefix
    records = np.fromfile(cifar100_dir / "cifar-100-binary" / "train.bin", dtype=np.uint8).reshape(-1, 3074)
    np.testing.assert_array_equal(binary.y_train, records[:, 1])  # byte 0 is the superclass, byte 1 the class
    # channel-major planes become HWC: pixel (0, 0) of image 0 is (R, G, B) = bytes 2, 1026, 2050
    np.testing.assert_array_equal(binary.x_train[0, 0, 0], records[0, [2, 2 + 1024, 2 + 2048]])
    assert 100 < binary.x_train.mean() < 140  # real photographs (published mean 0.48 of 255)


def test_truncated_binary_batch_is_named(cifar_dir, tmp_path):
    shutil.copytree(cifar_dir / "cifar-10-batches-bin", tmp_path / "cifar-10-batches-bin")
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"data_batch_3\.bin is truncated"):
        load_cifar(data_dir=str(tmp_path))


def test_missing_batch_is_named(cifar_dir, tmp_path):
    shutil.copytree(cifar_dir / "cifar-10-batches-bin", tmp_path / "cifar-10-batches-bin")
    os.remove(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    with pytest.raises(DataError, match=r"test_batch\.bin is missing"):
        load_cifar(data_dir=str(tmp_path))


def test_python_batch_with_code_in_it_is_refused(cifar_dir, tmp_path):
    shutil.copytree(cifar_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f)
    with pytest.raises(DataError, match="forbidden object"):
        load_cifar(data_dir=str(tmp_path))


def test_corrupt_python_batch(cifar_dir, tmp_path):
    shutil.copytree(cifar_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_2 is truncated or not a CIFAR python batch"):
        load_cifar(data_dir=str(tmp_path))


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar(data_dir=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="put the official cifar-10-batches-bin/ or cifar-10-batches-py/ folder"):
        locate_cifar(data_dir=str(tmp_path))


def test_offline_fails_fast_with_where_to_put_files(tmp_path, monkeypatch):
    import time

    import trainers.cifar as cifar

    # the real probe, against a host that cannot exist: bounded by its timeout, not by tfds' minutes
    start = time.perf_counter()
    assert cifar._online(host="cifar.invalid", port=443, timeout_s=0.5) is False  # RFC 6761: never resolves
    assert time.perf_counter() - start < 2.0
    monkeypatch.setattr(cifar, "_online", lambda: False)
    with pytest.raises(DataError, match="offline: put the official"):
        locate_cifar(data_dir=str(tmp_path), allow_download=True)


def test_data_dir_from_environment(cifar_dir, monkeypatch):
    monkeypatch.setenv("NAS_DATA_DIR", str(cifar_dir))
    assert locate_cifar()[0] == "bin"


def test_the_cifar_reader_refuses_a_declared_size_before_allocating_it(tmp_path):
    """A pickle of 89 bytes declaring a 2-billion-element array: refused with a message, and
    nothing close to its size is ever allocated."""
    from trainers.cifar import DataError, _unpickle

    class Bomb:
        def __reduce__(self):
            return (np._core.multiarray._reconstruct, (np.ndarray, (2_000_000_000,), b"b"))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(Bomb(), protocol=4))
    assert path.stat().st_size < 100
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="larger than any official CIFAR array"):
            _unpickle(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000
