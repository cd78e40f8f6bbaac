"""Training-only augmentation: speed perturbation and additive noise on waveforms (data loader side),
dither, vocal-tract-length warping and SpecAugment on the batch (model side, spec §7.4)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
import torch
from torch import Tensor

from ..audio.features import mel_band_edges_hz, slaney_hz_to_mel
from ..audio.io import SAMPLE_RATE_HZ


@dataclass(frozen=True)
class AugmentConfig:
    # SpecAugment on log-mel [B, F, T], zero fill (3.5: 2 × 27 bins, 10 × 5 % of the length).
    freq_masks: int = 2
    freq_width: int = 27  # bins, absolute
    time_masks: int = 10
    time_width: float = 0.05  # < 1: fraction of each utterance's length; ≥ 1: frames, absolute
    # Speed perturbation: resample by one of these rates (1.1 = 10 % faster, shorter audio).
    speed_rates: tuple[float, ...] = (0.9, 1.0, 1.1)
    # Additive noise: with probability noise_prob, at an SNR drawn uniformly from noise_snr_db.
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    dither: float = 1e-5  # NeMo's preprocessor dither, training only
    # Vocal tract length perturbation: each utterance's spectrum stretched in frequency by a factor drawn
    # uniformly from this range (1.1 = formants 10 % higher, another speaker's vocal tract; (1, 1) = off).
    vtlp_range: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation at all (validation, tests, throughput baselines)."""
        return cls(freq_masks=0, time_masks=0, speed_rates=(1.0,), noise_prob=0.0, dither=0.0)


def speed_perturb(audio: np.ndarray, rate: float) -> np.ndarray:
    """Play `audio` `rate` times as fast (pitch moves too), by resampling 16 kHz → 16 kHz / rate."""
    if rate == 1.0 or len(audio) == 0:
        return audio
    out = soxr.resample(audio, SAMPLE_RATE_HZ, SAMPLE_RATE_HZ / rate, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def coloured_noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise with a random spectral tilt: white, pink (1/f) or brown (1/f²)."""
    exponent = rng.choice([0.0, 1.0, 2.0])
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples)
    freqs[0] = freqs[1] if n_samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n_samples)
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, noise: np.ndarray) -> np.ndarray:
    """Mix unit-power `noise` (same length) into `audio` at `snr_db` relative to the audio's power."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power <= 0:
        return audio
    scale = np.sqrt(power / 10 ** (snr_db / 10))
    return (audio + scale * noise).astype(np.float32)


def augment_waveform(audio: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Speed perturbation then additive noise, with every choice drawn from `rng`."""
    audio = speed_perturb(audio, float(rng.choice(cfg.speed_rates)))
    if cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
        snr_db = rng.uniform(*cfg.noise_snr_db)
        audio = add_noise(audio, snr_db, coloured_noise(len(audio), rng))
    return audio


def dither(audio: Tensor, lengths: Tensor, amount: float, gen: torch.Generator | None = None) -> Tensor:
    """Add tiny Gaussian noise inside each utterance (NeMo's training-time preprocessor dither)."""
    if amount <= 0:
        return audio
    inside = torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None]
    noise = torch.randn(audio.shape, generator=gen, device=audio.device)
    return audio + amount * noise * inside


def warp_frequency(mel: Tensor, factors: Tensor, sample_rate_hz: int = SAMPLE_RATE_HZ) -> Tensor:
    """Stretch each utterance's log-mel [B, F, T] along frequency by factors [B] (VTLP, Jaitly & Hinton
    2013): output band f holds the input at the band whose centre is f's centre in Hz / factor, linearly
    interpolated between the features' own band centres (Slaney scale); sources past either end repeat it."""
    n_freq, n_time = mel.shape[1], mel.shape[2]
    centres_hz = mel_band_edges_hz(sample_rate_hz, n_freq)[1:-1]  # [F]
    centres_mel = slaney_hz_to_mel(centres_hz)  # evenly spaced
    source_hz = centres_hz[None] / factors.double().cpu().numpy()[:, None]  # [B, F]
    source = torch.from_numpy(np.interp(slaney_hz_to_mel(source_hz), centres_mel, np.arange(n_freq)))  # band index
    low = source.floor().long().clamp(max=n_freq - 2)
    frac = (source - low).to(mel.device, mel.dtype)[..., None]  # [B, F, 1]
    low = low.to(mel.device)[..., None].expand(-1, -1, n_time)  # [B, F, T]
    return torch.gather(mel, 1, low) * (1 - frac) + torch.gather(mel, 1, low + 1) * frac


def vtlp(mel: Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> Tensor:
    """warp_frequency with one factor per utterance drawn from cfg.vtlp_range (no-op when the range is (1, 1))."""
    lo, hi = cfg.vtlp_range
    if lo == hi == 1.0:
        return mel
    factors = lo + (hi - lo) * torch.rand(mel.shape[0], generator=gen)
    return warp_frequency(mel, factors)


def _mask_spans(batch: int, n_masks: int, max_width: Tensor, extent: Tensor, axis_len: int,
                gen: torch.Generator | None) -> Tensor:
    """[B, axis_len] True inside any of n_masks spans of width U[0, max_width) starting in [0, extent - width]."""
    if n_masks == 0:
        return torch.zeros(batch, axis_len, dtype=torch.bool)
    width = (torch.rand(batch, n_masks, generator=gen) * max_width[:, None]).long()  # [B, M]
    start = (torch.rand(batch, n_masks, generator=gen) * (extent[:, None] - width).clamp(min=0)).long()
    pos = torch.arange(axis_len)[None, None]  # [1, 1, L]
    inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # [B, M, L]
    return inside.any(dim=1)


def spec_augment(mel: Tensor, mel_len: Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None) -> Tensor:
    """Zero random frequency bands and time spans of mel [B, F, T] (spec §7.4); lengths [B] frames."""
    b, n_freq, n_time = mel.shape
    lengths = mel_len.cpu().float()
    if cfg.time_width < 1:
        time_width = (cfg.time_width * lengths).clamp(max=n_time)  # adaptive: a share of each utterance
    else:
        time_width = torch.full((b,), float(cfg.time_width))
    time_mask = _mask_spans(b, cfg.time_masks, time_width, lengths, n_time, gen)
    freq_mask = _mask_spans(b, cfg.freq_masks, torch.full((b,), float(cfg.freq_width + 1)),
                            torch.full((b,), float(n_freq)), n_freq, gen)
    mask = time_mask[:, None, :] | freq_mask[:, :, None]  # [B, F, T]
    return mel.masked_fill(mask.to(mel.device), 0.0)
