"""The training YAML, parsed once into frozen configs.

    model:      NeMo's model_config.yaml format (what `.nemo` files hold); decoder.vocab_size may be
                left out, it follows the tokenizer
    tokenizer:  vocab_size, character_coverage, extra_texts (manifests read for text only), or
                model_path of an existing SentencePiece model
    data:       train / val manifests (paths, or {manifest, prompt_mode}), bucketing, prompt modes
    augment:    SpecAugment, speed perturbation, noise, dither
    optim:      AdamW and the learning-rate schedule
    trainer:    steps, precision, accumulation, clipping, validation, checkpoints, output folder

A file may start from another: `base: demo5.yaml` (relative to the file) reads that one first and lays
this file's keys over it, mapping by mapping; any other value (a list, a number, a string) replaces the
base's. A new training cycle is then only what it changes.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..config import parse_att_contexts
from .augment import AugmentConfig
from .data import DataConfig, ManifestSource

SCHEDULES = ("noam", "cosine", "constant")
PRECISIONS = ("bf16", "fp32")


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 512
    character_coverage: float = 1.0
    model_path: str | None = None  # use this SentencePiece model instead of training one
    extra_texts: tuple[str, ...] = ()  # manifests whose transcripts the tokenizer also learns (not trained on):
    # languages to fine-tune later get their characters and tag pieces, as the released vocabulary has


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2.0  # noam: a scale (peak = lr / sqrt(d_model * warmup)); cosine/constant: the peak
    schedule: str = "noam"
    warmup_steps: int = 1000
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 1e-3


@dataclass(frozen=True)
class TrainerConfig:
    out_dir: str = "runs/train"
    max_steps: int = 10000  # optimizer steps (skipped non-finite steps count too)
    precision: str = "bf16"  # autocast dtype on CPU; weights and optimizer stay fp32
    accumulate: int = 1  # batches per optimizer step
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    ema_decay: float = 0.0  # > 0: validate and export an exponential moving average of the weights (train/average.py)
    ctc_weight: float = 0.3  # hybrid models: loss = (1-w)·rnnt + w·ctc
    export_ctc: bool = True  # False: the CTC head only helps training; exports are the plain (prompt) RNNT
    phone_weight: float = 0.0  # > 0: + w × frame-level phoneme loss (synthetic data's timelines, train/phones.py)
    joint_chunk: int = 0  # utterances per joint+loss sub-batch, recomputed in backward (0 = whole batch)
    val_every: int = 500
    val_latency_ms: int | None = None  # None: the model's largest trained lookahead
    val_max_utts: int = 200
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 1234
    threads: int = 0  # torch intra-op threads per process; 0 = torch's default
    init_from: str | None = None  # a .nemo (path or hub id, same architecture and tokenizer) whose weights start a
    # fresh run instead of random ones, e.g. to train the shipped demo model further; OUT_DIR/last.pt still wins
    init_layers: tuple[int, ...] | None = None  # with init_from: encoder layer i starts from init_from's layer
    # init_layers[i], e.g. [0, 1, 1, 2, 3, 3, 4, 5, 5, 6] grows a 7-layer model to 10 by copying layers (None: same)
    processes: int = 1  # > 1: data parallel on this machine (train/parallel.py), batches split between processes


@dataclass(frozen=True)
class TrainConfig:
    model: Mapping[str, Any]
    tokenizer: TokenizerConfig
    data: DataConfig
    augment: AugmentConfig
    optim: OptimConfig
    trainer: TrainerConfig
    raw: Mapping[str, Any]  # the YAML as read, stored in checkpoints

    @property
    def out_dir(self) -> Path:
        return Path(self.trainer.out_dir)


def _build(cls, values: Mapping[str, Any] | None, where: str):
    """A frozen dataclass from a mapping; an unknown key is an error naming it."""
    values = dict(values or {})
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


def _sources(items: Any, default_mode: str, base: Path) -> tuple[ManifestSource, ...]:
    """Manifest paths (relative to the YAML's folder) or {manifest, prompt_mode} mappings."""
    if items is None:
        return ()
    if isinstance(items, (str, Mapping)):
        items = [items]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"manifest": item}
        path = Path(item["manifest"]).expanduser()
        out.append(ManifestSource(str(path if path.is_absolute() else base / path),
                                  item.get("prompt_mode", default_mode)))
    return tuple(out)


