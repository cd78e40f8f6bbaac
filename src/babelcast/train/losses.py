"""Transducer and CTC losses in plain PyTorch (spec §7.1).

RNNT: the log-space forward algorithm over each utterance's [T, U+1] lattice. All cells on one
anti-diagonal (t + u = n) depend only on diagonal n - 1, so the recursion runs T + U vectorized
steps over the batch; autograd gives the backward. Reduction is NeMo's `mean_batch`: the mean of
the per-utterance negative log-likelihoods, not divided by target length. NeMo's FastEmit
regularizer (fastemit_lambda 0.005 in 3.5) is not implemented.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# A finite "log 0": logaddexp(-inf, -inf) has a NaN gradient, which would poison unreachable cells.
LOG_ZERO = -1e30


def rnnt_arc_log_probs(logits: Tensor, targets: Tensor, blank: int) -> tuple[Tensor, Tensor]:
    """Log-softmax of the joint at the two arcs leaving every lattice cell, in fp32 (or fp64).

    logits [B, T, U+1, V+1] raw joint output, targets [B, U] → (blank [B, T, U+1], label [B, T, U])
    where label[b, t, u] = log p(targets[b, u] | frame t, u labels emitted).
    """
    b, t, u1, _ = logits.shape
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 → fp32, fp64 stays
    norm = torch.logsumexp(logits, dim=-1)  # [B, T, U+1]
    blank_lp = logits[..., blank] - norm
    index = targets[:, None, :, None].expand(b, t, u1 - 1, 1)
    label_lp = logits[:, :, : u1 - 1].gather(3, index).squeeze(3) - norm[:, :, : u1 - 1]
    return blank_lp, label_lp


def _skew(x: Tensor, t_of: Tensor, u_of: Tensor, valid: Tensor) -> Tensor:
    """x [B, T, W] → [B, N, U+1] with out[:, n, u] = x[:, t_of[n, u], u_of[n, u]] (LOG_ZERO if not valid)."""
    out = x[:, t_of.clamp(0, x.shape[1] - 1), u_of.clamp(0, max(x.shape[2] - 1, 0))]
    return out.masked_fill(~valid, LOG_ZERO)


def rnnt_log_likelihood(blank_lp: Tensor, label_lp: Tensor, logit_lens: Tensor, target_lens: Tensor) -> Tensor:
    """log p(targets | frames) per utterance [B], by the forward algorithm over anti-diagonals.

    alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + label(t, u-1)),
    log p = alpha(T-1, U) + blank(T-1, U). Diagonal n holds the cells (n - u, u), indexed by u.
    """
    b, t_max, u1 = blank_lp.shape
    device = blank_lp.device
    # An emission at a padded frame would reach the final cell without its closing blank.
    frame = torch.arange(t_max, device=device)
    label_lp = label_lp.masked_fill(frame[None, :, None] >= logit_lens[:, None, None], LOG_ZERO)
    n_diag = t_max + u1 - 1
    u = torch.arange(u1, device=device)[None].expand(n_diag, u1)  # [N, U+1]
    t = torch.arange(n_diag, device=device)[:, None] - u  # frame of cell (diagonal n, position u)
    inside = (t >= 0) & (t < t_max)
    blank_in = _skew(blank_lp, t - 1, u, inside & (t >= 1))  # arc (t-1, u) → (t, u)
    if u1 > 1:
        label_in = _skew(label_lp, t, u - 1, inside & (u >= 1))  # arc (t, u-1) → (t, u)
    else:
        label_in = torch.full_like(blank_in, LOG_ZERO)
    diag = torch.full((b, u1), LOG_ZERO, device=device, dtype=blank_lp.dtype).index_fill(1, torch.tensor([0], device=device), 0.0)
    diagonals = [diag]
    for n in range(1, n_diag):
        stay = diag + blank_in[:, n]
        move = F.pad(diag[:, :-1], (1, 0), value=LOG_ZERO) + label_in[:, n]
        diag = torch.logaddexp(stay, move)
        diagonals.append(diag)
    alpha = torch.stack(diagonals, dim=1)  # [B, N, U+1]
    rows = torch.arange(b, device=device)
    last_t = logit_lens - 1
    return alpha[rows, last_t + target_lens, target_lens] + blank_lp[rows, last_t, target_lens]


def rnnt_loss(logits: Tensor, targets: Tensor, logit_lens: Tensor, target_lens: Tensor, blank: int,
              reduction: str = "mean_batch") -> Tensor:
    """RNNT negative log-likelihood from raw joint logits [B, T, U+1, V+1]; 'mean_batch' or 'none'."""
    blank_lp, label_lp = rnnt_arc_log_probs(logits, targets.long(), blank)
    nll = -rnnt_log_likelihood(blank_lp, label_lp, logit_lens.long(), target_lens.long())
    return _reduce(nll, reduction)


def ctc_loss(logits: Tensor, targets: Tensor, logit_lens: Tensor, target_lens: Tensor, blank: int,
             reduction: str = "mean_batch") -> Tensor:
    """CTC negative log-likelihood from raw head logits [B, T, V+1] (impossible alignments give 0)."""
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1).transpose(0, 1)  # [T, B, V+1]
    nll = F.ctc_loss(log_probs, targets.long(), logit_lens.long(), target_lens.long(), blank=blank,
                     reduction="none", zero_infinity=True)
    return _reduce(nll, reduction)


def _reduce(nll: Tensor, reduction: str) -> Tensor:
    if reduction == "mean_batch":
        return nll.mean()
    if reduction == "none":
        return nll
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean_batch' or 'none'")
