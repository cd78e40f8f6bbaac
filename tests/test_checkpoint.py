"""Checkpoint loading: hub ids through the local cache, clear errors for bad files and tensors."""
import shutil

import pytest
import torch

import babelcast
from babelcast.checkpoint.hub import resolve_model_path
from babelcast.checkpoint.nemo_archive import CheckpointError, read_nemo, write_nemo

from tiny_nemo import write_tiny_nemo


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_nemo(tmp_path_factory.mktemp("m") / "tiny.nemo")


def test_hub_id_from_local_cache(tiny, tmp_path, monkeypatch):
    """A hub id resolves through the hub cache layout without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--nvidia--tiny-asr"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny, repo / "snapshots" / commit / "tiny-asr.nemo")
    path = resolve_model_path("nvidia/tiny-asr")
    assert path.name == "tiny-asr.nemo"
    assert babelcast.load_model("nvidia/tiny-asr").supported_languages


def test_hub_id_without_network_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="download nemotron-3.5-asr-streaming-0.6b.nemo .*--model"):
        resolve_model_path("nvidia/nemotron-3.5-asr-streaming-0.6b")


def _rewrite(src, dst, edit):
    arc = read_nemo(src)
    state = dict(arc.state_dict)
    edit(state)
    return write_nemo(dst, arc.config, state, arc.artifacts)


def test_missing_unexpected_and_misshaped_tensors_are_named(tiny, tmp_path):
    cases = {
        "missing tensors: joint.enc.weight": lambda s: s.pop("joint.enc.weight"),
        "unexpected tensors: extra.weight": lambda s: s.update({"extra.weight": torch.zeros(1)}),
        "mis-shaped tensors: joint.enc.bias": lambda s: s.update({"joint.enc.bias": torch.zeros(3)}),
    }
    for i, (message, edit) in enumerate(cases.items()):
        bad = _rewrite(tiny, tmp_path / f"bad{i}.nemo", edit)
        with pytest.raises(CheckpointError, match=message):
            babelcast.load_model(bad)


def test_config_it_cannot_run_is_named(tiny, tmp_path):
    arc = read_nemo(tiny)
    cfg = dict(arc.config)
    cfg["encoder"] = dict(cfg["encoder"], att_context_style="regular")
    bad = write_nemo(tmp_path / "bad.nemo", cfg, arc.state_dict, arc.artifacts)
    with pytest.raises(CheckpointError, match="att_context_style='regular'"):
        babelcast.load_model(bad)


def test_yaml_no_key_is_norwegian(tiny):
    rec = babelcast.load_model(tiny)
    assert "no" in rec.supported_languages
    assert rec.prompt_id("no") == 27


def test_unquoted_yaml_no_key_reads_as_norwegian():
    import yaml

    from babelcast.config import parse_model_config
    from tiny import tiny_config

    cfg = tiny_config()
    cfg["model_defaults"]["prompt_dictionary"] = yaml.safe_load("en-US: 0\nno: 27\nauto: 101\n")
    assert False in cfg["model_defaults"]["prompt_dictionary"]  # YAML 1.1 made it a bool
    assert parse_model_config(cfg).prompt.dictionary["no"] == 27


def test_trained_locales_from_the_config_or_the_release_card(tmp_path):
    from babelcast.checkpoint.load import RELEASED_TRAINED_LOCALES
    from babelcast.checkpoint.nemo_archive import replace_config
    from babelcast.config import ConfigError, parse_model_config

    from tiny import tiny_config

    path = write_tiny_nemo(tmp_path / "tiny.nemo")
    assert babelcast.load_model(path).cfg.prompt.trained_locales is None  # unknown: no warnings
    config = read_nemo(path).config
    config["model_defaults"]["trained_locales"] = ["de", "en-US"]
    weights = read_nemo(path).state_dict
    replace_config(path, config)
    assert babelcast.load_model(path).cfg.prompt.trained_locales == ("de-DE", "en-US")  # canonical names
    assert all(torch.equal(weights[k], v) for k, v in read_nemo(path).state_dict.items())
    release = tmp_path / "nemotron-3.5-asr-streaming-0.6b.nemo"
    shutil.copy(write_tiny_nemo(tmp_path / "other.nemo"), release)
    assert babelcast.load_model(release).cfg.prompt.trained_locales is None  # its dictionary lacks 37 of the 40
    assert len(RELEASED_TRAINED_LOCALES["nemotron-3.5-asr-streaming-0.6b"]) == 40
    bad = tiny_config()
    bad["model_defaults"]["trained_locales"] = ["xx-XX"]
    with pytest.raises(ConfigError, match=r"lacks: \['xx-XX'\]"):
        parse_model_config(bad)
