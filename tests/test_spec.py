import json

import optuna
import pytest

from search_spaces import REFERENCES, ArchSpec, BlockSpec, MnasNetSpace, SpecError, feature_sizes, validate


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_references_round_trip_and_validate(name):
    text = REFERENCES[name]
    spec = ArchSpec.from_string(text)
    assert spec.to_string() == text
    assert ArchSpec.from_json(spec.to_json()) == spec
    validate(spec, 32)
    assert feature_sizes(spec, 32)[-1] == 4  # CIFAR adaptation: 32 -> 4x4 before the head


def _sampled_specs(count: int, seed: int = 0):
    space = MnasNetSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(count):
        trial = study.ask()
        yield space, trial, space.sample(trial)


def test_200_sampled_specs_round_trip_and_are_valid():
    seen = set()
    for _, _, spec in _sampled_specs(200):
        text = spec.to_string()
        assert ArchSpec.from_string(text).to_string() == text
        assert ArchSpec.from_json(spec.to_json()) == spec
        validate(spec, 32)
        seen.add(spec.arch_id)
    assert len(seen) > 190  # the space is large: random draws rarely repeat


def test_fixed_trial_replays_the_same_spec():
    for space, trial, spec in _sampled_specs(20, seed=3):
        replay = space.sample(optuna.trial.FixedTrial(trial.params))
        assert replay == spec and replay.arch_id == spec.arch_id


def test_every_parameter_is_suggested_on_every_trial():
    names = None
    for _, trial, _ in _sampled_specs(30, seed=5):
        assert names is None or set(trial.params) == names
        names = set(trial.params)
    assert len(names) == 7 * 6


def test_space_covers_the_mnasnet_choices():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    MnasNetSpace().sample(study.ask())
    distributions = study.trials[0].distributions
    assert distributions["b3_op"].choices == ("conv", "dsconv", "mbconv3", "mbconv6")
    assert distributions["b3_kernel"].choices == (3, 5)
    assert distributions["b3_se"].choices == (0.0, 0.25)
    assert distributions["b3_skip"].choices == ("identity", "pool", "none")
    assert distributions["b3_filters"].choices == (0.75, 1.0, 1.25)
    assert distributions["b3_layers"].choices == (-1, 0, 1)


def test_mnasnet_a1_projects_onto_its_own_choices():
    params = MnasNetSpace().project(ArchSpec.from_string(REFERENCES["mnasnet-a1"]))
    assert params["b3_op"] == "mbconv3" and params["b3_kernel"] == 5 and params["b3_se"] == 0.25
    assert params["b5_layers"] == -1  # A1 has 2 layers where MobileNetV2 has 3
    assert params["b1_skip"] == "none"


def test_golden_string_of_the_skeleton():
    space = MnasNetSpace()
    spec = space.sample(optuna.trial.FixedTrial(space.default_params()))
    assert spec.to_string() == (
        "conv_r1_k3_s2_c16-dsconv_r1_k3_s1_c8-mbconv_r2_k3_s1_e6_c16-mbconv_r3_k3_s2_e6_c16-mbconv_r4_k3_s2_e6_c32"
        "-mbconv_r3_k3_s1_e6_c48-mbconv_r3_k3_s1_e6_c80-mbconv_r1_k3_s1_e6_c160-head_c1280"
    )
    assert spec.arch_id == ArchSpec.from_string(spec.to_string()).arch_id and len(spec.arch_id) == 12


def test_block_string_tokens():
    block = BlockSpec.from_string("mbconv_r2_k5_s2_e6_c24_se0.25_poolskip")
    assert (block.op, block.repeats, block.kernel, block.stride, block.expand, block.out_ch, block.se, block.skip) == (
        "mbconv",
        2,
        5,
        2,
        6,
        24,
        0.25,
        "pool",
    )
    assert BlockSpec.from_string("dsconv_r1_k3_s1_c16_noskip").skip == "none"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("foo_r1_k3_s1_c8-head_c10", "op='foo'"),
        ("conv_r1_k4_s1_c8-head_c10", "kernel=4"),
        ("conv_r1_k3_s3_c8-head_c10", "stride=3"),
        ("conv_r0_k3_s1_c8-head_c10", "repeats=0"),
        ("conv_r1_k3_s1_e6_c8-head_c10", "expand=6"),
        ("conv_r1_k3_s1_c8_se1.5-head_c10", "se=1.5"),
        ("conv_r1_k3_s1_c8_zz9-head_c10", "token 'zz9'"),
        ("conv_r1_k3_s1-head_c10", "no channel count"),
        ("conv_r1_r2_k3_s1_c8-head_c10", "repeats the field"),
        ("head_c10-conv_r1_k3_s1_c8", "head block must be last"),
    ],
)
def test_bad_strings_are_rejected_with_the_value(text, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ArchSpec.from_string(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conv_r1_k3_s2_c8-mbconv_r1_k3_s1_e6_c16", "last block must be a head"),
        ("conv_r1_k3_s2_c8-head_c10", "stem, at least one body block"),
        ("dsconv_r1_k3_s2_c8-conv_r1_k3_s1_c8-head_c10", "stem \\(block 0\\) must be a conv"),
        (
            "conv_r1_k3_s2_c8-conv_r1_k3_s2_c8-conv_r1_k3_s2_c8-conv_r1_k3_s2_c8-conv_r1_k3_s2_c8-head_c10",
            "final feature map is 1x1",
        ),
    ],
)
def test_validate_rejects_unbuildable_networks(text, message):
    with pytest.raises(SpecError, match=message):
        validate(ArchSpec.from_string(text), 32)


def test_json_is_strict():
    spec = ArchSpec.from_string(REFERENCES["mnasnet-small"])
    document = json.loads(spec.to_json())
    document["blocks"][1]["colour"] = "red"
    with pytest.raises(SpecError, match="unknown fields \\['colour'\\]"):
        ArchSpec.from_json(json.dumps(document))
    with pytest.raises(SpecError, match="schema_version=99"):
        ArchSpec.from_json(json.dumps({"schema_version": 99, "blocks": []}))
    with pytest.raises(SpecError, match="exactly schema_version and blocks"):
        ArchSpec.from_json(json.dumps({"blocks": []}))
    with pytest.raises(SpecError, match="malformed"):
        ArchSpec.from_json("{not json")


def test_specs_are_frozen():
    spec = ArchSpec.from_string(REFERENCES["mnasnet-small"])
    with pytest.raises(AttributeError):
        spec.blocks[0].out_ch = 3


def test_codec_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, search_spaces, nas.cli; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
