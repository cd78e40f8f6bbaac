"""Text normalization and error rates: normalized WER (CER for scripts without spaces), raw WER, LID.

- Normalized: English (any en-*) goes through Whisper's EnglishTextNormalizer, every other
  language through Whisper's BasicTextNormalizer with combining marks kept (`preserve_marks`, so
  Thai or Devanagari vowel signs survive), both from the `whisper-normalizer` package.
- CER languages (zh, ja, ko, th by default; configurable): after the same normalization the
  units are the characters, spaces removed.
- Raw: case- and punctuation-sensitive; only Unicode NFC and whitespace are normalized (words
  keep their punctuation; CER languages count every non-space character).
- Counts come from jiwer's alignment (substitutions, deletions, insertions); an empty reference
  makes every hypothesis unit an insertion, an empty hypothesis every reference unit a deletion.
- Rates are corpus-level: summed errors over summed reference units (as model cards report).
"""
from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

DEFAULT_CER_LANGS = ("zh", "ja", "ko", "th")


def base_language(locale: str | None) -> str:
    """'de-DE' → 'de', 'zh_CN' → 'zh', None → ''."""
    if not locale:
        return ""
    return locale.replace("_", "-").split("-")[0].lower()


def uses_cer(locale: str | None, cer_langs=DEFAULT_CER_LANGS) -> bool:
    """Whether a language is scored by characters."""
    return base_language(locale) in {base_language(c) for c in cer_langs}


@functools.lru_cache(maxsize=None)
def _english():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.lru_cache(maxsize=None)
def _basic():
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer(preserve_marks=True)


def normalize(text: str, locale: str | None) -> str:
    """Whisper normalization: English normalizer for en-*, the basic one (marks kept) otherwise."""
    normalizer = _english() if base_language(locale) == "en" else _basic()
    return " ".join(normalizer(text or "").split())


def units(text: str, locale: str | None, cer_langs=DEFAULT_CER_LANGS, raw: bool = False) -> list[str]:
    """Scoring units of a text: normalized (or raw) words, or characters for CER languages."""
    text = " ".join(unicodedata.normalize("NFC", text or "").split()) if raw else normalize(text, locale)
    if uses_cer(locale, cer_langs):
        return [c for c in text if not c.isspace()]
    return text.split()


@dataclass(frozen=True)
class Counts:
    """Alignment counts of one or many utterances; `ref` is the number of reference units."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                      self.insertions + other.insertions, self.ref + other.ref)

    @property
    def rate(self) -> float | None:
        """errors / reference units (None when there is no reference unit)."""
        return self.errors / self.ref if self.ref else None


def align(ref_units: list[str], hyp_units: list[str]) -> Counts:
    """Substitutions, deletions and insertions turning the reference units into the hypothesis."""
    if not ref_units:
        return Counts(insertions=len(hyp_units))
    if not hyp_units:
        return Counts(deletions=len(ref_units), ref=len(ref_units))
    import jiwer

    # Units contain no whitespace, so joining by spaces gives jiwer exactly these tokens.
    out = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units))
    return Counts(out.substitutions, out.deletions, out.insertions, len(ref_units))


def score(reference: str, hypothesis: str, locale: str | None, cer_langs=DEFAULT_CER_LANGS,
          raw: bool = False) -> Counts:
    """Counts for one utterance (normalized by default, raw with raw=True)."""
    return align(units(reference, locale, cer_langs, raw), units(hypothesis, locale, cer_langs, raw))


def error_rate(pairs: list[tuple[str, str]], locale: str | None, cer_langs=DEFAULT_CER_LANGS,
               raw: bool = False) -> float | None:
    """Corpus-level WER (or CER) of (reference, hypothesis) pairs of one language, as a fraction."""
    total = Counts()
    for ref, hyp in pairs:
        total = total + score(ref, hyp, locale, cer_langs, raw)
    return total.rate


def same_language(detected: str | None, target: str | None) -> bool:
    """Language-level match of a detected locale with the target (es-US counts for es-ES)."""
    return bool(detected) and base_language(detected) == base_language(target)


def partial_changes(partials: list[str], final: str) -> tuple[int, int]:
    """(words shown, words later changed) over a sequence of displayed partial texts.

    A word shown in a partial is changed when a later partial or the final text differs at or
    before its position (replaced, extended, removed). For each partial, the words that survive
    are its longest prefix shared with every later text; that prefix is computed backwards in
    one pass: survive[k] = min(lcp(p[k], p[k+1]), survive[k+1]), survive[final] = len(final).
    """
    texts = [p.split() for p in partials]
    survive = len(final.split())
    following = final.split()
    shown = changed = 0
    for words in reversed(texts):
        survive = min(_common_prefix(words, following), survive)
        shown += len(words)
        changed += len(words) - survive
        survive = min(survive, len(words))
        following = words
    return shown, changed


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
