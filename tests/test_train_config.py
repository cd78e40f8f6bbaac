"""Training YAMLs: `base:` lays a file over another, and every committed config loads."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from babelcast.train.config import load_train_config, read_config_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_base_merges_mappings_and_replaces_other_values(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("optim: {lr: 1.0e-3, betas: [0.9, 0.98]}\n"
                                             "trainer: {seed: 1, out_dir: x}\n")
    (tmp_path / "b.yaml").write_text("base: sub/a.yaml\noptim: {lr: 5.0e-4, betas: [0.8]}\nextra: 3\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\ntrainer: {seed: 2}\n")
    assert read_config_yaml(tmp_path / "c.yaml") == {  # bases are found relative to the file naming them
        "optim": {"lr": 5.0e-4, "betas": [0.8]}, "trainer": {"seed": 2, "out_dir": "x"}, "extra": 3}


@pytest.mark.parametrize("text, message", [
    ("base: loop.yaml\n", "leads back to this file"),
    ("base: missing.yaml\n", "base: missing.yaml: cannot read it"),
    ("base: [a.yaml]\n", "base: expects a file name"),
])
def test_bad_base_names_the_file_and_the_problem(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_config_yaml(tmp_path / "loop.yaml")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_committed_config_loads(name):
    assert load_train_config(CONFIGS / name).trainer.max_steps > 0


def test_demo6_is_demo5_with_another_seed_and_folder():
    v5, v6 = load_train_config(CONFIGS / "demo5.yaml"), load_train_config(CONFIGS / "demo6.yaml")
    assert v6.trainer.seed != v5.trainer.seed and v6.trainer.out_dir.endswith("runs/demo6")
    assert replace(v6, trainer=v5.trainer, raw=v5.raw) == v5
    v4 = load_train_config(CONFIGS / "demo4.yaml")
    assert v5.augment.vtlp_range == (0.9, 1.1) and v4.augment.vtlp_range == (1.0, 1.0)
