"""Training on clips without speech: empty transcripts stay empty (no language tag), the RNNT and CTC
losses of an all-empty batch are the all-blank path, and a training step on such a batch (with the
CTC and phoneme aids) is finite and moves the weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from babelcast.data.nonspeech import plan_nonspeech, write_nonspeech
from babelcast.train.config import parse_train_config
from babelcast.train.data import with_language_tag
from babelcast.train.losses import ctc_loss, rnnt_loss
from babelcast.train.run import trainer_from_scratch

from train_fixtures import one_thread, tiny_train_config, write_manifest  # noqa: F401 (autouse fixture)


def test_an_empty_transcript_gets_no_language_tag():
    assert with_language_tag("", "de-DE") == ""
    assert with_language_tag("  ", "de-DE") == ""
    assert with_language_tag("Hallo.", "de-DE") == "Hallo. <de-DE>"


def test_losses_of_empty_targets_are_the_all_blank_path():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 1, 4, generator=g, requires_grad=True)  # U = 0: one lattice column
    lens = torch.tensor([5, 3])
    nll = rnnt_loss(logits, torch.zeros(2, 0, dtype=torch.long), lens, torch.tensor([0, 0]), blank=3,
                    reduction="none")
    blank_lp = torch.log_softmax(logits.double(), dim=-1)[..., 0, 3]
    expected = torch.stack([-blank_lp[0, :5].sum(), -blank_lp[1, :3].sum()])
    torch.testing.assert_close(nll.double(), expected, rtol=1e-6, atol=1e-6)
    nll.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1, 3:].abs().max() == 0  # padding gets nothing
    ctc_logits = torch.randn(2, 5, 4, generator=g)
    ctc = ctc_loss(ctc_logits, torch.zeros(2, 1, dtype=torch.long), lens, torch.tensor([0, 0]), blank=3,
                   reduction="none")
    ctc_blank = torch.log_softmax(ctc_logits, dim=-1)[..., 3]
    torch.testing.assert_close(ctc, torch.stack([-ctc_blank[0, :5].sum(), -ctc_blank[1, :3].sum()]))


@pytest.fixture(scope="module")
def nonspeech_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonspeech")
    jobs = plan_nonspeech(["en-US", "de-DE"], 6, "train", seed=3, duration_s=1.2)
    return write_nonspeech(jobs, root / "clips"), write_manifest(root / "speech", 4, seed=1)


def test_a_training_step_on_clips_without_speech(nonspeech_manifest, tmp_path):
    clips, speech = nonspeech_manifest
    raw = tiny_train_config(clips, clips, tmp_path / "run", max_steps=2, ctc_weight=0.3, phone_weight=0.5)
    raw["model"]["aux_ctc"] = {"ctc_loss_weight": 0.3}  # a hybrid: the CTC loss of empty targets too
    raw["tokenizer"]["extra_texts"] = [str(speech)]  # the clips have no text to learn pieces from
    trainer = trainer_from_scratch(parse_train_config(raw))
    assert all(u.tokens == () and u.text == "" for u in trainer.train_utts)
    assert trainer.model.ctc_decoder is not None and trainer.phone_grid.phones == ("",)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.train_step(trainer._batches())
    assert math.isfinite(stats.loss) and not stats.skipped and stats.ctc_per_token is not None
    assert stats.phone_per_frame is not None and stats.phone_per_frame < 1e-3  # one class: nothing to learn
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    result = trainer.validate()  # empty references: every emitted word is an insertion
    assert math.isfinite(result.loss) and result.words == 0


def test_nonspeech_clips_are_deterministic_and_quiet_enough(tmp_path):
    from babelcast.data.nonspeech import KINDS, make_clip

    jobs = plan_nonspeech(["en-US"], len(KINDS), "test", seed=1, duration_s=0.5)
    assert [j.kind for j in jobs] == list(KINDS)
    for job in jobs:
        a, b = make_clip(job), make_clip(job)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.float32 and len(a) == 8000 and np.abs(a).max() <= 0.9
    train, test = (plan_nonspeech(["en-US"], 3, split, seed=1)[0] for split in ("train", "test"))
    assert train.relpath != test.relpath
    with pytest.raises(ValueError, match="unknown non-speech kind"):
        plan_nonspeech(["en-US"], 1, "test", kinds=("speech",))
