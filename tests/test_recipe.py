"""The retraining recipe: the run lengths it accepts, and its weight average (EMA), whose decay stays
in [0, 1) for every run length, which averages the trainable weights only, and whose weights get
BatchNorm statistics measured for them (not averaged along with the kernels), after which the
model's own weights come back intact."""

import numpy as np
import pytest

from trainers.full import Recipe, average_decay


@pytest.mark.parametrize("total_steps", [1, 2, 4, 5, 10, 11, 100, 10_000, 10**7])
def test_the_decay_stays_in_zero_one_for_every_run_length(total_steps):
    decay = average_decay(Recipe(), total_steps)
    assert 0.0 <= decay < 1.0
    assert decay <= Recipe().ema_decay
    if total_steps >= 10_000:
        assert decay == Recipe().ema_decay  # long runs average as the recipe says


def _small_model():
    import keras

    from search_spaces.keras_blocks import FusedBatchNormalization

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = FusedBatchNormalization(momentum=0.9, name="c1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="c2_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def test_reestimated_statistics_are_the_mean_of_the_batch_moments():
    from trainers.fused import BatchNormEstimator

    model = _small_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(16, 8, 8, 3)).astype(np.float32) for _ in range(3)]
    estimator = BatchNormEstimator(model)
    assert [layer.name for layer in estimator.layers] == ["c1_bn", "c2_bn"]
    kernels = [w.numpy().copy() for w in model.trainable_weights]
    assert estimator.reestimate(iter(batches)) == 3

    # the first BatchNorm sees the first convolution's outputs: compute its moments by hand
    conv = model.get_layer("c1")
    expected_mean, expected_var = [], []
    for images in batches:
        out = np.asarray(conv(images)).reshape(-1, 4).astype(np.float64)
        expected_mean.append(out.mean(axis=0))
        expected_var.append(out.var(axis=0, ddof=1))
    layer = model.get_layer("c1_bn")
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.mean(expected_mean, axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), np.mean(expected_var, axis=0), rtol=1e-4, atol=1e-5)
    # Keras' own BatchNormalization is re-estimated too, and no trainable weight moved
    assert not np.allclose(model.get_layer("c2_bn").moving_variance.numpy(), 1.0)
    for before, w in zip(kernels, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(before, w.numpy())


def test_the_average_is_applied_with_its_own_statistics_and_then_undone():
    import tensorflow as tf

    from trainers.fused import WeightAverage

    with pytest.raises(ValueError, match=r"decay=-1.5 must lie in \[0, 1\)"):
        WeightAverage(_small_model(), decay=-1.5)

    model = _small_model()
    average = WeightAverage(model, decay=0.5, every=1)
    assert len(average.shadow) == len(model.trainable_weights)  # BatchNorm statistics are not averaged
    for w in model.trainable_weights:  # the raw weights move on; the average lags behind
        w.assign(w + tf.ones_like(w))
    average.update(1)
    raw = [w.numpy().copy() for w in model.weights]
    averaged_kernel = average.shadow[0].numpy().copy()
    np.testing.assert_allclose(averaged_kernel, raw[0] - 0.5, rtol=1e-6)  # halfway from the start to the raw weights
    bn = model.get_layer("c1_bn")
    batches = [np.random.default_rng(k).normal(size=(8, 8, 8, 3)).astype(np.float32) * 50 for k in range(2)]
    with average.applied(iter(batches)):
        kernel = model.get_layer("c1").kernel.numpy()
        np.testing.assert_allclose(kernel, averaged_kernel)  # the averages are in the model
        assert not np.allclose(bn.moving_variance.numpy(), raw[[w.path for w in model.weights].index(bn.moving_variance.path)])
    for before, w in zip(raw, model.weights, strict=True):  # weights and statistics restored exactly
        np.testing.assert_array_equal(before, w.numpy())


def _noise_dataset():
    """300 random images: plumbing only, no claim about learning."""
    from trainers.cifar import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(300, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=300)
    names = tuple(str(k) for k in range(10))
    return Dataset(name="cifar10", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50], class_names=names, source="synthetic")


def test_a_run_too_short_to_average_delivers_its_trained_weights(tmp_path):
    """Four steps: the decay is 0, so the "average" is the last weights, never an extrapolation."""
    from search_spaces import ArchSpec
    from search_spaces.references import REFERENCES
    from trainers.full import retrain

    dataset = _noise_dataset()
    recipe = Recipe(epochs=2, batch_size=64, val_images=100, train_images=128, ema_bn_batches=2)
    result = retrain(ArchSpec.from_string(REFERENCES["mnasnet-small"]), dataset, recipe=recipe, workdir=str(tmp_path))
    for record in result.history:
        assert np.isfinite(record["loss"]) and np.isfinite(record["val_accuracy_ema"])
        assert record["val_accuracy"] == max(record["val_accuracy_raw"], record["val_accuracy_ema"])
        assert record["weights"] in ("raw", "average")
    assert result.best_weights in ("raw", "average")
    assert result.val_accuracy == max(r["val_accuracy"] for r in result.history)


