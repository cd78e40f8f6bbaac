"""Language prompt fusion (spec §4): frames ← MLP([frames ; one_hot(prompt_id)]), always in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import AUTO, PromptConfig


class PromptFusion(nn.Sequential):
    """Linear(D + P → 2D) → ReLU → Linear(2D → D), applied per frame after the encoder.

    A Sequential so its keys are NeMo's `prompt_kernel.0.*` / `prompt_kernel.2.*`.
    """

    def __init__(self, d_model: int, cfg: PromptConfig):
        super().__init__(nn.Linear(d_model + cfg.num_prompts, 2 * d_model), nn.ReLU(),
                         nn.Linear(2 * d_model, d_model))
        self.num_prompts = cfg.num_prompts

    def forward(self, frames: Tensor, prompt_ids: Tensor) -> Tensor:
        """frames [B, T, D], prompt_ids [B] → [B, T, D] in frames' dtype.

        The language part of the output is a small fraction of its magnitude, so the whole
        projection runs in fp32 whatever the compute dtype (spec §4, §8.9).
        """
        b, t, _ = frames.shape
        one_hot = F.one_hot(prompt_ids, self.num_prompts).float()  # [B, P]
        x = torch.cat([frames.float(), one_hot[:, None].expand(b, t, self.num_prompts)], dim=-1)
        with torch.autocast(frames.device.type, enabled=False):
            first, second = self[0], self[2]
            h = F.relu(F.linear(x, first.weight.float(), first.bias.float()))
            out = F.linear(h, second.weight.float(), second.bias.float())
        return out.to(frames.dtype)


def prompt_index(cfg: PromptConfig, language: str | None) -> int:
    """Prompt id of a locale, short alias or 'auto'; an unknown name lists what is supported."""
    lang = AUTO if language in (None, "") else language
    if lang in cfg.dictionary:
        return cfg.dictionary[lang]
    lowered = {k.lower(): v for k, v in cfg.dictionary.items()}
    if lang.lower() in lowered:
        return lowered[lang.lower()]
    raise ValueError(f"unknown language {language!r}; use {cfg.describe()}")
