"""Training data: NeMo manifests → utterances (text + language tag, tokens, prompt mode) → batches
bucketed by duration → padded tensors (spec §7.3).

Every random choice of a batch (augmentation, auto-vs-language prompt) comes from a generator seeded
by (seed, epoch, batch index), so a batch is the same whichever worker builds it and after a resume.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from ..audio.io import SAMPLE_RATE_HZ
from ..checkpoint.tokenizer import Tokenizer
from ..config import AUTO, PromptConfig
from ..manifest import ManifestEntry, load_entry_audio, read_manifest
from .augment import AugmentConfig, augment_waveform
from .phones import PhoneGrid, frame_targets, pad_targets

PROMPT_MODES = ("langID", "auto", "unified")
TRAILING_TAG = re.compile(r"<[a-z]{2,3}-[A-Za-z]{2,3}>\s*$")
ANY_TAG = re.compile(r"\s*<[a-z]{2,3}-[A-Za-z]{2,3}>")


@dataclass(frozen=True)
class ManifestSource:
    """One training manifest and how its utterances are prompted: langID (the real language),
    auto (always 'auto') or unified ('auto' with probability unified_auto_ratio)."""

    path: str
    prompt_mode: str = "unified"


@dataclass(frozen=True)
class DataConfig:
    train: tuple[ManifestSource, ...]
    val: tuple[ManifestSource, ...] = ()
    batch_duration_s: float = 120.0  # padded seconds per batch: max duration in the batch × size
    max_batch_size: int = 64
    min_duration_s: float = 0.1
    max_duration_s: float = 20.0
    buckets: int = 8  # duration buckets (quantiles); batches never mix buckets
    unified_auto_ratio: float = 0.5
    default_lang: str | None = None  # language of entries without target_lang / lang
    num_workers: int = 0


@dataclass(frozen=True)
class Utterance:
    entry: ManifestEntry
    duration_s: float
    text: str  # as trained: ends with the language tag on prompt models
    tokens: tuple[int, ...]
    language: str | None  # canonical locale, None when unknown
    prompt_mode: str


@dataclass
class Batch:
    audio: Tensor  # [B, S] fp32, zero padded
    audio_len: Tensor  # [B] samples
    targets: Tensor  # [B, U] int64, zero padded
    target_len: Tensor  # [B]
    prompt_ids: Tensor | None  # [B] int64; None for a model without prompt
    references: list[str]  # transcripts without language tags, for WER
    phone_targets: Tensor | None = None  # [B, T_enc, P] soft frame targets (train/phones.py), when asked for

    @property
    def audio_s(self) -> float:
        """Seconds of audio in the batch (after speed perturbation), for throughput."""
        return float(self.audio_len.sum()) / SAMPLE_RATE_HZ


def canonical_locale(prompt: PromptConfig, language: str | None) -> str | None:
    """'de' → 'de-DE' (the first locale sharing its prompt id); None for auto/unknown-free input."""
    if language in (None, "", AUTO):
        return None
    idx = prompt.dictionary.get(language)
    if idx is None:
        raise ValueError(f"language {language!r} is not in the prompt dictionary; "
                         f"supported: {', '.join(sorted(prompt.dictionary))}")
    if "-" in language:
        return language
    return next((k for k, v in prompt.dictionary.items() if v == idx and "-" in k), language)


def with_language_tag(text: str, locale: str | None) -> str:
    """Append ' <xx-XX>' unless the transcript already ends with a tag (the 3.5 target format, spec §6).
    An empty transcript (audio without speech, data/nonspeech.py) stays empty: the model learns to
    emit nothing at all there, not even a language tag."""
    text = text.strip()
    if locale is None or not text or TRAILING_TAG.search(text):
        return text
    return f"{text} <{locale}>"


def strip_language_tags(text: str) -> str:
    return " ".join(ANY_TAG.sub("", text).split())


def prompt_index_for(prompt: PromptConfig, utt: Utterance, auto_ratio: float, rng: np.random.Generator) -> int:
    """The prompt id one training sample gets under its source's prompt mode (spec §7.3)."""
    auto = prompt.dictionary[AUTO]
    if utt.language is None or utt.prompt_mode == "auto":
        return auto
    if utt.prompt_mode == "unified" and rng.random() < auto_ratio:
        return auto
    return prompt.dictionary[utt.language]