def data_config(values: Mapping[str, Any], base: Path) -> DataConfig:
    """DataConfig from the YAML's `data:` section; manifests resolve against `base`."""
    values = dict(values)
    train = _sources(values.pop("train", None), values.pop("prompt_mode", "unified"), base)
    val = _sources(values.pop("val", None), values.pop("val_prompt_mode", "langID"), base)
    if not train:
        raise ValueError("data.train: at least one training manifest is needed")
    return _build(DataConfig, {**values, "train": train, "val": val}, "data")


def parse_train_config(raw: Mapping[str, Any], base: Path = Path(".")) -> TrainConfig:
    """Validate the sections of a training YAML (relative paths resolve against `base`)."""
    if "model" not in raw:
        raise ValueError("the training config needs a `model:` section (NeMo model_config format)")
    trainer = _build(TrainerConfig, raw.get("trainer"), "trainer")
    optim = _build(OptimConfig, raw.get("optim"), "optim")
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule {optim.schedule!r}; use one of {SCHEDULES}")
    if trainer.precision not in PRECISIONS:
        raise ValueError(f"trainer.precision {trainer.precision!r}; use one of {PRECISIONS}")
    if not 0.0 <= trainer.ema_decay < 1.0:
        raise ValueError(f"trainer.ema_decay {trainer.ema_decay}: use 0 (off) or a decay below 1, e.g. 0.999")
    if trainer.processes < 1:
        raise ValueError(f"trainer.processes {trainer.processes}: at least 1")
    out_dir = Path(trainer.out_dir)
    trainer = replace(trainer, out_dir=str(out_dir if out_dir.is_absolute() else base / out_dir))
    tokenizer = _build(TokenizerConfig, raw.get("tokenizer"), "tokenizer")
    if tokenizer.model_path and not Path(tokenizer.model_path).is_absolute():
        tokenizer = replace(tokenizer, model_path=str(base / tokenizer.model_path))
    tokenizer = replace(tokenizer, extra_texts=tuple(str(base / p) for p in tokenizer.extra_texts))
    model = normalized_model_section(raw["model"])
    if (model.get("encoder") or {}).get("att_context_probs") is not None:  # checked again against an init model's
        lookahead_weights(model, parse_att_contexts(model["encoder"]))
    return TrainConfig(model=model, tokenizer=tokenizer, data=data_config(raw.get("data") or {}, base),
                       augment=_build(AugmentConfig, raw.get("augment"), "augment"), optim=optim,
                       trainer=trainer, raw=raw)


def normalized_model_section(model: Mapping[str, Any]) -> dict[str, Any]:
    """A copy whose prompt-dictionary keys are strings: YAML 1.1 reads `no:` (Norwegian) as False
    (spec §1.1), and an exported config must write it back as 'no'."""
    model = copy.deepcopy(dict(model))
    prompts = (model.get("model_defaults") or {}).get("prompt_dictionary")
    if prompts:
        named = {False: "no", True: "yes"}
        model["model_defaults"]["prompt_dictionary"] = {named.get(k, str(k)) if isinstance(k, bool) else str(k): v
                                                        for k, v in prompts.items()}
    return model


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML; paths in it are relative to the current directory (where you run from)."""
    return parse_train_config(read_config_yaml(Path(path)), Path("."))


def read_config_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's mapping, laid over its `base:` file's (recursively), without the `base` key."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a YAML mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ValueError(f"{path}: base: expects a file name, got {base!r}")
    seen = (*seen, path.resolve())
    base_path = path.parent / base
    if base_path.resolve() in seen:
        raise ValueError(f"{path}: base: {base} leads back to this file")
    try:
        under = read_config_yaml(base_path, seen)
    except OSError as e:
        raise ValueError(f"{path}: base: {base}: cannot read it ({e.strerror or e})") from None
    return _overlay(under, raw)


def _overlay(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """base with over's keys: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        both_maps = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _overlay(out[key], value) if both_maps else value
    return out


def lookahead_weights(model_section: Mapping[str, Any], contexts: tuple[tuple[int, int], ...]) -> list[float] | None:
    """NeMo's encoder.att_context_probs: each trained lookahead's weight in the per-batch draw (None: uniform)."""
    probs = (model_section.get("encoder") or {}).get("att_context_probs")
    if probs is None:
        return None
    try:
        weights = [float(p) for p in probs] if isinstance(probs, (list, tuple)) else []
    except (TypeError, ValueError):
        weights = []
    if len(weights) != len(contexts) or not all(0 <= w < math.inf for w in weights) or sum(weights) <= 0:
        raise ValueError(f"model.encoder.att_context_probs {probs!r}: give one finite weight >= 0 per "
                         f"att_context_size entry ({len(contexts)}: {[list(c) for c in contexts]}), not all zero")
    return weights
