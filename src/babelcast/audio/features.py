"""Log-mel front end, offline and incremental, numerically NeMo's FilterbankFeatures (spec §2).

Always fp32 with autocast off (spec §8.3). Frame t of an utterance covers samples
[hop*t - n_fft/2, hop*t + n_fft/2) of the pre-emphasized signal, zero outside it (center=True with
constant padding), so a stream can compute each frame once its samples have arrived and get the same
value the offline pass gives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..config import FeatureConfig


def slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, lin)


def slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    """The inverse of slaney_hz_to_mel."""
    lin = m * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log_part, lin)


def mel_band_edges_hz(sample_rate_hz: int, n_mels: int) -> np.ndarray:
    """[n_mels + 2] Hz, evenly spaced in mel from 0 to Nyquist: band k rises from edge k, peaks at k + 1
    (its centre) and falls to k + 2."""
    return slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(sample_rate_hz / 2), n_mels + 2))


def slaney_mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalized mel filters [n_mels, n_fft//2 + 1] (librosa's defaults)."""
    fft_hz = np.linspace(0, sample_rate_hz / 2, n_fft // 2 + 1)
    mel_hz = mel_band_edges_hz(sample_rate_hz, n_mels)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / np.diff(mel_hz)[:-1, None]
    upper = ramps[2:] / np.diff(mel_hz)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


@dataclass
class FeatureState:
    """Per-stream carry between audio pieces.

    tail: pre-emphasized samples not yet fully used by a frame, starting at sample `tail_start`.
    """

    tail: Tensor  # [S_tail] fp32
    tail_start: int  # absolute sample index of tail[0] (may be negative: the left zero pad)
    last_sample: Tensor  # [1] last raw sample received (0 before the stream starts), for pre-emphasis
    n_samples: int  # raw samples received so far
    n_frames: int  # mel frames emitted so far


class LogMel(nn.Module):
    """Pre-emphasis → STFT (Hann, n_fft) → power → mel → log(x + guard)."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        window = torch.hann_window(cfg.win_samples, periodic=False)
        fb = torch.from_numpy(slaney_mel_filterbank(cfg.sample_rate_hz, cfg.n_fft, cfg.n_mels))
        self.register_buffer("window", window)  # [win], from the checkpoint when it has one
        self.register_buffer("fb", fb[None])  # [1, n_mels, n_fft//2 + 1]

    # ---- shared math -------------------------------------------------------------------------
    def _frames(self, padded: Tensor) -> Tensor:
        """Log-mel of every full n_fft window of already padded, pre-emphasized audio.

        padded: [B, S] fp32 → [B, n_mels, (S - n_fft) // hop + 1]
        """
        cfg = self.cfg
        with torch.autocast(padded.device.type, enabled=False):
            spec = torch.stft(padded.float(), n_fft=cfg.n_fft, hop_length=cfg.hop_samples,
                              win_length=cfg.win_samples, window=self.window.float(), center=False,
                              return_complex=True)
            mag = torch.view_as_real(spec).pow(2).sum(-1).sqrt()  # NeMo: sqrt then ^mag_power
            power = mag.pow(cfg.mag_power)
            mel = torch.matmul(self.fb.float(), power)
            return torch.log(mel + cfg.log_guard)

    def _preemphasize(self, x: Tensor, prev: Tensor | None = None) -> Tensor:
        """y[t] = x[t] - a x[t-1]; y[0] = x[0] offline, or uses the carried previous sample."""
        a = self.cfg.preemph
        if a == 0:
            return x
        if prev is None:
            return torch.cat([x[..., :1], x[..., 1:] - a * x[..., :-1]], dim=-1)
        shifted = torch.cat([prev, x[..., :-1]], dim=-1)
        return x - a * shifted

    # ---- offline ------------------------------------------------------------------------------
    def forward(self, audio: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """audio [B, S] fp32 in [-1, 1], lengths [B] samples → mel [B, n_mels, T], mel_len [B]."""
        cfg = self.cfg
        audio = audio.float()
        mel_len = torch.div(lengths, cfg.hop_samples, rounding_mode="floor")
        y = self._preemphasize(audio)
        keep = torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None]
        y = y * keep
        half = cfg.n_fft // 2
        mel = self._frames(torch.nn.functional.pad(y, (half, half)))
        t_max = int(audio.shape[1]) // cfg.hop_samples
        mel = mel[..., :t_max]
        frame_ok = torch.arange(t_max, device=audio.device)[None] < mel_len[:, None]
        return mel.masked_fill(~frame_ok[:, None, :], 0.0), mel_len

    # ---- streaming ----------------------------------------------------------------------------
    def init_state(self, device: torch.device | str = "cpu") -> FeatureState:
        half = self.cfg.n_fft // 2
        return FeatureState(tail=torch.zeros(half, device=device), tail_start=-half,
                            last_sample=torch.zeros(1, device=device), n_samples=0, n_frames=0)

    def step(self, samples: Tensor, state: FeatureState, final: bool = False) -> tuple[Tensor, FeatureState]:
        """Feed raw samples [S] of one stream; returns the mel frames now complete [n_mels, n].

        With final=True the stream ends: the right zero pad is added and the frames up to
        floor(total / hop) are emitted, exactly the offline frame count.
        """
        cfg = self.cfg
        samples = samples.float().reshape(-1)
        # A zero "previous sample" at the start gives y[0] = x[0], the offline rule.
        y = self._preemphasize(samples, state.last_sample) if samples.numel() else samples
        n_samples = state.n_samples + samples.numel()
        last = samples[-1:] if samples.numel() else state.last_sample
        tail = torch.cat([state.tail, y])
        target = n_samples // cfg.hop_samples  # frames the utterance will have at most
        if final:
            tail = torch.nn.functional.pad(tail, (0, cfg.n_fft))
        available = (len(tail) - cfg.n_fft) // cfg.hop_samples + 1 if len(tail) >= cfg.n_fft else 0
        n_new = max(0, min(available, target - state.n_frames))
        if n_new > 0:
            span = (n_new - 1) * cfg.hop_samples + cfg.n_fft
            frames = self._frames(tail[None, :span])[0, :, :n_new]
        else:
            frames = tail.new_zeros(cfg.n_mels, 0)
        used = n_new * cfg.hop_samples
        new_state = FeatureState(tail=tail[used:] if not final else tail[:0], tail_start=state.tail_start + used,
                                 last_sample=last, n_samples=n_samples, n_frames=state.n_frames + n_new)
        return frames, new_state