def test_the_average_s_statistics_come_from_batches_augmented_as_training_s(tmp_path, monkeypatch):
    """BatchNorm's statistics for the average are re-estimated on batches with the recipe's cutout: without
    it they describe other inputs than training normalised (1.1 points lower at the end of a 100-epoch run,
    bench/bn_reestimation.py)."""
    from search_spaces import ArchSpec
    from search_spaces.references import REFERENCES
    from trainers import fused
    from trainers.full import retrain

    cutouts, real_batches = [], fused.batches
    monkeypatch.setattr(fused, "batches", lambda *a, **k: cutouts.append(k.get("cutout", 0)) or real_batches(*a, **k))
    recipe = Recipe(epochs=1, batch_size=64, val_images=100, train_images=128, ema_bn_batches=2, cutout=8)
    retrain(ArchSpec.from_string(REFERENCES["mnasnet-small"]), _noise_dataset(), recipe=recipe, workdir=str(tmp_path))
    assert len(cutouts) == 2 and set(cutouts) == {8}  # the epoch's batches and the re-estimation's


def test_without_validation_every_image_trains_and_the_last_epoch_s_raw_weights_ship(tmp_path, monkeypatch):
    """`val_images=0`: the whole training set trains, no weight average is kept (nothing would choose it), and
    what ships is the last epoch's raw weights, with no validation figure made up for it."""
    from nas.progress import retrain_line
    from results.export import export_retrained
    from search_spaces import ArchSpec
    from search_spaces.references import REFERENCES
    from trainers import fused
    from trainers.full import load_checkpoint, retrain

    sizes, real_batches = [], fused.batches
    monkeypatch.setattr(fused, "batches", lambda x, *a, **k: sizes.append(len(x)) or real_batches(x, *a, **k))
    recipe = Recipe(epochs=2, batch_size=64, val_images=0, ema_bn_batches=2)
    assert not recipe.validated and "no validation: the last epoch's raw weights ship" in recipe.describe()
    assert "EMA" not in recipe.describe()
    result = retrain(ArchSpec.from_string(REFERENCES["mnasnet-small"]), _noise_dataset(), recipe=recipe, workdir=str(tmp_path))
    assert sizes == [300, 300]  # every image, each epoch; no batches re-estimate an average
    assert result.best_epoch == 2 and result.best_weights == "raw"
    assert result.val_accuracy is None and result.val_accuracy_flip is None
    assert all("val_accuracy" not in record for record in result.history)
    _, arrays = load_checkpoint(str(tmp_path / "checkpoint.npz"))
    shipped = sorted(k for k in arrays if k.startswith("best_"))
    assert shipped and all(np.array_equal(arrays[k], arrays["w_" + k[5:]]) for k in shipped)
    assert "no validation: epoch 2's raw weights; test accuracy" in retrain_line(result)
    # and it exports (its int8 calibration images come from the training set, here all of it: it once failed)
    card = export_retrained(str(tmp_path), dataset=_noise_dataset(), device=None, formats=("int8",), measure=False)
    assert card.formats["int8"].error is None and card.formats["int8"].test_accuracy is not None
    with pytest.raises(ValueError, match="val-images=-1 must be an integer >= 0"):
        Recipe(val_images=-1)


def test_one_epoch_is_a_valid_recipe():
    from trainers.full import Recipe

    recipe = Recipe(epochs=1)
    assert recipe.warmup == pytest.approx(0.1)
    assert Recipe(epochs=30).warmup == 2.0


def test_a_timed_recipe_fits_its_epochs_to_the_minutes():
    recipe = Recipe(minutes=120)
    # two epochs took 110 s (the first traces), the second 50 s: 7,090 s left hold 141 more
    assert recipe.fitting_epochs(2, 110.0, 50.0) == 143
    assert recipe.fitting_epochs(2, 110.0, 10_000.0) == 3  # never fewer than the warm-up and one epoch to decay
    assert recipe.fitting_epochs(2, 9_000.0, 50.0) == 3  # the warm-up alone overran the minutes
    assert recipe.warmup == 2.0  # fixed: the length is known only at the warm-up's end
    assert "as many epochs as fit in 120 minutes" in recipe.describe()
    with pytest.raises(ValueError, match=r"minutes=0\.0 must lie in"):  # a float, as the command line gives it
        Recipe(minutes=0)
    for warmup in (1, 3):
        with pytest.raises(ValueError, match=rf"warmup-epochs={warmup} must lie in \[2, 3\) with --minutes"):
            Recipe(minutes=10, warmup_epochs=warmup)


