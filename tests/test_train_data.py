"""Training data: language tags on transcripts, prompt modes, duration buckets, deterministic batches,
augmentation, and the tokenizer trainer."""
from __future__ import annotations

import bisect
import random
from collections import Counter

import numpy as np
import pytest
import sentencepiece as spm
import torch

from babelcast.audio.features import mel_band_edges_hz
from babelcast.checkpoint.tokenizer import Tokenizer
from babelcast.config import PromptConfig
from babelcast.train.augment import (AugmentConfig, add_noise, coloured_noise, spec_augment, speed_perturb, vtlp,
                                     warp_frequency)
from babelcast.train.data import (BatchDataset, DataConfig, ManifestSource, Utterance, canonical_locale,
                                  load_utterances, plan_batches, prompt_index_for, strip_language_tags,
                                  with_language_tag)
from babelcast.train.tokenizer import TokenizerFiles, tags_in, train_tokenizer

from tiny import PROMPT_DICT
from train_fixtures import one_thread, pseudo_sentence, write_manifest  # noqa: F401 (autouse fixture)

PROMPT = PromptConfig(num_prompts=128, dictionary=PROMPT_DICT)


def test_language_tags_are_appended_once_with_the_canonical_locale():
    assert canonical_locale(PROMPT, "de") == "de-DE"
    assert canonical_locale(PROMPT, "es-US") == "es-US"
    assert canonical_locale(PROMPT, "auto") is None
    with pytest.raises(ValueError, match="not in the prompt dictionary"):
        canonical_locale(PROMPT, "xx-YY")
    assert with_language_tag("Hallo Welt. ", "de-DE") == "Hallo Welt. <de-DE>"
    assert with_language_tag("Hallo Welt. <de-DE>", "de-DE") == "Hallo Welt. <de-DE>"
    assert with_language_tag("Hello.", None) == "Hello."
    assert strip_language_tags("One. <en-US> Zwei. <de-DE>") == "One. Zwei."


def _utt(lang: str | None, mode: str) -> Utterance:
    return Utterance(None, 1.0, "x", (1,), lang, mode)


def test_prompt_modes():
    rng = np.random.default_rng(0)
    auto = PROMPT.dictionary["auto"]
    assert {prompt_index_for(PROMPT, _utt("de-DE", "langID"), 0.5, rng) for _ in range(50)} == {9}
    assert {prompt_index_for(PROMPT, _utt("de-DE", "auto"), 0.5, rng) for _ in range(50)} == {auto}
    assert {prompt_index_for(PROMPT, _utt(None, "langID"), 0.5, rng) for _ in range(50)} == {auto}
    unified = Counter(prompt_index_for(PROMPT, _utt("de-DE", "unified"), 0.5, rng) for _ in range(2000))
    assert set(unified) == {9, auto} and abs(unified[auto] / 2000 - 0.5) < 0.05


