"""Real sentences for synthetic speech, from Debian's fortune-cookie packages.

Each locale reads the fortune files one Debian package installs under
/usr/share/games/fortunes (entries separated by lines holding a single `%`). An entry is cleaned
(terminal colour codes and `-- author` attribution lines dropped, lines joined), cut into
sentences, and a sentence is kept only when it reads well aloud and as a reference: a plausible
length, starting with a capital (cased scripts) and ending with terminal punctuation, only
letters of the locale's script and ordinary punctuation (no digits, URLs, brackets, acronyms,
speaker labels), and, for non-English Latin-script locales, not English. Text keeps its casing
and punctuation as written.

| locale | espeak-ng voice | Debian package | licence of the texts |
| en-US, en-GB | en-us, en-gb | fortunes-min, fortunes | BSD (fortune-mod) |
| de-DE | de | fortunes-de | GPL-2+ |
| es-ES, es-US | es, es-419 | fortunes-es | GPL-2+ (quotes presumed public domain) |
| it-IT | it | fortunes-it | public domain ("freeware") |
| ru-RU | ru | fortunes-ru | GPL-2 / GPL-2+ |
| pl-PL | pl | fortunes-pl | GPL-2+ |
| cs-CZ | cs | fortunes-cs | GPL |
| pt-BR | pt-br | fortunes-br | GPL-2+ |
| bg-BG | bg | fortunes-bg | GPL-2+ |
| zh-CN | cmn | fortunes-zh | GPL-3+ |
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
FILTER_VERSION = 5  # bump when the cleaning or filtering changes (invalidates the sentence cache)

# English files of fortunes-min and fortunes (the top-level folder also holds symlinks into it/,
# so English is an explicit list); files of mostly jargon, dialogue or verse layout are left out.
_ENGLISH_FILES = (
    "fortunes", "literature", "riddles", "computers", "cookie", "definitions", "education", "food",
    "humorists", "kids", "law", "love", "magic", "medicine", "men-women", "miscellaneous", "news",
    "people", "pets", "platitudes", "politics", "science", "songs-poems", "sports", "wisdom", "work",
)


@dataclass(frozen=True)
class LocaleSource:
    """Where a locale's sentences come from and how espeak-ng speaks them."""

    locale: str
    voice: str  # espeak-ng voice name
    package: str  # Debian package that installs the texts
    files: tuple[str, ...]  # paths relative to FORTUNE_DIR; a folder means every fortune file in it
    script: str  # "latin", "cyrillic" or "han"
    exclude: tuple[str, ...] = ()  # file names to skip inside folders


SOURCES: dict[str, LocaleSource] = {
    s.locale: s
    for s in (
        LocaleSource("en-US", "en-us", "fortunes", _ENGLISH_FILES, "latin"),
        LocaleSource("en-GB", "en-gb", "fortunes", _ENGLISH_FILES, "latin"),
        LocaleSource("de-DE", "de", "fortunes-de", ("de",), "latin", ("asciiart", "channel-debian.fortunes")),
        LocaleSource("es-ES", "es", "fortunes-es", ("es",), "latin", ("varios.fortunes-pre",)),
        LocaleSource("es-US", "es-419", "fortunes-es", ("es",), "latin", ("varios.fortunes-pre",)),
        LocaleSource("it-IT", "it", "fortunes-it", ("it",), "latin", ("banner",)),
        LocaleSource("ru-RU", "ru", "fortunes-ru", ("ru",), "cyrillic", ("art",)),
        LocaleSource("pl-PL", "pl", "fortunes-pl", ("pl",), "latin"),
        LocaleSource("cs-CZ", "cs", "fortunes-cs", ("cs",), "latin", ("klasik-sk",)),
        LocaleSource("pt-BR", "pt-br", "fortunes-br", ("brasil",), "latin"),
        LocaleSource("bg-BG", "bg", "fortunes-bg", ("bg",), "cyrillic"),
        LocaleSource("zh-CN", "cmn", "fortunes-zh", ("tang300", "song100", "chinese"), "han"),
    )
}

MIN_WORDS, MAX_WORDS = 3, 24  # cased scripts, in whitespace-separated words
MIN_HAN, MAX_HAN = 6, 40  # han script, in characters

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ATTRIBUTION = re.compile(r"^\s*(--|—|–|~)\s*\S")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”»“’]?\s+")
_OPENING = "\"'„“«‘¡¿"
_HAN_END = re.compile(r"(?<=[。！？])")
_PUNCT = r" ,.;:!?'\"\-–—’‘“”„«»¡¿…"
# Letters of the script (Latin: Basic, Latin-1, Extended-A/B and Additional; Cyrillic block) and punctuation.
_ALLOWED = {
    "latin": re.compile(rf"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff{_PUNCT}]+"),
    "cyrillic": re.compile(rf"[\u0400-\u04ff{_PUNCT}]+"),
}
_HAN_PUNCT = set("，。！？、；：“”‘’《》「」")
_ENGLISH_WORDS = {"the", "and", "you", "is", "of", "to", "that", "it", "with", "are", "was", "what", "this", "be"}
_SPEAKER_LABEL = re.compile(r"^\s*[\w.]{1,20}\s*:")
_ODD_PUNCTUATION = re.compile(r"[!?¡¿]{2}|\s[.,;:!?]")  # "!!", "¡¡ ", "word !"
_APOSTROPHE_ACCENT = re.compile(r"\b(?!po')\w*[aeiouAEIOU]'(?=[\s.,;:!?]|$)")  # Italian "penso'" for "pensò"