def _duration_s(entry: ManifestEntry) -> float:
    """The manifest's duration, else the file's (header only)."""
    if entry.duration_s is not None:
        return entry.duration_s
    info = sf.info(str(entry.audio_path))
    return max(0.0, info.frames / info.samplerate - entry.offset_s)


def tagged_text(entry: ManifestEntry, prompt: PromptConfig | None, default_lang: str | None,
                where: str) -> tuple[str, str | None]:
    """(transcript as trained, its canonical locale): prompt models get ' <xx-XX>' appended."""
    if prompt is None:
        return (entry.text or "").strip(), None
    try:
        locale = canonical_locale(prompt, entry.language or default_lang)
    except ValueError as err:
        raise ValueError(f"{where}:{entry.line}: {err}") from None
    return with_language_tag(entry.text or "", locale), locale


def load_utterances(sources: tuple[ManifestSource, ...], tokenizer: Tokenizer, prompt: PromptConfig | None,
                    cfg: DataConfig) -> list[Utterance]:
    """Read, filter by duration, tag and tokenize every utterance of the manifests."""
    out = []
    for source in sources:
        if source.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"{source.path}: prompt_mode {source.prompt_mode!r}; use one of {PROMPT_MODES}")
        for entry in read_manifest(source.path):
            if entry.text is None:
                raise ValueError(f"{source.path}:{entry.line}: training needs a 'text' field")
            duration_s = _duration_s(entry)
            if not cfg.min_duration_s <= duration_s <= cfg.max_duration_s:
                continue
            text, locale = tagged_text(entry, prompt, cfg.default_lang, source.path)
            out.append(Utterance(entry, duration_s, text, tuple(tokenizer.encode(text)), locale, source.prompt_mode))
    return out


def plan_batches(durations_s: list[float], cfg: DataConfig, rng: random.Random, group: int = 1) -> list[list[int]]:
    """Shuffled batches of utterance indices: quantile buckets by duration, shuffled inside, cut so
    that (longest in batch × batch size) stays within batch_duration_s. With group > 1 the plan is
    runs of `group` batches of one bucket (a bucket's last incomplete run is dropped), so that
    data-parallel processes, which take one batch of a run each, step in about the same time."""
    order = sorted(range(len(durations_s)), key=lambda i: durations_s[i])
    n_buckets = max(1, min(cfg.buckets, len(order)))
    bounds = [round(k * len(order) / n_buckets) for k in range(n_buckets + 1)]
    runs = []
    for lo, hi in zip(bounds, bounds[1:]):
        bucket = order[lo:hi]
        rng.shuffle(bucket)
        batches = _cut(bucket, durations_s, cfg)
        runs += [batches[i:i + group] for i in range(0, len(batches) - group + 1, group)]
    rng.shuffle(runs)
    return [batch for run in runs for batch in run]


