"""One training forward: waveforms → (dither, log-mel, VTLP, SpecAugment) → encoder at a sampled context →
prompt → prediction net + joint → RNNT loss (+ CTC on hybrids)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..model.asr import AsrModel
from .augment import AugmentConfig, dither, spec_augment, vtlp
from .data import Batch
from .losses import ctc_loss, rnnt_loss
from .phones import PhoneHead, phone_nll


@dataclass(frozen=True)
class LossParts:
    total: Tensor  # what backward() is called on
    rnnt: float
    ctc: float | None
    phone: float | None = None  # summed over each utterance's frames, mean over the batch
    phone_frames: int = 0


def encode(model: AsrModel, batch: Batch, left: int, right: int, augment: AugmentConfig | None,
           gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Prompted encoder frames [B, T, D] and lengths [B]; augmentation only when `augment` is given."""
    audio = batch.audio
    if augment is not None:
        audio = dither(audio, batch.audio_len, augment.dither, gen)
    mel, mel_len = model.features(audio, batch.audio_len)  # fp32 whatever the autocast (spec §8.3)
    if augment is not None:
        mel = spec_augment(vtlp(mel, augment, gen), mel_len, augment, gen)
    frames, enc_len = model.encoder(mel, mel_len, left, right)
    return model.apply_prompt(frames, batch.prompt_ids), enc_len


def _joint_nll(model: AsrModel, enc_proj: Tensor, pred_proj: Tensor, targets: Tensor, enc_len: Tensor,
               target_len: Tensor) -> Tensor:
    """Per-utterance RNNT NLL [b] of a sub-batch, trimmed to its own longest T and U."""
    t, u = int(enc_len.max()), int(target_len.max())
    logits = model.joint.logits(enc_proj[:, :t, None], pred_proj[:, None, : u + 1])  # [b, T, U+1, V+1]
    return rnnt_loss(logits, targets[:, :u], enc_len, target_len, model.cfg.transducer.blank_id, "none")


def transducer_nll(model: AsrModel, frames: Tensor, enc_len: Tensor, batch: Batch, chunk: int = 0) -> Tensor:
    """Mean RNNT NLL over the batch. With chunk > 0 the joint and loss run `chunk` utterances at a
    time and are recomputed in backward, so only one sub-batch's [b, T, U+1, V+1] lattice is alive."""
    enc_proj = model.joint.enc(frames)  # [B, T, J]
    pred_proj = model.joint.pred(model.decoder(batch.targets))  # [B, U+1, J]
    b = frames.shape[0]
    step = chunk if 0 < chunk < b else b
    total = frames.new_zeros((), dtype=torch.float32)
    for i in range(0, b, step):
        part = (enc_proj[i:i + step], pred_proj[i:i + step], batch.targets[i:i + step], enc_len[i:i + step],
                batch.target_len[i:i + step])
        if step < b:
            nll = checkpoint(_joint_nll, model, *part, use_reentrant=False)
        else:
            nll = _joint_nll(model, *part)
        total = total + nll.sum()
    return total / b


def batch_loss(model: AsrModel, batch: Batch, context: tuple[int, int], augment: AugmentConfig | None,
               ctc_weight: float, joint_chunk: int = 0, gen: torch.Generator | None = None,
               phone_head: PhoneHead | None = None, phone_weight: float = 0.0) -> LossParts:
    """The training objective of one batch: RNNT, or (1-w)·RNNT + w·CTC for a hybrid model, plus
    phone_weight × the frame-level phoneme loss when a phone head is given (train/phones.py)."""
    frames, enc_len = encode(model, batch, *context, augment, gen)
    rnnt = transducer_nll(model, frames, enc_len, batch, joint_chunk)
    total, ctc_value, phone_value, phone_frames = rnnt, None, None, 0
    if model.ctc_decoder is not None and ctc_weight > 0:
        ctc = ctc_loss(model.ctc_decoder(frames), batch.targets, enc_len, batch.target_len,
                       model.cfg.transducer.blank_id)
        total, ctc_value = (1 - ctc_weight) * rnnt + ctc_weight * ctc, float(ctc.detach())
    if phone_head is not None and phone_weight > 0:
        if batch.phone_targets is None:
            raise ValueError("a phone head needs batches with phone_targets (BatchDataset's phone_grid)")
        phone, n_frames = phone_nll(phone_head(frames), batch.phone_targets, enc_len)
        total, phone_value, phone_frames = total + phone_weight * phone, float(phone.detach()), int(n_frames)
    return LossParts(total, float(rnnt.detach()), ctc_value, phone_value, phone_frames)
