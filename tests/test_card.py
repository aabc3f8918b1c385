"""The model card as a typed record: written, read back and rendered."""

from results.card import FormatEntry, ModelCard

TRAINING = {"recipe": {"epochs": 2}, "epochs_run": 2, "best_epoch": 2, "val_accuracy": 0.5, "test_accuracy": 0.49,
            "retrain_seconds": 60.0}  # fmt: skip


def card(**changes) -> ModelCard:
    values = dict(
        arch="conv_r1_k3_s1_c16-head_c64",
        arch_id="abc123",
        params_count=1234,
        multiply_adds=None,
        input={"shape": [32, 32, 3], "dtype": "float32", "dataset": "cifar10"},
        classes=("airplane", "cat"),
        formats={
            "fp32": FormatEntry(file="model_fp32.tflite", test_accuracy=0.49, size_bytes=4096),
            "int8": FormatEntry(error="ConverterError: no"),
        },
        training=TRAINING,
    )
    return ModelCard(**(values | changes))


def test_a_card_survives_its_file_and_keeps_only_what_it_holds(tmp_path):
    written = card(search={"study": "s", "trial": 3, "proxy_accuracy": 0.4, "latency_ms": 0.2, "reward": 0.5, "trials": 9})
    written.save(str(tmp_path))
    assert ModelCard.load(str(tmp_path)) == written
    document = written.to_json()
    assert document["formats"]["int8"] == {"error": "ConverterError: no"}  # no null fields for what it lacks
    assert not written.formats["int8"].scored and written.formats["fp32"].scored
    assert ModelCard.load(str(tmp_path / "elsewhere")) is None


def test_an_untimed_card_names_no_device_and_a_reference_is_not_a_study():
    text = card(search={"reference": "mnasnet-small"}).markdown()
    assert "Latency not measured here" in text and "Latency measured on" not in text
    assert "the reference architecture mnasnet-small" in text and "Study `" not in text
    assert "| int8 | - | failed: ConverterError: no |" in text and "multiply-adds per image: -" in text


def test_a_card_says_how_its_weights_were_chosen():
    assert "best validation accuracy 0.5000 at epoch 2" in card().markdown()
    text = card(training=TRAINING | {"val_accuracy": None}).markdown()
    assert "no validation: epoch 2's weights ship" in text and "best validation" not in text
