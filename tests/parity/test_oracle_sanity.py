"""Smoke test: the NeMo oracle's reference (tests/parity/nemo_oracle.py) is well formed and meaningful."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
import yaml

MODELS = ("prompt_rnnt", "rnnt", "hybrid")
PROMPT_LANGS = ("en-US", "de-DE", "es", "mt-MT", "auto")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _key(ctx) -> str:
    return f"{ctx[0]}_{ctx[1]}"


def _conv_len(n: int) -> int:  # one causal stride-2 stage of dw_striding subsampling
    return n // 2 + 1


def _enc_len(t_mel: int) -> int:
    return _conv_len(_conv_len(_conv_len(t_mel)))


def _nemo_config(path: str) -> tuple[list[str], dict]:
    with tarfile.open(path, "r:") as tar:
        names = tar.getnames()
        member = next(n for n in names if n.endswith("model_config.yaml"))
        cfg = yaml.safe_load(tar.extractfile(member).read())
    return names, cfg


@pytest.fixture(scope="module")
def ref(nemo_reference):
    return nemo_reference


def test_models_present(ref):
    assert set(ref["models"]) == set(MODELS)
    for name in MODELS:
        assert Path(ref["models"][name]["nemo_path"]).is_file(), name


@pytest.mark.parametrize("name", MODELS)
def test_nemo_archive(ref, name):
    entry = ref["models"][name]
    names, cfg = _nemo_config(entry["nemo_path"])
    tok = cfg["tokenizer"]
    for key in ("model_path", "vocab_path", "spe_tokenizer_vocab"):
        assert str(tok[key]).startswith("nemo:"), (key, tok[key])
        suffix = str(tok[key])[len("nemo:"):]
        assert any(n.endswith(suffix) for n in names), (key, names)
    assert any(n.endswith("model_weights.ckpt") for n in names)
    assert cfg["target"] == entry["class"]
    assert [list(c) for c in cfg["encoder"]["att_context_size"]] == entry["contexts"]
    with open(CONFIG_DIR / f"{name}.yaml") as f:
        src = yaml.safe_load(f)
    assert cfg["preprocessor"]["features"] == src["preprocessor"]["features"]


@pytest.mark.parametrize("name", MODELS)
def test_reference_structure(ref, name):
    entry = ref["models"][name]
    _, cfg = _nemo_config(entry["nemo_path"])
    n_mels = cfg["preprocessor"]["features"]
    d_model = cfg["encoder"]["d_model"]
    blank = len(cfg["labels"])
    is_prompt = name == "prompt_rnnt"
    langs = PROMPT_LANGS if is_prompt else ("none",)

    assert entry["sample_rate"] == 16000
    left = entry["contexts"][0][0]
    expected_extra = [[left, 1]] if left % 2 == 0 and [left, 1] not in entry["contexts"] else []
    assert entry["extra_contexts"] == expected_extra
    n = len(entry["clips"])
    assert n == 4
    for clip, feat, t in zip(entry["clips"], entry["features"], entry["feature_lengths"]):
        assert clip.dtype == torch.float32 and clip.ndim == 1
        assert float(clip.abs().max()) <= 0.5
        assert t == clip.numel() // 160
        assert tuple(feat.shape) == (n_mels, t)
        assert torch.isfinite(feat).all()

    contexts = entry["contexts"] + entry["extra_contexts"]
    assert set(entry["offline"]) == {_key(c) for c in contexts}
    assert set(entry["streaming"]) == {_key(c) for c in contexts}
    for ctx in contexts:
        off = entry["offline"][_key(ctx)]
        assert len(off["encoded"]) == n
        for enc, t in zip(off["encoded"], entry["feature_lengths"]):
            assert tuple(enc.shape) == (_enc_len(t), d_model)
        assert set(off["tokens"]) == set(langs)
        assert set(off["prompted"]) == (set(langs) if is_prompt else set())
        assert set(off["ctc_tokens"]) == (set(langs) if name == "hybrid" else set())
        for lang in langs:
            assert len(off["tokens"][lang]) == n
            for seq in off["tokens"][lang]:
                assert all(isinstance(t, int) and 0 <= t < blank for t in seq)
            if is_prompt:
                for p, e in zip(off["prompted"][lang], off["encoded"]):
                    assert p.shape == e.shape and not torch.allclose(p, e)
        st = entry["streaming"][_key(ctx)]
        assert set(st) == set(langs)
        for lang in langs:
            case = st[lang]
            ctc = ("ctc_tokens", "matches_offline_ctc_tokens") if name == "hybrid" else ()
            assert ("ctc_tokens" in case) == (name == "hybrid")
            for key in ("steps", "tokens", "matches_offline_tokens", "matches_offline_encoded", *ctc):
                assert len(case[key]) == n, key
            for steps, enc in zip(case["steps"], off["encoded"]):
                assert steps and all(s.ndim == 2 and s.shape[1] == d_model for s in steps)
                assert sum(s.shape[0] for s in steps) <= enc.shape[0]
                assert all(s.shape[0] <= ctx[1] + 1 for s in steps[:-1])
            assert all(isinstance(b, bool) for b in case["matches_offline_tokens"] + case["matches_offline_encoded"])


@pytest.mark.parametrize("name", MODELS)
def test_emission_rate(ref, name):
    entry = ref["models"][name]
    assert 0.25 <= entry["emission_rate"] <= 0.5
    default = _key(entry["contexts"][0])
    for lang, seqs in entry["offline"][default]["tokens"].items():
        assert sum(map(len, seqs)) > 0, lang


def test_prompt_changes_tokens(ref):
    entry = ref["models"]["prompt_rnnt"]
    default = _key(entry["contexts"][0])
    for mode in ("offline", "streaming"):
        toks = entry[mode][default]["tokens"] if mode == "offline" else {
            lang: entry["streaming"][default][lang]["tokens"] for lang in PROMPT_LANGS
        }
        for a, b in (("en-US", "de-DE"), ("en-US", "auto"), ("de-DE", "auto")):
            assert toks[a] != toks[b], (mode, a, b)


@pytest.mark.parametrize("name", MODELS)
def test_streaming_matches_offline_somewhere(ref, name):
    entry = ref["models"][name]
    both = [
        (ctx, lang, i)
        for ctx, per_lang in entry["streaming"].items()
        for lang, case in per_lang.items()
        for i, (a, b) in enumerate(zip(case["matches_offline_tokens"], case["matches_offline_encoded"]))
        if a and b
    ]
    assert both, f"{name}: no streaming case equals NeMo's offline output"


@pytest.mark.parametrize("name", MODELS)
def test_aligned_clip_streams_exactly_at_default_context(ref, name):
    """Where NeMo's chunking ends exactly (no dropped partial chunk) and r >= 1, NeMo streaming == NeMo offline."""
    entry = ref["models"][name]
    left, r = entry["contexts"][0]
    first, later = 1 + 8 * r, 8 + 8 * r
    aligned = [i for i, t in enumerate(entry["feature_lengths"]) if t >= first and (t - first) % later == 0]
    assert aligned, f"{name}: no clip ends NeMo's chunking exactly at the default context"
    for lang, case in entry["streaming"][_key(entry["contexts"][0])].items():
        for i in aligned:
            assert case["matches_offline_encoded"][i], (lang, i)
            if name == "hybrid":  # NeMo's CTC streaming too: babelcast's is compared with it, not with offline
                assert case["matches_offline_ctc_tokens"][i] and case["ctc_tokens"][i], (lang, i)
