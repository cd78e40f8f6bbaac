"""Deterministic, disjoint train/test assignment of sentences and voices by hashing.

A sentence belongs to the test split when a salted hash of its text (NFC, case-folded, spaces
collapsed) falls in the first TEST_SENTENCE_SHARE of the hash range; the assignment depends on
nothing else (not the locale, the seed, the package version or which other sentences exist),
so a sentence is on the same side in every run, and en-US / en-GB, which read the same texts,
agree. Voices (espeak-ng variants) are split the same way over the fixed VARIANTS list, so a
test voice never speaks a training utterance in any language.
"""
from __future__ import annotations

import hashlib
import unicodedata

SPLITS = ("train", "test")
TEST_SENTENCE_SHARE = 0.2
TEST_VOICE_SHARE = 0.25
_SENTENCE_SALT = "babelcast-synth-sentence-v1"
_VOICE_SALT = "babelcast-synth-voice-v1"

# espeak-ng voice variants (file names in espeak-ng-data/voices/!v) that sound like a person;
# robotic, whispering and novelty variants are left out. Fixed, so the split never shifts.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "Denis", "Diogo", "ed", "edward", "Gene", "grandma", "grandpa", "Henrique",
    "Hugo", "iven", "iven2", "Jacky", "john", "klatt", "klatt2", "klatt3", "Lee", "linda", "Marco",
    "Mario", "max", "michel", "miguel", "norbert", "paul", "pedro", "quincy", "rob", "robert",
    "sandro", "shelby", "steph", "travis", "victor", "zac",
)


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same on every machine and Python run."""
    data = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def unit_interval(*parts: object) -> float:
    """stable_hash mapped to [0, 1)."""
    return stable_hash(*parts) / 2**64


def sentence_key(text: str) -> str:
    """The form of a sentence that decides its split: NFC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def sentence_split(text: str) -> str:
    """'test' or 'train' for a sentence, from its text alone."""
    return "test" if unit_interval(_SENTENCE_SALT, sentence_key(text)) < TEST_SENTENCE_SHARE else "train"


def voice_split(variant: str) -> str:
    """'test' or 'train' for a voice variant: the TEST_VOICE_SHARE of VARIANTS with the lowest hashes."""
    ranked = sorted(VARIANTS, key=lambda v: stable_hash(_VOICE_SALT, v))
    n_test = max(1, round(TEST_VOICE_SHARE * len(ranked)))
    if variant not in VARIANTS:
        raise ValueError(f"unknown voice variant {variant!r}")
    return "test" if variant in ranked[:n_test] else "train"


def split_variants(split: str) -> list[str]:
    """The variants of one split, in VARIANTS order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [v for v in VARIANTS if voice_split(v) == split]
