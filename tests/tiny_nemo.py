"""Write tiny random `.nemo` checkpoints with babelcast's own writer (no NeMo needed)."""
from __future__ import annotations

import io
import random
from pathlib import Path

import sentencepiece as spm

from babelcast.checkpoint.nemo_archive import write_nemo

from tiny import tiny_config, tiny_model

TAGS = ["<en-US>", "<de-DE>", "<es-US>"]


def tiny_spm(vocab_size: int, tags=TAGS, seed: int = 0) -> bytes:
    """A unigram SentencePiece model trained on seeded pseudo-words, tags as user symbols."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "de", "an"]
    lines = [" ".join("".join(rng.choice(syll) for _ in range(rng.randint(1, 3)))
                      for _ in range(rng.randint(3, 9))) + rng.choice([".", "?", ","]) for _ in range(400)]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
                                   model_type="unigram", user_defined_symbols=list(tags),
                                   character_coverage=1.0, bos_id=-1, eos_id=-1, minloglevel=2)
    return out.getvalue()


def write_tiny_nemo(path: Path, seed: int = 0, hybrid: bool = False, **encoder_overrides) -> Path:
    cfg = tiny_config(hybrid, **encoder_overrides)
    vocab = cfg["decoder"]["vocab_size"]
    name = "0123456789abcdef0123456789abcdef_tokenizer.model"
    cfg["tokenizer"] = {"type": "bpe", "model_path": f"nemo:{name}"}
    net = tiny_model(seed, hybrid, **encoder_overrides)
    return write_nemo(path, cfg, net.state_dict(), {name: tiny_spm(vocab)})
