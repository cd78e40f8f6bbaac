"""The whole network: features → encoder → prompt → transducer (and CTC head). No decoding, no I/O."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..audio.features import LogMel
from ..config import ModelConfig
from .encoder import Encoder
from .prompt import PromptFusion
from .transducer import CTCHead, Joint, Predictor


class _Preprocessor(nn.Module):
    """Holds the front end under NeMo's `preprocessor.featurizer.*` buffer names."""

    def __init__(self, model_cfg: ModelConfig):
        super().__init__()
        self.featurizer = LogMel(model_cfg.features)


# Above this many mel frames (60 s) offline encoding runs in blocks: same frames, linear memory.
FULL_FORWARD_MAX_MEL = 6000


class AsrModel(nn.Module):
    """Cache-aware FastConformer transducer; state dict keys are NeMo's, one for one."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder
        self.preprocessor = _Preprocessor(cfg)
        self.encoder = Encoder(enc)
        self.decoder = Predictor(cfg.transducer)
        self.joint = Joint(enc.d_model, cfg.transducer)
        self.prompt_kernel = PromptFusion(enc.d_model, cfg.prompt) if cfg.prompt else None
        self.ctc_decoder = CTCHead(enc.d_model, cfg.transducer.vocab_size + 1) if cfg.has_ctc else None

    @property
    def features(self) -> LogMel:
        return self.preprocessor.featurizer

    def apply_prompt(self, frames: Tensor, prompt_ids: Tensor | None) -> Tensor:
        """Language prompt on encoder frames [B, T, D]; identity for a model without one."""
        if self.prompt_kernel is None:
            return frames
        if prompt_ids is None:
            raise ValueError("this model needs prompt ids (a language or 'auto')")
        return self.prompt_kernel(frames, prompt_ids)

    def encode(self, audio: Tensor, lengths: Tensor, left: int, right: int, prompt_ids: Tensor | None,
               on_block: Callable[[int], None] | None = None) -> tuple[Tensor, Tensor]:
        """Offline: audio [B, S] + lengths [B] samples → prompted frames [B, T, D], lengths [B].
        on_block: called with the mel frames encoded so far after each block of audio encoded in blocks
        (longer than FULL_FORWARD_MAX_MEL); never for a single full forward."""
        mel, mel_len = self.features(audio, lengths)
        if mel.shape[2] > FULL_FORWARD_MAX_MEL:
            frames, enc_len = self.encoder.forward_blocks(mel, mel_len, left, right, on_block=on_block)
        else:
            frames, enc_len = self.encoder(mel, mel_len, left, right)
        return self.apply_prompt(frames, prompt_ids), enc_len
