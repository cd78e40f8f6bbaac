"""Validation at one latency: loss and greedy-decoding WER of the in-memory model (no augmentation)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

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


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


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
    try:
        for batch in batches:
            frames, enc_len = encode(model, batch, *context, None, None)
            loss_sum += float(transducer_nll(model, frames, enc_len, batch)) * len(batch.references)
            n_utts += len(batch.references)
            for ref, hyp in zip(batch.references, decode_batch(model, tok, batch, frames, enc_len)):
                errors += word_errors(ref, hyp)
                words += len(ref.split())
                if len(examples) < n_examples:
                    examples.append((ref, hyp))
    finally:
        model.train(was_training)
    return ValResult(loss_sum / max(1, n_utts), errors / max(1, words), words, examples)
