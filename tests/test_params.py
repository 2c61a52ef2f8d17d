"""Params are declared once and validated once: every mistake is one line naming the key."""

import re
from pathlib import Path

import pytest
import yaml

from mcad_core.errors import McadError
from mcad_core.mcad.variants import VARIANTS
from mcad_core.params import Params, Variant, load_params, parse_params, with_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_params_equal_declared_defaults():
    assert load_params(ROOT / "params.yaml") == Params()


@pytest.mark.parametrize("raw, needle", [
    ({"data": {"synthetic": {"n_trian": 5}}}, "unknown key 'data.synthetic.n_trian'"),
    ({"data": {"synthetic": {"n_train": "5"}}}, "'data.synthetic.n_train'"),
    ({"data": {"synthetic": {"n_train": 0}}}, "greater than 0"),
    ({"data": {"source": "coco"}}, "'data.source'"),
    ({"distill": {"variants": ["mcad", "nope"]}}, "'distill.variants.1'"),
    ({"fuse": {"lambda": -1}}, "'fuse.lambda'"),
    ({"data": {"user_split": {"uncaptioned_frac": 1.0}}}, "'data.user_split.uncaptioned_frac'"),  # no caption left
    ({"distill": {"w_hard": -1}}, "'distill.w_hard'"),
    ({"bench": {"threads": 2}}, "'bench.threads'"),
    ({"mystery": 1}, "unknown key 'mystery'"),
])
def test_bad_params_name_the_key(raw, needle):
    with pytest.raises(McadError) as err:
        parse_params(raw, "params.yaml")
    message = str(err.value)
    assert needle in message and message.startswith("params.yaml: ") and "\n" not in message


def test_lambda_is_read_under_its_yaml_name():
    assert parse_params({"fuse": {"lambda": 0.25}}).fuse.lambda_ == 0.25


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(McadError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(McadError, match="not valid YAML"):
        load_params(bad)


def test_every_declared_variant_has_a_spec():
    assert set(Variant.__args__) == set(VARIANTS)


def test_real_data_params_file_is_valid():
    for path in ROOT.glob("configs/*.yaml"):
        parse_params(yaml.safe_load(path.read_text()), str(path))


def test_overrides_apply_like_dvc_set_and_are_validated():
    params = with_overrides(Params(), ["fuse.tau_m=10", "fuse.lambda=0", "distill.variants=[mcad, dual_kd]"])
    assert params.fuse.tau_m == 10 and params.fuse.lambda_ == 0
    assert params.distill.variants == ["mcad", "dual_kd"]
    assert params.cache == Params().cache
    with pytest.raises(McadError, match="unknown key 'fuse.tau'"):
        with_overrides(Params(), ["fuse.tau=1"])
    with pytest.raises(McadError, match="expected group.key=value"):
        with_overrides(Params(), ["fuse.tau_m"])


def test_a_file_that_is_not_a_mapping_is_one_line_and_an_empty_file_is_the_defaults(tmp_path):
    for name, text, what in [("list.yaml", "- data\n- fuse\n", "list"), ("scalar.yaml", "42\n", "int")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(McadError) as err:
            load_params(path)
        assert str(err.value) == f"{path}: expected a mapping of param groups, got {what}"
    empty = tmp_path / "empty.yaml"
    for text in ("", "# only a comment\n"):
        empty.write_text(text)
        assert load_params(empty) == Params()


def test_an_override_below_a_plain_key_is_one_line():
    for item, key in [("seed.x=1", "seed"), ("fuse.tau_m.y=2", "tau_m"), ("data.source.z=3", "source")]:
        with pytest.raises(McadError) as err:
            with_overrides(Params(), [item])
        assert str(err.value) == f"override '{item}': '{key}' is not a group"


def test_per_variant_settings_override_the_shared_ones_and_are_validated():
    from mcad_core.params import with_overrides

    params = with_overrides(parse_params({}), ["distill.per_variant={mcad: {w_hard: 1.0, lr: 0.001}}"])
    mcad, kd = params.distill.for_variant("mcad"), params.distill.for_variant("dual_kd")
    assert (mcad.w_hard, mcad.lr) == (1.0, 0.001) and (kd.w_hard, kd.lr) == (params.distill.w_hard, params.distill.lr)
    for bad, words in [("{mcad: {w_hrd: 1.0}}", "per_variant.mcad: unknown key 'w_hrd'"),
                       ("{mcad: {w_hard: -1}}", "per_variant.mcad: 'w_hard'"),
                       ("{mcad: {variants: x}}", "cannot be overridden")]:
        with pytest.raises(McadError, match=re.escape(words)):
            with_overrides(parse_params({}), [f"distill.per_variant={bad}"])
