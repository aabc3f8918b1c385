"""CIFAR-10/100 from the official on-disk formats (Krizhevsky, 2009, "Learning Multiple Layers of
Features from Tiny Images"), with tensorflow-datasets as the fallback where a machine is online.

Looked for, in order: the `data_dir` argument (``--data-dir``), ``$NAS_DATA_DIR``, ``./data``,
``~/.keras/datasets``. In each, the binary version (``cifar-10-batches-bin``,
``cifar-100-binary``) is preferred over the python version (``cifar-10-batches-py``,
``cifar-100-python``); the python version is read by an unpickler that accepts only the
numpy types those files contain, so a foreign pickle cannot run code.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

log = logging.getLogger(__name__)

IMAGE_BYTES = 32 * 32 * 3


class DataError(RuntimeError):
    """The data cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class CifarLayout:
    """Where one data set keeps its files in each official format."""

    name: str
    bin_dir: str
    bin_train: tuple[str, ...]
    bin_test: str
    label_bytes: int  # CIFAR-100 stores (coarse, fine); the fine label is the last byte
    py_dir: str
    py_train: tuple[str, ...]
    py_test: str
    py_label_key: bytes
    py_meta: str
    py_names_key: bytes
    bin_meta: str
    num_classes: int
    tfds_name: str


LAYOUTS = {
    "cifar10": CifarLayout(
        name="cifar10",
        bin_dir="cifar-10-batches-bin",
        bin_train=tuple(f"data_batch_{k}.bin" for k in range(1, 6)),
        bin_test="test_batch.bin",
        label_bytes=1,
        py_dir="cifar-10-batches-py",
        py_train=tuple(f"data_batch_{k}" for k in range(1, 6)),
        py_test="test_batch",
        py_label_key=b"labels",
        py_meta="batches.meta",
        py_names_key=b"label_names",
        bin_meta="batches.meta.txt",
        num_classes=10,
        tfds_name="cifar10",
    ),
    "cifar100": CifarLayout(
        name="cifar100",
        bin_dir="cifar-100-binary",
        bin_train=("train.bin",),
        bin_test="test.bin",
        label_bytes=2,
        py_dir="cifar-100-python",
        py_train=("train",),
        py_test="test",
        py_label_key=b"fine_labels",
        py_meta="meta",
        py_names_key=b"fine_label_names",
        bin_meta="fine_label_names.txt",
        num_classes=100,
        tfds_name="cifar100",
    ),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as uint8 NHWC arrays, labels as int32."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# Finding the files


def candidate_dirs(data_dir: str | None) -> list[str]:
    if data_dir:
        return [data_dir]  # an explicit directory is the only place looked at
    dirs = [os.environ.get("NAS_DATA_DIR"), os.path.join(os.getcwd(), "data"), os.path.expanduser("~/.keras/datasets")]
    return [d for d in dirs if d]


def locate_cifar(name: str = "cifar10", *, data_dir: str | None = None, allow_download: bool | None = None) -> tuple[str, str]:
    """(format, folder) of the local copy, or ("download", target) where tfds may fetch it.
    Cheap: reads nothing, so the CLI can fail fast before any TensorFlow work."""
    if name not in LAYOUTS:
        raise DataError(f"dataset={name!r} is unknown; expected one of {sorted(LAYOUTS)}")
    layout = LAYOUTS[name]
    if data_dir is not None and not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir!r} does not exist")
    for directory in candidate_dirs(data_dir):
        for fmt, folder in (("bin", layout.bin_dir), ("py", layout.py_dir)):
            if os.path.isdir(os.path.join(directory, folder)):
                return fmt, os.path.join(directory, folder)
    looked = ", ".join(candidate_dirs(data_dir))
    where = f"put the official {layout.bin_dir}/ or {layout.py_dir}/ folder in one of them (or pass --data-dir)"
    if allow_download is None:
        allow_download = os.environ.get("NAS_NO_DOWNLOAD", "") in ("", "0")
    if not allow_download:
        raise DataError(f"no {name} found in {looked}: {where}")
    if not _online():
        raise DataError(f"no {name} found in {looked} and this machine is offline: {where}")
    return "download", data_dir or os.environ.get("NAS_DATA_DIR") or os.path.join(os.getcwd(), "data")


