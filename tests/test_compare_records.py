"""compare.json keeps what every run measured: one record per model and recipe, merged; dominance
only among records timed side by side under one recipe; the one-run format of earlier files reads."""

import dataclasses
import json

import pytest

from results.compare import CompareRecord, format_table, load_document, merge, records_of, save


def record(model, *, kind="found", acc=0.8, lat=0.5, recipe="r30", timed="t1", arch_id=None) -> CompareRecord:
    return CompareRecord(
        model=model,
        kind=kind,
        arch=f"arch-of-{model}",
        arch_id=arch_id or f"id-{model}",
        params_count=1000,
        multiply_adds=10**6,
        latency_fp32_ms=lat,
        latency_int8_ms=lat,
        test_accuracy_fp32=acc,
        test_accuracy_int8=acc,
        val_accuracy=acc,
        epochs=30,
        train_seconds=60.0,
        recipe_id=recipe,
        dataset="cifar10",
        fingerprint="fp",
        timed=timed,
    )


def test_a_new_run_replaces_its_own_models_and_keeps_the_others():
    earlier = [record("trial 1", timed="t1"), record("mv2", kind="reference", timed="t1"), record("trial 9", recipe="r15")]
    new = [record("trial 1", acc=0.9, timed="t2"), record("trial 2", timed="t2")]
    merged = merge(earlier, new)
    assert [(r.model, r.recipe_id, r.timed) for r in merged] == [
        ("trial 1", "r30", "t2"),
        ("mv2", "r30", "t1"),
        ("trial 9", "r15", "t1"),
        ("trial 2", "r30", "t2"),
    ]


def test_dominance_only_within_one_side_by_side_timing():
    reference = record("mv2", kind="reference", acc=0.8, lat=0.5, timed="t1")
    same_run = record("trial 1", acc=0.85, lat=0.4, timed="t1")
    other_run = record("trial 2", acc=0.85, lat=0.4, timed="t2")  # better numbers, but timed in another run
    merged = {r.model: r for r in merge([], [reference, same_run, other_run])}
    assert merged["trial 1"].dominates_int8 == ("mv2",) and merged["trial 1"].dominates_fp32 == ("mv2",)
    assert merged["trial 2"].dominates_int8 == ()
    table = format_table(list(merged.values()))
    assert "timed side by side t2" in table and "timed side by side t1" in table
    assert table.index("t2") < table.index("t1")  # the latest run first


def test_the_file_round_trips_and_an_earlier_one_run_file_reads(tmp_path):
    path = tmp_path / "compare.json"
    records = merge([], [record("trial 1"), record("mv2", kind="reference")])
    save(str(path), records, recipes={"r30": {"epochs": 30}}, fingerprints={"fp": {"id": "fp"}}, runs=[{"timed": "t1"}])
    assert records_of(load_document(str(path))) == records

    old = {"settings": {"recipe_id": "r15", "recipe": {"epochs": 15}, "fingerprint": {"id": "fpold"}, "code": "abc"}}
    entry = json.loads(json.dumps(records[0].__dict__))
    old["records"] = [{k: v for k, v in entry.items() if k not in ("workdir", "fingerprint", "timed")}]
    path.write_text(json.dumps(old))
    document = load_document(str(path))
    assert document["recipes"] == {"r15": {"epochs": 15}} and "fpold" in document["fingerprints"]
    assert records_of(document)[0].fingerprint == "fpold"


def test_a_damaged_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "compare.json"
    path.write_text('{"records": [')
    with pytest.raises(ValueError, match=r"compare.json is damaged \(not JSON: .*\); move it aside"):
        load_document(str(path))
    assert path.read_text() == '{"records": ['


def test_only_earlier_models_whose_files_are_here_are_timed_again(tmp_path):
    """A folder that holds only a training's result (its model files gone with another machine) is not
    timed again: it has nothing to time. One with its card and both files is."""
    from dataclasses import replace

    from nas.comparison import earlier_models
    from results.card import FormatEntry, ModelCard

    arch = "conv_r1_k3_s2_c16-mbconv_r1_k3_s1_e3_c16-head_c256"
    card = ModelCard(
        arch=arch,
        arch_id="x",
        params_count=1,
        multiply_adds=1,
        input={},
        classes=(),
        formats={p: FormatEntry(file=f"model_{p}.tflite", test_accuracy=0.5) for p in ("fp32", "int8")},
        training={},
    )
    folders = {name: tmp_path / name for name in ("result-only", "card-only", "complete")}
    for name, folder in folders.items():
        folder.mkdir()
        (folder / "result.json").write_text("{}")
        if name != "result-only":
            (folder / "model_card.json").write_text(json.dumps(card.to_json()))
        if name == "complete":
            for p in ("fp32", "int8"):
                (folder / f"model_{p}.tflite").write_bytes(b"x")
    records = [replace(record(name), arch=arch, workdir=str(folder)) for name, folder in folders.items()]
    chosen = earlier_models(records, recipe_id="r30", dataset="cifar10", exclude=set())
    assert [c.name for c in chosen] == ["complete"]


def test_a_verdict_says_in_how_many_rounds_the_latency_order_held(tmp_path):
    """The median decides dominance; the rounds of the side-by-side timing say how steady that order was.
    They survive the file, and records timed before rounds were kept print no count."""
    from dataclasses import replace

    found = replace(record("trial 7", acc=0.86, lat=0.33), latency_fp32_rounds_ms=(0.32, 0.33, 0.35), latency_int8_rounds_ms=())
    reference = replace(
        record("mv2", kind="reference", acc=0.84, lat=0.34), latency_fp32_rounds_ms=(0.34, 0.34, 0.33), latency_int8_rounds_ms=()
    )
    path = tmp_path / "compare.json"
    save(str(path), merge([], [found, reference]), recipes={}, fingerprints={}, runs=[])
    loaded = records_of(load_document(str(path)))
    assert loaded[0].latency_fp32_rounds_ms == (0.32, 0.33, 0.35)
    table = format_table(loaded)
    assert "trial 7 (id-trial 7) dominates in fp32: mv2 (faster in 2 of 3 rounds)" in table
    assert "trial 7 (id-trial 7) dominates in int8: mv2\n" in table + "\n"  # no rounds kept: no count


def test_a_timing_on_a_busy_machine_is_flagged_and_a_quiet_one_is_not():
    quiet = [dataclasses.replace(r, busy_cores=0.05) for r in (record("trial 1"), record("mv2", kind="reference"))]
    assert "warning" not in format_table(quiet)
    busy = [quiet[0], dataclasses.replace(quiet[1], busy_cores=1.4)]
    assert "warning: other processes kept 1.4 cores busy during this timing" in format_table(busy)
    assert "warning" not in format_table([dataclasses.replace(r, busy_cores=None) for r in busy])  # earlier files