@dataclass(frozen=True)
class Sentence:
    """One sentence and the fortune file it came from (`package:relative/path`)."""

    text: str
    source: str


def available_locales() -> list[str]:
    """Locales whose Debian package is installed (its fortune files are present)."""
    return [loc for loc in SOURCES if _source_files(SOURCES[loc])]


def missing_package(locale: str) -> str | None:
    """The Debian package to install for `locale`, or None when its texts are present."""
    source = SOURCES[locale]
    return None if _source_files(source) else source.package


@functools.lru_cache(maxsize=None)
def load_sentences(locale: str) -> tuple[Sentence, ...]:
    """Every usable sentence of the locale, deduplicated (case-insensitively), in file order.

    The result is cached on disk (keyed by the files' sizes and times and FILTER_VERSION), since
    reading and filtering a language's fortunes takes a few seconds.
    """
    source = SOURCES[locale]
    files = _source_files(source)
    stamp = json.dumps([FILTER_VERSION, locale] + [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    cache = _cache_dir() / f"{locale}-{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.json"
    try:
        return tuple(Sentence(*pair) for pair in json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    sentences = _extract_sentences(locale, files)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[s.text, s.source] for s in sentences], ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: no cache
    return sentences


def _extract_sentences(locale: str, files: list[Path]) -> tuple[Sentence, ...]:
    source = SOURCES[locale]
    seen: set[str] = set()
    out: list[Sentence] = []
    for path in files:
        label = f"{source.package}:{path.relative_to(FORTUNE_DIR)}"
        for entry in read_fortune_file(path):
            for sentence in split_sentences(entry, source.script):
                key = sentence.casefold()
                if key not in seen and is_usable(sentence, source.script, english=locale.startswith("en"),
                                                 language=locale.split("-")[0]):
                    seen.add(key)
                    out.append(Sentence(sentence, label))
    return tuple(out)


def read_fortune_file(path: Path) -> list[str]:
    """The entries of one fortune file, each cleaned and joined into one line."""
    text = path.read_text(encoding="utf-8", errors="replace")
    entries, lines = [], []
    for line in text.splitlines() + ["%"]:
        if line.strip() == "%":
            if lines:
                entries.append(_join(lines))
            lines = []
            continue
        line = _ANSI.sub("", line).replace("\u00a0", " ")
        if _ATTRIBUTION.match(line):
            continue
        lines.append(line.strip())
    return [e for e in entries if e]


def split_sentences(entry: str, script: str) -> list[str]:
    """Cut a cleaned entry into sentences at terminal punctuation."""
    if script == "han":
        return [s.strip() for s in _HAN_END.split(entry) if s.strip()]
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(entry):
        following = entry[match.end():].lstrip(_OPENING)
        if following[:1].isupper():  # a new sentence starts with a capital
            pieces.append(entry[start : match.end()])
            start = match.end()
    pieces.append(entry[start:])
    return [p.strip() for p in pieces if p.strip()]


def is_usable(sentence: str, script: str, english: bool = True, language: str = "") -> bool:
    """Whether a sentence is clean enough to be spoken and used as a reference transcript."""
    if script == "han":
        return (MIN_HAN <= len(sentence) <= MAX_HAN and sentence[-1] in "。！？"
                and all(_is_han(c) or c in _HAN_PUNCT for c in sentence) and _simplified(sentence)
                and sentence.count("“") == sentence.count("”") and sentence.count("《") == sentence.count("》"))
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not _ALLOWED[script].fullmatch(sentence):
        return False
    stripped = sentence.strip("\"'„“”«»‘’¡¿")
    if not stripped or not stripped[0].isupper() or stripped[-1] not in ".!?":
        return False
    if _SPEAKER_LABEL.match(sentence) or "--" in sentence or sentence.count('"') % 2:
        return False
    if _ODD_PUNCTUATION.search(sentence) or (language == "it" and _APOSTROPHE_ACCENT.search(sentence)):
        return False
    if any(_tail_has_capital(w) for w in words):  # acronyms, shouting, CamelCase
        return False
    if not english and script == "latin":
        lowered = {w.strip(",.;:!?\"'").lower() for w in words}
        if len(lowered & _ENGLISH_WORDS) >= 2:
            return False
    return True


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "babelcast" / "sentences"


def _tail_has_capital(word: str) -> bool:
    """A capital after the first letter of a word (opening quotes ignored)."""
    tail = word.lstrip(_OPENING)[1:]
    return tail != tail.lower()


def _join(lines: list[str]) -> str:
    """Join the lines of an entry; a hyphen at a line end joins the word."""
    text = ""
    for line in lines:
        if not line:
            continue
        if text.endswith("-") and not text.endswith(" -") and line[:1].islower():
            text = text[:-1] + line
        else:
            text = f"{text} {line}" if text else line
    return " ".join(text.split())


def _source_files(source: LocaleSource) -> list[Path]:
    """The fortune text files of a source that exist, sorted (index `.dat` files skipped)."""
    files: list[Path] = []
    for name in source.files:
        path = FORTUNE_DIR / name
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if _is_text_file(p) and p.name not in source.exclude)
        elif _is_text_file(path):
            files.append(path)
    return files


def _is_text_file(path: Path) -> bool:
    return path.is_file() and path.suffix not in (".dat", ".u8") and not path.name.startswith(".")


def _simplified(text: str) -> bool:
    """Whether every character is in GB 2312, the simplified-Chinese set (drops traditional and rare forms)."""
    try:
        text.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


@functools.lru_cache(maxsize=65536)
def _is_han(c: str) -> bool:
    return unicodedata.name(c, "").startswith("CJK UNIFIED IDEOGRAPH")