def check_cifar(name: str = "cifar10", *, data_dir: str | None = None) -> str:
    """Fail fast on a missing, truncated or foreign local copy without keeping it in memory:
    binary batches are checked by size, python batches are unpickled (safely) and dropped.
    Returns the folder found (or the download target)."""
    fmt, folder = locate_cifar(name, data_dir=data_dir)
    layout = LAYOUTS[name]
    if fmt == "bin":
        record = layout.label_bytes + IMAGE_BYTES
        for filename in (*layout.bin_train, layout.bin_test):
            path = os.path.join(folder, filename)
            if not os.path.isfile(path):
                raise DataError(f"{path} is missing from the CIFAR binary folder")
            size = os.path.getsize(path)
            if size == 0 or size % record:
                raise DataError(f"{path} is truncated or not a {name} binary batch ({size} bytes is not a multiple of {record})")
    elif fmt == "py":
        _read_python(layout, folder)
    return folder


def load_cifar(name: str = "cifar10", *, data_dir: str | None = None, allow_download: bool | None = None) -> Dataset:
    """Load CIFAR-10/100 from local official files, or download with tfds when allowed and online."""
    fmt, folder = locate_cifar(name, data_dir=data_dir, allow_download=allow_download)
    layout = LAYOUTS[name]
    readers = {"bin": _read_binary, "py": _read_python, "download": _download}
    return readers[fmt](layout, folder)


# ---------------------------------------------------------------------------------------------
# Binary version: records of label byte(s) + 3072 pixel bytes (R, G, B planes)


def _read_binary(layout: CifarLayout, directory: str) -> Dataset:
    x_train, y_train = _concat([_read_binary_file(layout, os.path.join(directory, f)) for f in layout.bin_train])
    x_test, y_test = _read_binary_file(layout, os.path.join(directory, layout.bin_test))
    names = _read_lines(os.path.join(directory, layout.bin_meta), layout.num_classes)
    return _checked(layout, x_train, y_train, x_test, y_test, names, source=directory)


def _read_binary_file(layout: CifarLayout, path: str) -> tuple[np.ndarray, np.ndarray]:
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing from the CIFAR binary folder")
    raw = np.fromfile(path, dtype=np.uint8)
    record = layout.label_bytes + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path} is truncated or not a {layout.name} binary batch ({raw.size} bytes is not a multiple of {record})"
        )
    rows = raw.reshape(-1, record)
    labels = rows[:, layout.label_bytes - 1].astype(np.int32)
    return _planes_to_nhwc(rows[:, layout.label_bytes :]), labels


def _read_lines(path: str, expected: int) -> tuple[str, ...]:
    if not os.path.isfile(path):
        return tuple(str(k) for k in range(expected))
    with open(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    return names if len(names) == expected else tuple(str(k) for k in range(expected))


# ---------------------------------------------------------------------------------------------
# Python version: pickled dicts, read without executing anything but numpy reconstruction


class _CifarUnpickler(pickle.Unpickler):
    """Accepts only what the official CIFAR pickles contain: numpy arrays and dtypes."""

    ALLOWED: ClassVar = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"forbidden object {module}.{name} in a CIFAR batch")
        module = module.replace("numpy.core.", "numpy._core.") if module.startswith("numpy.core.") else module
        found = super().find_class(module, name)
        return _bounded_reconstruct(found) if name == "_reconstruct" else found


#: the largest array an official file holds: CIFAR-100's 50,000 training images of 3,072 bytes
MAX_ARRAY_ELEMENTS = 50_000 * IMAGE_BYTES