def test_a_timed_run_refits_its_length_over_its_first_tenth_from_the_median_epoch():
    """Trial 19 on 2026-12-06: epoch 2 took 47 s and the next ones 49-51 s; fitted to epoch 2 alone, 147 epochs
    would have overrun 2 hours by minutes. The first epoch (it traces) never counts."""
    recipe = Recipe(minutes=115)
    history = [{"seconds": s} for s in (55.0, 47.0, 50.0, 50.0, 51.0)]
    assert recipe.timed_length(history[:1], 55.0, None) is None  # inside the warm-up: not yet
    assert recipe.timed_length(history[:2], 102.0, None) == 2 + (6_900 - 102) // 47  # 146
    # after 5 epochs: median of 47, 50, 50, 51 is 50 s
    assert recipe.timed_length(history, 253.0, 146) == 5 + (6_900 - 253) // 50  # 137
    assert recipe.timed_length(history * 3, 759.0, 150) == 15 + (6_900 - 759) // 50  # still in the first tenth
    # past it the schedule has begun to decay: the length stays while the rest fits (759 + 122 x 50 <= 6,900 s)...
    assert recipe.timed_length(history * 3, 759.0, 137) is None
    assert recipe.timed_length([*history * 3, *[{"seconds": 40.0}] * 10], 1_159.0, 137) is None  # ...never grows...
    # ...and shortens when the last 10 epochs say the rest would overrun the minutes (MobileNetV2-0.5 on
    # 2026-12-06: 60 s epochs in the first tenth, 65 s later; its 115 minutes took 121)
    slower = [*history * 3, *[{"seconds": 65.0}] * 10]  # 25 epochs in 1,409 s; 5,491 s left hold 84 of 65 s
    assert recipe.timed_length(slower, 1_409.0, 137) == 25 + 84
    assert Recipe().timed_length(history, 253.0, None) is None  # a run of fixed epochs never refits


def test_a_timed_run_chooses_its_length_at_the_warm_up_s_end_and_resumes_with_it(tmp_path):
    """Minutes too few for more than the minimum: 3 epochs, the schedule decayed to zero at the third; runs
    stopped after their first epoch (length not chosen yet) and after their second (chosen) resume and compute
    what an uninterrupted run does (deterministic kernels)."""
    from nas.progress import epoch_line
    from search_spaces import ArchSpec
    from search_spaces.references import REFERENCES
    from trainers.full import load_checkpoint, retrain
    from trainers.schedules import WarmupCosine

    dataset = _noise_dataset()
    recipe = Recipe(minutes=1e-4, batch_size=64, val_images=100, train_images=128, ema_bn_batches=2, deterministic=True)
    spec = ArchSpec.from_string(REFERENCES["mnasnet-small"])
    straight = retrain(spec, dataset, recipe=recipe, workdir=str(tmp_path / "straight"))
    assert straight.epochs_run == 3 and straight.recipe["minutes"] == 1e-4
    # the schedule of a 3-epoch run (2 steps an epoch, 2 epochs of warm-up), though the warm-up ran before
    # the length was known
    schedule = WarmupCosine(peak=recipe.lr, warmup=4, total=6)
    assert [r["lr_end"] for r in straight.history] == pytest.approx([float(schedule(s)) for s in (1, 3, 5)])

    class Stop(Exception):
        pass

    for stop_after, chosen in ((1, None), (2, 3)):
        seen = []

        def stop(epoch, epochs, record, seen=seen, stop_after=stop_after):
            seen.append(epochs)
            if epoch + 1 == stop_after:
                raise Stop

        workdir = tmp_path / f"resumed-after-{stop_after}"
        with pytest.raises(Stop):
            retrain(spec, dataset, recipe=recipe, workdir=str(workdir), on_epoch=stop)
        assert seen == [None, 3][:stop_after]  # the length, once chosen
        assert epoch_line(0, seen[0], straight.history[0]).startswith("  epoch   1/? [......")
        assert load_checkpoint(str(workdir / "checkpoint.npz"))[0].get("epochs") == chosen  # kept once chosen
        resumed = retrain(spec, dataset, recipe=recipe, workdir=str(workdir))
        assert resumed.epochs_run == 3
        for a, b in zip(straight.history, resumed.history, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4) and b["lr_end"] == pytest.approx(a["lr_end"])


def test_recipe_ids_of_kept_models_do_not_change_when_fields_are_added():
    """Models and checkpoints live under their recipe's id (bench/data/proof/models/b74b8132/...): a new field
    left unset must not move them (adding `minutes` once did, and a 100-epoch run restarted from epoch 0)."""
    assert Recipe(epochs=100).recipe_id == "4936f582"
    assert Recipe(epochs=30).recipe_id == "b74b8132"
    assert Recipe(epochs=15).recipe_id == "f5affbc0"
    assert Recipe(minutes=120).recipe_id != Recipe().recipe_id
    assert "minutes" not in Recipe().record()  # what checkpoints are checked against: older ones still resume
    # a whole number where a float belongs is the same recipe (plan.json's 115 minutes, the command line's 115.0)
    assert Recipe(minutes=115).recipe_id == Recipe(minutes=115.0).recipe_id == "cd88cadd"
    assert Recipe(lr=1).recipe_id == Recipe(lr=1.0).recipe_id and Recipe(lr=1).lr == 1.0
