"""Validation at one latency: loss and greedy-decoding WER of the in-memory model (no augmentation)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..checkpoint.tokenizer import Tokenizer
from ..decoding.greedy import greedy_rnnt
from ..decoding.text import TextOptions, to_transcript
from ..model.asr import AsrModel
from .data import Batch
from .objective import encode, transducer_nll


@dataclass(frozen=True)
class ValResult:
    loss: float
    wer: float
    words: int
    examples: list[tuple[str, str]]  # (reference, hypothesis) of the first utterances
    time_variation: tuple[float, ...] = ()  # per encoder layer, see time_variation()


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def time_variation(frames: Tensor, lengths: Tensor) -> Tensor:
    """How much each utterance's frames [B, T, D] vary over time, relative to their size: the std of
    x - mean_t(x) over std(x), on the first `lengths` [B] frames → [B].

    Training that collapses (a first demo run at a high learning rate: every frame of the middle
    layers nearly the same vector, and a CTC head stuck on blank) drives it towards 0, long before
    the loss says anything is wrong.
    """
    valid = (torch.arange(frames.shape[1], device=frames.device) < lengths[:, None])[..., None]  # [B, T, 1]
    x = frames.float() * valid
    mean_t = x.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)  # [B, 1, D] per dimension
    mean = mean_t.mean(2, keepdim=True)  # [B, 1, 1] of all values (every dimension has T frames)
    over_time = (((x - mean_t) * valid) ** 2).sum((1, 2))  # the value counts cancel in the ratio
    total = (((x - mean) * valid) ** 2).sum((1, 2))
    return (over_time / total.clamp(min=1e-12)).sqrt()


@contextmanager
def layer_outputs(model: AsrModel) -> Iterator[list[Tensor]]:
    """While inside, the list fills with each encoder layer's output [B, T, D] of the forwards run."""
    outputs: list[Tensor] = []

    def keep(module, args, out) -> None:
        outputs.append(out[0] if isinstance(out, tuple) else out)

    handles = [layer.register_forward_hook(keep) for layer in model.encoder.layers]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def decode_batch(model: AsrModel, tok: Tokenizer, batch: Batch, frames: torch.Tensor, enc_len: torch.Tensor) -> list[str]:
    """Greedy RNNT texts of a batch with language tags removed (what users see)."""
    state = model.decoder.init_state(frames.shape[0], frames.device, frames.dtype)
    em, _ = greedy_rnnt(model.decoder, model.joint, frames, enc_len, state, model.cfg.transducer.max_symbols)
    frame_s = model.cfg.encoder.subsampling_factor * model.cfg.features.frame_ms / 1000
    opts = TextOptions(frame_s)
    return [to_transcript(tok, ids, at, p, opts).text for ids, at, p in em.to_lists()]


@torch.no_grad()
def validate(model: AsrModel, tok: Tokenizer, batches: list[Batch], context: tuple[int, int],
             n_examples: int = 3) -> ValResult:
    """Mean loss and corpus WER over `batches` at `context` (left, right), in eval mode, fp32."""
    was_training = model.training
    model.eval()
    loss_sum, n_utts, errors, words, examples = 0.0, 0, 0, 0, []
    variation = [0.0] * len(model.encoder.layers)
    try:
        for batch in batches:
            with layer_outputs(model) as layers:
                frames, enc_len = encode(model, batch, *context, None, None)
            for i, out in enumerate(layers):
                variation[i] += float(time_variation(out, enc_len).sum())
            loss_sum += float(transducer_nll(model, frames, enc_len, batch)) * len(batch.references)
            n_utts += len(batch.references)
            for ref, hyp in zip(batch.references, decode_batch(model, tok, batch, frames, enc_len)):
                errors += word_errors(ref, hyp)
                words += len(ref.split())
                if len(examples) < n_examples:
                    examples.append((ref, hyp))
    finally:
        model.train(was_training)
    n = max(1, n_utts)
    return ValResult(loss_sum / n, errors / max(1, words), words, examples, tuple(v / n for v in variation))