def _bounded_reconstruct(reconstruct):
    """numpy's `_reconstruct` allocates the shape it is given before any data is read: a 60-byte
    pickle could ask for gigabytes. Official batches ask for an empty array and fill it from their
    own bytes, so any declared size beyond the official maximum is refused before allocating."""

    def checked(subtype, shape, dtype):
        dims = shape if isinstance(shape, tuple) else (shape,)
        count = 1
        for dim in dims:
            if not isinstance(dim, int) or dim < 0:
                raise pickle.UnpicklingError(f"array shape {shape!r} is not a shape")
            count *= dim
        if count > MAX_ARRAY_ELEMENTS:
            raise pickle.UnpicklingError(f"an array of {count:,} elements is larger than any official CIFAR array")
        return reconstruct(subtype, shape, dtype)

    return checked


def _unpickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing from the CIFAR python folder")
    try:
        with open(path, "rb") as f:
            document = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"{path} is truncated or not a CIFAR python batch ({error})") from None
    if not isinstance(document, dict):
        raise DataError(f"{path} is not a CIFAR python batch (holds {type(document).__name__})")
    return document


def _read_python(layout: CifarLayout, directory: str) -> Dataset:
    def batch(filename: str) -> tuple[np.ndarray, np.ndarray]:
        path = os.path.join(directory, filename)
        document = _unpickle(path)
        if b"data" not in document or layout.py_label_key not in document:
            raise DataError(f"{path} lacks the b'data' / {layout.py_label_key!r} entries of a {layout.name} batch")
        data = np.asarray(document[b"data"], dtype=np.uint8)
        labels = np.asarray(document[layout.py_label_key], dtype=np.int32)
        if data.ndim != 2 or data.shape[1] != IMAGE_BYTES or len(data) != len(labels):
            raise DataError(f"{path} holds data of shape {data.shape} with {len(labels)} labels; expected (N, 3072) and N")
        return _planes_to_nhwc(data), labels

    x_train, y_train = _concat([batch(f) for f in layout.py_train])
    x_test, y_test = batch(layout.py_test)
    names = tuple(str(k) for k in range(layout.num_classes))
    meta_path = os.path.join(directory, layout.py_meta)
    if os.path.isfile(meta_path):
        raw = _unpickle(meta_path).get(layout.py_names_key, [])
        if len(raw) == layout.num_classes:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    return _checked(layout, x_train, y_train, x_test, y_test, names, source=directory)


# ---------------------------------------------------------------------------------------------


def _planes_to_nhwc(planes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(planes.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _checked(layout: CifarLayout, x_train, y_train, x_test, y_test, names, *, source: str) -> Dataset:
    for split, labels in (("train", y_train), ("test", y_test)):
        if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
            raise DataError(f"{source}: {split} labels span {labels.min()}..{labels.max()}, outside 0..{layout.num_classes - 1}")
    log.info("loaded %s from %s: %d train, %d test images", layout.name, source, len(x_train), len(x_test))
    return Dataset(layout.name, x_train, y_train, x_test, y_test, tuple(names), source)


def _online(host: str = "www.cs.toronto.edu", port: int = 443, timeout_s: float = 3.0) -> bool:
    """A quick reachability probe: tfds itself blocks for minutes before failing offline."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download(layout: CifarLayout, target: str) -> Dataset:
    import tensorflow_datasets as tfds

    log.info("downloading %s with tensorflow-datasets into %s", layout.name, target)
    splits = tfds.as_numpy(
        tfds.load(layout.tfds_name, split=["train", "test"], batch_size=-1, as_supervised=True, data_dir=target)
    )
    (x_train, y_train), (x_test, y_test) = splits
    names = tuple(str(k) for k in range(layout.num_classes))
    return _checked(layout, x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), names, source=f"tfds:{target}")


def train_val_split(dataset: Dataset, *, val_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed split of the *training* set (never the test set): (train indices, val indices), both in the seed's
    order; `val_size` 0 trains every image (a recipe without validation) and leaves the val indices empty."""
    n = len(dataset.x_train)
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} must lie between 0 and {n - 1} (the training set has {n} images)")
    order = np.random.default_rng(seed).permutation(n)
    return order[val_size:], order[:val_size]
