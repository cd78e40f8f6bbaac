"""One live stream: audio pieces in, partial text after every step, final text on flush.

The state is a value: features carry (FeatureState), encoder caches (EncoderState) and the
prediction-net state (PredictorState), each with a stream axis, so a batch of sessions can share
one step (the engine does that); a Session steps its own batch of one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import chunking
from ..checkpoint.tokenizer import Tokenizer
from ..decoding.greedy import Emissions, greedy_rnnt
from ..decoding.result import Transcript
from ..decoding.text import TextOptions, to_transcript
from ..model.asr import AsrModel
from ..model.encoder import EncoderState
from ..model.transducer import PredictorState


@dataclass(frozen=True)
class StreamOptions:
    left: int
    right: int
    prompt_id: int | None  # None for a model without a prompt
    text: TextOptions
    trained: bool = True

    @property
    def latency_ms(self) -> int:
        return int(round((self.right + 1) * self.text.frame_s * 1000))


@dataclass(frozen=True)
class Partial:
    text: str
    tokens: list[int]
    language: str | None


@torch.no_grad()
def decode_chunks(model: AsrModel, chunks: Tensor, enc_state: EncoderState, pred_state: PredictorState,
                  left: int, right: int, prompts: Tensor | None, mel_end: Tensor | None = None,
                  pos_proj: list[Tensor] | None = None) -> tuple[Emissions, EncoderState, PredictorState]:
    """One streaming step of B streams: encoder step → language prompt (fp32) → greedy RNNT.

    chunks [B, k*factor*(r+1), F]; the one sequence a Session, the Engine and the benchmarks run.
    """
    out = model.encoder.step(chunks, enc_state, left, right, mel_end, pos_proj)
    frames = model.apply_prompt(out.frames.float(), prompts)
    em, pred_state = greedy_rnnt(model.decoder, model.joint, frames, out.valid, pred_state,
                                 model.cfg.transducer.max_symbols)
    return em, out.state, pred_state


class Session:
    """A single stream decoded with the encoder's cache-aware step (spec §3.6)."""

    def __init__(self, model: AsrModel, tokenizer: Tokenizer, opts: StreamOptions):
        self.model, self.tok, self.opts = model, tokenizer, opts
        enc = model.cfg.encoder
        self.factor, self.stages = enc.subsampling_factor, enc.n_subsampling_stages
        self.chunk_mel = chunking.chunk_mel(opts.right, self.factor)
        device, dtype = model.encoder.device, model.encoder.dtype
        self.device = device
        self.feat_state = model.features.init_state(device)
        # Virtual lead-in frames line the first step up with NeMo's 1 + factor*r first chunk.
        self.mel = torch.zeros(chunking.lead_in_mel(self.factor), enc.feat_in, device=device)  # [n, F]
        self.enc_state = model.encoder.init_state(1, opts.left, device, dtype)
        self.pred_state = model.decoder.init_state(1, device, dtype)
        self.prompt = (torch.tensor([opts.prompt_id], device=device) if opts.prompt_id is not None else None)
        self.enc_done = 0  # encoder frames decoded
        self.ids: list[int] = []
        self.frames: list[int] = []
        self.probs: list[float] = []
        self.n_samples = 0
        self.closed = False

    @torch.no_grad()
    def accept_audio(self, samples: np.ndarray | Tensor) -> Partial:
        """Feed float samples (16 kHz mono, any count); runs every chunk that is now complete."""
        if self.closed:
            raise RuntimeError("session is closed")
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).to(self.device).reshape(-1)
        self.n_samples += x.numel()
        mel, self.feat_state = self.model.features.step(x, self.feat_state)
        self.mel = torch.cat([self.mel, mel.T])
        while self.mel.shape[0] >= self.chunk_mel:
            chunk, self.mel = self.mel[: self.chunk_mel], self.mel[self.chunk_mel:]
            self._step(chunk, None)
        return self.partial()

    @torch.no_grad()
    def flush(self) -> Transcript:
        """End of stream: the last partial chunk is zero-padded and decoded, never dropped."""
        if not self.closed:
            mel, self.feat_state = self.model.features.step(torch.zeros(0, device=self.device),
                                                            self.feat_state, final=True)
            self.mel = torch.cat([self.mel, mel.T])
            total = self.feat_state.n_frames
            while self.mel.shape[0] >= self.chunk_mel:
                chunk, self.mel = self.mel[: self.chunk_mel], self.mel[self.chunk_mel:]
                self._step(chunk, total)
            if chunking.final_valid_enc(total, self.enc_done, self.opts.right, self.stages) > 0:
                pad = self.mel.new_zeros(self.chunk_mel - self.mel.shape[0], self.mel.shape[1])
                self._step(torch.cat([self.mel, pad]), total)
            self.mel = self.mel[:0]
            self.closed = True
        sr = self.model.cfg.features.sample_rate_hz
        return to_transcript(self.tok, self.ids, self.frames, self.probs, self.opts.text,
                             latency_ms=self.opts.latency_ms, mode="streaming",
                             trained_latency=self.opts.trained, duration_s=self.n_samples / sr)

    def partial(self) -> Partial:
        """Text so far; a possibly unfinished multi-piece language tag is held back."""
        ids = self.ids[: len(self.ids) - self.tok.pending_tag_prefix(self.ids)]
        t = to_transcript(self.tok, ids, self.frames[: len(ids)], self.probs[: len(ids)], self.opts.text)
        return Partial(t.text, t.tokens, t.language)

    def _step(self, chunk: Tensor, total_mel: int | None) -> None:
        """Encoder step + prompt + greedy on one chunk [factor*(r+1), F]."""
        end = None if total_mel is None else torch.tensor([total_mel], device=self.device)
        em, self.enc_state, self.pred_state = decode_chunks(
            self.model, chunk[None], self.enc_state, self.pred_state, self.opts.left, self.opts.right,
            self.prompt, end)
        labels, at, probs = em.to_lists([self.enc_done])[0]
        self.ids += labels
        self.frames += at
        self.probs += probs
        self.enc_done += self.opts.right + 1
