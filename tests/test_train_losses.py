"""The pure-PyTorch RNNT loss equals NeMo's (warprnnt_numba) in value and gradient, and an explicit
sum over alignments; CTC and the hybrid objective behave."""
from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from babelcast.train.losses import ctc_loss, rnnt_loss

from train_fixtures import one_thread  # noqa: F401 (autouse fixture)

B, T, U, V = 4, 13, 6, 9
LOGIT_LENS = [13, 9, 1, 5]
TARGET_LENS = [6, 3, 0, 5]


def random_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(B, T, U + 1, V + 1, generator=g)
    targets = torch.randint(0, V, (B, U), generator=g)
    return logits, targets, torch.tensor(LOGIT_LENS), torch.tensor(TARGET_LENS)


def brute_force_nll(logits: torch.Tensor, targets: list[int], n_frames: int) -> float:
    """-log Σ over every alignment (a path of n_frames blanks and len(targets) labels, ending in blank)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    blank, u_max = logits.shape[-1] - 1, len(targets)
    total = []
    for labels_before_blank in itertools.product(range(u_max + 1), repeat=n_frames):
        if list(labels_before_blank) != sorted(labels_before_blank) or labels_before_blank[-1] != u_max:
            continue
        score, u = 0.0, 0
        for t, reach in enumerate(labels_before_blank):  # at frame t emit labels u..reach-1, then blank
            for k in range(u, reach):
                score += float(logp[t, k, targets[k]])
            score += float(logp[t, reach, blank])
            u = reach
        total.append(score)
    return -float(torch.logsumexp(torch.tensor(total), 0))


def test_rnnt_loss_equals_sum_over_alignments():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 4, 6, generator=g)
    targets = torch.tensor([[1, 4, 2], [3, 0, 0]])
    nll = rnnt_loss(logits, targets, torch.tensor([4, 3]), torch.tensor([3, 1]), blank=5, reduction="none")
    expected = [brute_force_nll(logits[0], [1, 4, 2], 4), brute_force_nll(logits[1, :3, :2], [3], 3)]
    torch.testing.assert_close(nll.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_rnnt_loss_ignores_padding():
    """Values past each utterance's frames and labels do not change its loss or receive gradient."""
    logits, targets, lens, tlens = random_case()
    padded = logits.clone()
    for b in range(B):
        padded[b, LOGIT_LENS[b]:] = 100.0
        padded[b, :, TARGET_LENS[b] + 1:] = -100.0
    padded.requires_grad_()
    nll = rnnt_loss(padded, targets, lens, tlens, blank=V, reduction="none")
    torch.testing.assert_close(nll, rnnt_loss(logits, targets, lens, tlens, blank=V, reduction="none"))
    nll.sum().backward()
    for b in range(B):
        assert padded.grad[b, LOGIT_LENS[b]:].abs().sum() == 0
        assert padded.grad[b, :, TARGET_LENS[b] + 1:].abs().sum() == 0
    assert torch.isfinite(padded.grad).all()


def test_rnnt_loss_matches_nemo_values_and_gradients():
    pytest.importorskip("nemo.collections.asr", reason="NeMo (the test extra) is the oracle")
    warnings.filterwarnings("ignore")
    from nemo.collections.asr.losses.rnnt import RNNTLoss

    nemo = RNNTLoss(num_classes=V, reduction="mean_batch", loss_name="warprnnt_numba",
                    loss_kwargs={"fastemit_lambda": 0.0, "clamp": -1.0})
    for seed in range(3):
        logits, targets, lens, tlens = random_case(seed)
        ours_in, nemo_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        ours = rnnt_loss(ours_in, targets, lens, tlens, blank=V)
        theirs = nemo(log_probs=nemo_in, targets=targets, input_lengths=lens, target_lengths=tlens)
        ours.backward()
        theirs.backward()
        assert abs(float(ours) - float(theirs)) <= 1e-5 * abs(float(theirs))
        torch.testing.assert_close(ours_in.grad, nemo_in.grad, rtol=0, atol=1e-5)


def test_rnnt_gradient_matches_finite_differences():
    logits, targets, lens, tlens = random_case(2)
    logits = logits[:2, :5, :4].double().requires_grad_()
    args = (targets[:2, :3], torch.tensor([5, 4]), torch.tensor([3, 2]))
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, *args, blank=V).double(), (logits,), eps=1e-6, atol=1e-4)


def test_ctc_loss_is_per_utterance_mean_and_zero_for_impossible():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 6, generator=g)
    targets = torch.tensor([[1, 2, 3], [4, 4, 0], [1, 2, 3]])
    lens, tlens = torch.tensor([8, 6, 2]), torch.tensor([3, 2, 3])  # the last cannot fit 3 labels in 2 frames
    nll = ctc_loss(logits, targets, lens, tlens, blank=5, reduction="none")
    assert nll[2] == 0 and nll[:2].min() > 0
    assert math.isclose(float(ctc_loss(logits, targets, lens, tlens, blank=5)), float(nll.mean()), rel_tol=1e-6)


def test_rnnt_loss_in_bf16_autocast_is_close_to_fp32():
    logits, targets, lens, tlens = random_case(4)
    fp32 = rnnt_loss(logits, targets, lens, tlens, blank=V)
    bf16 = rnnt_loss(logits.bfloat16(), targets, lens, tlens, blank=V)
    assert bf16.dtype == torch.float32
    assert abs(float(bf16) - float(fp32)) < 0.02 * float(fp32)