def _cut(indices: list[int], durations_s: list[float], cfg: DataConfig) -> list[list[int]]:
    """Greedy split of one bucket into batches within the padded-duration budget."""
    batches, current, longest = [], [], 0.0
    for i in indices:
        longest_if = max(longest, durations_s[i])
        if current and (longest_if * (len(current) + 1) > cfg.batch_duration_s
                        or len(current) >= cfg.max_batch_size):
            batches.append(current)
            current, longest_if = [], durations_s[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    return batches


def collate(utts: list[Utterance], audios: list[np.ndarray], prompt_ids: list[int] | None) -> Batch:
    """Pad waveforms and token ids into a Batch."""
    audio_len = torch.tensor([len(a) for a in audios])
    audio = torch.zeros(len(audios), max(1, int(audio_len.max())))
    for i, a in enumerate(audios):
        audio[i, : len(a)] = torch.from_numpy(a)
    target_len = torch.tensor([len(u.tokens) for u in utts])
    targets = torch.zeros(len(utts), max(1, int(target_len.max())), dtype=torch.long)
    for i, u in enumerate(utts):
        targets[i, : len(u.tokens)] = torch.tensor(u.tokens, dtype=torch.long)
    prompts = None if prompt_ids is None else torch.tensor(prompt_ids, dtype=torch.long)
    return Batch(audio, audio_len, targets, target_len, prompts, [strip_language_tags(u.text) for u in utts])


class BatchDataset(torch.utils.data.Dataset):
    """Batch i of one epoch's plan, loaded and augmented; index with DataLoader(batch_size=None)."""

    def __init__(self, utts: list[Utterance], plan: list[list[int]], prompt: PromptConfig | None,
                 augment: AugmentConfig | None, auto_ratio: float, seed: tuple[int, ...],
                 phone_grid: PhoneGrid | None = None):
        self.utts, self.plan, self.prompt = utts, plan, prompt
        self.augment, self.auto_ratio, self.seed, self.phone_grid = augment, auto_ratio, seed, phone_grid

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        rng = np.random.default_rng([*self.seed, i])
        utts = [self.utts[j] for j in self.plan[i]]
        clean = [load_entry_audio(u.entry) for u in utts]
        audios = clean
        if self.augment is not None:
            audios = [augment_waveform(a, self.augment, rng) for a in clean]
        prompts = None
        if self.prompt is not None:
            prompts = [prompt_index_for(self.prompt, u, self.auto_ratio, rng) for u in utts]
        batch = collate(utts, audios, prompts)
        if self.phone_grid is not None:
            batch.phone_targets = pad_targets([self._phone_targets(u, a, len(a) / max(1, len(c)))
                                               for u, a, c in zip(utts, audios, clean)])
        return batch

    def _phone_targets(self, utt: Utterance, audio: np.ndarray, time_scale: float) -> np.ndarray:
        """Soft phoneme targets of one utterance on the encoder grid (times stretched like the audio); all zero,
        so no phoneme loss, for an utterance without a timeline (a Festival voice's)."""
        entry = utt.entry
        n_frames = int(1000 * len(audio) / SAMPLE_RATE_HZ / self.phone_grid.frame_ms) + 1
        if entry.phones is None:
            return np.zeros((n_frames, len(self.phone_grid.phones)), dtype=np.float32)
        timeline = tuple((ms - 1000 * entry.offset_s, name) for ms, name in entry.phones)
        return frame_targets(timeline, n_frames, self.phone_grid, time_scale)


def epoch_loader(utts: list[Utterance], cfg: DataConfig, prompt: PromptConfig | None, augment: AugmentConfig | None,
                 seed: int, epoch: int, start_batch: int = 0, rank: int = 0, world: int = 1,
                 group: int = 1, phone_grid: PhoneGrid | None = None) -> tuple[int, torch.utils.data.DataLoader]:
    """(batches in the epoch, loader over batches start_batch + rank, + world, …); the plan depends
    only on (seed, epoch, group), runs of `group` batches of one bucket (one optimizer step's:
    processes × accumulate), so every process takes as many steps and they take about as long."""
    plan = plan_batches([u.duration_s for u in utts], cfg, random.Random(seed * 1_000_003 + epoch), group)
    dataset = BatchDataset(utts, plan, prompt, augment, cfg.unified_auto_ratio, (seed, epoch), phone_grid)
    # Its own generator: creating a loader must not draw from the global RNG (dropout), or a resumed
    # run would diverge from an uninterrupted one. Batches take their randomness from (seed, epoch, i).
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start_batch + rank, len(plan), world),
                                         num_workers=cfg.num_workers, collate_fn=_as_is,
                                         generator=torch.Generator().manual_seed(seed + epoch))
    return len(plan), loader


def _as_is(batch: Batch) -> Batch:
    """The dataset already returns whole batches (a named function, so worker processes can pickle it)."""
    return batch


def total_hours(utts: list[Utterance]) -> float:
    return math.fsum(u.duration_s for u in utts) / 3600
