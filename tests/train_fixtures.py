"""Synthetic manifests and tiny training configs for the training tests (no NeMo, no real speech)."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tiny import BASE

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "an"]


def pseudo_sentence(rng: random.Random) -> str:
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(2, 6))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!"])


def write_manifest(folder: Path, n: int, seed: int = 0, langs=("en-US", "de-DE"), min_s: float = 0.6,
                   max_s: float = 1.6) -> Path:
    """n wav files of tones + noise with pseudo-word transcripts; relative paths, one language each."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        dur = rng.uniform(min_s, max_s)
        t = np.arange(int(dur * 16000)) / 16000
        audio = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) + 0.02 * nrng.standard_normal(len(t))
        sf.write(folder / f"u{i}.wav", audio.astype(np.float32), 16000)
        lines.append({"audio_filepath": f"u{i}.wav", "duration": round(len(t) / 16000, 4),
                      "text": pseudo_sentence(rng), "target_lang": langs[i % len(langs)]})
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def tiny_train_config(train: Path, val: Path | None, out_dir: Path, **trainer) -> dict:
    """A training YAML (as a dict) for the tiny test model: fp32, no augmentation, a few steps."""
    model = copy.deepcopy(BASE)
    del model["decoder"]["vocab_size"], model["joint"]["num_classes"]
    return {
        "model": model,
        "tokenizer": {"vocab_size": 48},
        "data": {"train": [str(train)], "val": [str(val)] if val else [], "batch_duration_s": 8.0, "buckets": 2},
        "augment": {"freq_masks": 0, "time_masks": 0, "speed_rates": [1.0], "noise_prob": 0.0, "dither": 0.0},
        "optim": {"lr": 3e-3, "schedule": "constant", "warmup_steps": 1},
        "trainer": {"out_dir": str(out_dir), "max_steps": 4, "precision": "fp32", "val_every": 0,
                    "checkpoint_every": 0, "log_every": 1, "seed": 7, **trainer},
    }


def make_trainer(manifests, out_dir, **trainer):
    """A from-scratch Trainer of the tiny config on (train, val) manifests."""
    from babelcast.train.config import parse_train_config
    from babelcast.train.run import trainer_from_scratch

    train, val = manifests
    return trainer_from_scratch(parse_train_config(tiny_train_config(train, val, out_dir, **trainer)))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops on a shared 2-core machine: one intra-op thread avoids spin-wait oversubscription
    (40× faster here when other processes are busy). Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