def test_buckets_respect_the_padded_duration_budget_and_cover_every_utterance():
    rng = random.Random(0)
    durations = [rng.uniform(0.5, 15.0) for _ in range(500)]
    cfg = DataConfig(train=(), batch_duration_s=60.0, max_batch_size=16, buckets=6)
    batches = plan_batches(durations, cfg, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        longest = max(durations[i] for i in b)
        assert len(b) == 1 or longest * len(b) <= 60.0
        assert len(b) <= 16
    spread = [max(durations[i] for i in b) - min(durations[i] for i in b) for b in batches]
    assert np.median(spread) < 2.5  # batches hold similar durations
    assert batches == plan_batches(durations, cfg, random.Random(1))
    assert batches != plan_batches(durations, cfg, random.Random(2))


def test_data_parallel_plan_pairs_batches_of_one_bucket():
    """With 2 processes, batches 2k and 2k+1 (one per process in a step) come from one bucket."""
    rng = random.Random(0)
    durations = [rng.uniform(0.5, 15.0) for _ in range(500)]
    cfg = DataConfig(train=(), batch_duration_s=60.0, max_batch_size=16, buckets=6)
    rank = {i: r for r, i in enumerate(sorted(range(500), key=durations.__getitem__))}
    bucket = lambda b: bisect.bisect_right([round(k * 500 / 6) for k in range(1, 6)], rank[b[0]])  # noqa: E731
    alone, paired = plan_batches(durations, cfg, random.Random(1)), plan_batches(durations, cfg, random.Random(1), 2)
    assert len(paired) % 2 == 0 and len(alone) - len(paired) < 6  # at most one batch dropped per bucket
    assert all(bucket(paired[k]) == bucket(paired[k + 1]) for k in range(0, len(paired), 2))
    assert sum(bucket(alone[k]) != bucket(alone[k + 1]) for k in range(0, len(alone) - 1, 2)) > len(alone) // 4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    manifest = write_manifest(folder, 12, seed=5, langs=("en-US", "de", "auto"))
    tok = train_tokenizer([with_language_tag(pseudo_sentence(random.Random(i)), "en-US") for i in range(200)]
                          + ["<de-DE>"] * 5, 48, ["<en-US>", "<de-DE>"])
    return manifest, Tokenizer(tok.model, PROMPT.dictionary)


def test_utterances_carry_tagged_tokens_and_batches_are_reproducible(tiny_data):
    manifest, tok = tiny_data
    cfg = DataConfig(train=(ManifestSource(str(manifest)),), batch_duration_s=4.0, max_duration_s=1.5)
    utts = load_utterances(cfg.train, tok, PROMPT, cfg)
    assert 0 < len(utts) < 12  # the duration filter dropped the long ones
    for u in utts:
        assert u.text.endswith("<en-US>") or u.text.endswith("<de-DE>") or u.language is None
        assert tok.decode(list(u.tokens)) == u.text
    assert {u.language for u in utts} <= {"en-US", "de-DE", None}
    plan = plan_batches([u.duration_s for u in utts], cfg, random.Random(0))
    aug = AugmentConfig(noise_prob=1.0)
    first = BatchDataset(utts, plan, PROMPT, aug, 0.5, (1, 0))[0]
    again = BatchDataset(utts, plan, PROMPT, aug, 0.5, (1, 0))[0]
    other_epoch = BatchDataset(utts, plan, PROMPT, aug, 0.5, (1, 1))[0]
    assert torch.equal(first.audio, again.audio) and torch.equal(first.prompt_ids, again.prompt_ids)
    assert not torch.equal(first.audio, other_epoch.audio)
    assert first.targets.shape[0] == len(plan[0]) and int(first.target_len.max()) == first.targets.shape[1]
    assert all("<" not in r for r in first.references)


def test_speed_perturbation_changes_duration_and_noise_hits_the_snr():
    rng = np.random.default_rng(0)
    audio = np.sin(np.arange(16000) * 0.05).astype(np.float32)
    assert abs(len(speed_perturb(audio, 1.1)) - 16000 / 1.1) < 2
    assert abs(len(speed_perturb(audio, 0.9)) - 16000 / 0.9) < 2
    noise = coloured_noise(16000, rng)
    assert abs(np.mean(noise**2) - 1) < 1e-3
    noisy = add_noise(audio, 10.0, noise)
    snr = 10 * np.log10(np.mean(audio**2) / np.mean((noisy - audio) ** 2))
    assert abs(snr - 10.0) < 0.01


def test_spec_augment_masks_inside_each_utterance():
    mel = torch.randn(3, 40, 200) + 5
    lengths = torch.tensor([200, 120, 40])
    cfg = AugmentConfig(freq_masks=2, freq_width=8, time_masks=10, time_width=0.05)
    out = spec_augment(mel, lengths, cfg, torch.Generator().manual_seed(0))
    zero = out == 0
    assert zero.any()
    freq_zero = zero.all(dim=2)  # whole bands
    assert int(freq_zero.sum(dim=1).max()) <= 2 * 8
    time_zero = zero.all(dim=1)  # whole frames, never past the utterance
    for b, n in enumerate(lengths.tolist()):
        assert not time_zero[b, n:].any()
        assert int(time_zero[b].sum()) <= 10 * max(1, int(0.05 * n))
    assert torch.equal(spec_augment(mel, lengths, AugmentConfig.off()), mel)


def test_vtlp_moves_a_formant_by_its_factor_and_is_off_by_default():
    n_freq = 128
    centres_hz = mel_band_edges_hz(16000, n_freq)[1:-1]  # the log-mel features' band centres
    mel = torch.zeros(3, n_freq, 5)
    mel[:, 40] = 1.0  # one band lit: a "formant" at centres_hz[40]
    out = warp_frequency(mel, torch.tensor([1.0, 1.2, 0.8]))
    assert torch.allclose(out[0], mel[0], atol=1e-5)
    for b, factor in ((1, 1.2), (2, 0.8)):
        peak = int(out[b, :, 0].argmax())
        assert abs(centres_hz[peak] / centres_hz[40] - factor) < 0.05  # moved in Hz by the factor
        assert torch.equal(out[b, :, 0], out[b, :, 4])  # the same warp on every frame
    assert torch.equal(vtlp(mel, AugmentConfig()), mel)
    warped = vtlp(mel, AugmentConfig(vtlp_range=(0.9, 1.1)), torch.Generator().manual_seed(0))
    assert not torch.equal(warped, mel) and warped.shape == mel.shape


def test_tokenizer_trainer_makes_tags_single_pieces_and_nemo_vocab_files(tmp_path):
    rng = random.Random(0)
    texts = [with_language_tag(pseudo_sentence(rng), rng.choice(["en-US", "de-DE", "es-US"])) for _ in range(300)]
    assert tags_in(texts) == ["<de-DE>", "<en-US>", "<es-US>"]
    files = train_tokenizer(texts, 60, tags_in(texts))
    sp = spm.SentencePieceProcessor(model_proto=files.model)
    assert sp.get_piece_size() <= 60 and sp.id_to_piece(0) == "<unk>"
    for tag in tags_in(texts):
        assert sp.id_to_piece(sp.encode(f"Text. {tag}")[-1]) == tag
    vocab_lines = files.vocab.decode().splitlines()
    assert len(vocab_lines) == sp.get_piece_size() and vocab_lines[0].startswith("<unk>\t")
    listed = files.vocab_txt.decode().splitlines()
    assert "<en-US>" not in listed and "<unk>" not in listed and any(p.startswith("##") for p in listed)
    assert TokenizerFiles.load(files.save(tmp_path / "tok")) == files
