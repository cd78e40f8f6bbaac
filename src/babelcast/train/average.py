"""An exponential moving average of the weights (trainer.ema_decay): what validation and the exported
`.nemo` files use, the raw weights train on. Averaging the last few hundred steps of a run smooths out the
noise of the final updates (Polyak averaging), typically worth a little WER for free."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class WeightAverage:
    """The EMA of a module's parameters; decay min(decay, (1 + n) / (10 + n)) after n updates, so the early
    average is not dominated by the weights it started from (the TensorFlow ExponentialMovingAverage rule)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.names = [name for name, _ in module.named_parameters()]
        self.params = [p.detach().clone() for p in module.parameters()]

    def update(self, module: nn.Module) -> None:
        """Move the average toward the module's current weights (after an optimizer step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.params, [p.detach() for p in module.parameters()], 1.0 - decay)

    @contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """The module holds the averaged weights inside the block, its own again after it."""
        own = [p.detach().clone() for p in module.parameters()]
        self._copy_into(module, self.params)
        try:
            yield
        finally:
            self._copy_into(module, own)

    @staticmethod
    def _copy_into(module: nn.Module, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            torch._foreach_copy_(list(module.parameters()), tensors)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "params": dict(zip(self.names, self.params))}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.params = [state["params"][name].clone() for name in self.names]
