"""Proxy training learns on real CIFAR-10 (evidence, not plumbing: chance is 10 %)."""

import numpy as np
import pytest

from search_spaces import REFERENCES, ArchSpec
from trainers.cifar import load_cifar, train_val_split
from trainers.proxy import ProxyBudget, proxy_model, train_proxy


@pytest.mark.slow
def test_short_training_is_well_above_chance_on_real_cifar(cifar_dir):
    data = load_cifar(data_dir=str(cifar_dir))
    train_idx, val_idx = train_val_split(data, val_size=1000)
    budget = ProxyBudget(train_images=4000, val_images=1000, epochs=2)
    model = proxy_model(ArchSpec.from_string(REFERENCES["mnasnet-small"]))
    result = train_proxy(
        model,
        data.x_train[train_idx[:4000]],
        data.y_train[train_idx[:4000]],
        data.x_train[val_idx],
        data.y_train[val_idx],
        budget=budget,
        num_classes=10,
    )
    # 1000 held-out images: at chance (10 %) the accuracy would exceed 14 % with probability < 1e-4.
    assert result.accuracy > 0.2, result
    assert result.steps == 2 * (4000 // 64)
    assert [fraction for fraction, _ in result.curve] == [0.25, 0.5] and all(0 <= a <= 1 for _, a in result.curve)


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError, match="epochs=0"):
        ProxyBudget(epochs=0)
    with pytest.raises(ValueError, match="optimizer='lion'"):
        ProxyBudget(optimizer="lion")


def test_batched_augmentation_yields_exact_flipped_crops():
    import tensorflow as tf

    from trainers.fused import augment_batch

    images = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 3)).astype(np.float32)
    out = augment_batch(tf.constant(images), seed=tf.constant([1, 0])).numpy()
    again = augment_batch(tf.constant(images), seed=tf.constant([1, 0])).numpy()
    assert np.array_equal(out, again)  # stateless: a resumed run sees the same images
    flips, shifts = 0, set()
    for image, crop in zip(images, out, strict=True):
        matches = [
            (flipped, dy, dx)
            for flipped, source in ((False, image), (True, image[:, ::-1]))
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(np.pad(source, ((4, 4), (4, 4), (0, 0)), mode="reflect")[dy : dy + 32, dx : dx + 32], crop)
        ]
        assert matches, "every output must be an exact crop of the padded, possibly flipped, image"
        flips += matches[0][0]
        shifts.add(matches[0][1:])
    assert 0 < flips < 16 and len(shifts) > 4  # random per image, not one choice for the batch


def test_augmentation_keeps_shapes_and_pixel_range():
    from trainers.fused import batches

    x = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    images, labels = next(iter(batches(x, np.arange(10) % 3, num_classes=3, batch_size=4, seed=0, key=0, cutout=8)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 3)
    assert float(images.numpy().min()) >= 0 and float(images.numpy().max()) <= 255


def test_cutout_fills_one_square_per_image_with_the_mean_pixel():
    import tensorflow as tf

    from search_spaces.keras_blocks import CIFAR_MEAN
    from trainers.fused import augment_batch

    images = tf.zeros((64, 32, 32, 3))  # black images: every non-zero pixel comes from cutout
    out = augment_batch(images, seed=tf.constant([3, 0]), cutout=8).numpy()
    erased = np.all(np.isclose(out, np.array(CIFAR_MEAN, np.float32)), axis=-1)
    assert np.all(erased | np.all(out == 0, axis=-1))  # a pixel is either untouched or the mean colour
    for mask in erased:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert mask.sum() == len(rows) * len(cols) and len(rows) <= 8 and len(cols) <= 8  # one axis-aligned square
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
    sizes = erased.reshape(64, -1).sum(1)
    assert (sizes == 64).mean() > 0.2 and sizes.min() < 64  # whole squares, and squares clipped at the edges


def test_the_chance_ceiling_is_chance_plus_three_standard_errors():
    from trainers.proxy import chance_ceiling

    # CIFAR-100, 2,000 validation images: chance 0.01, standard error 0.0022
    assert chance_ceiling(num_classes=100, val_images=2000) == pytest.approx(0.01 + 3.1 * (0.01 * 0.99 / 2000) ** 0.5)
    assert 0.016 < chance_ceiling(num_classes=100, val_images=2000) < 0.018  # the 0.018 and 0.031 trials: one is noise
    assert 0.11 < chance_ceiling(num_classes=10, val_images=2000) < 0.125
