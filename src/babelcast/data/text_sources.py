"""Real sentences for synthetic speech, from Debian packages: fortune cookies, documentation, man pages.

Three corpora (CORPORA): `fortunes` (below), `docs` (Debian's and GNOME's translated
documentation, DOC_SOURCES) and `manpages` (translated man pages, kept for the out-of-domain test
set only: no training set is ever made from them, see TRAIN_CORPORA).

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

Documentation and man pages are read from the files their Debian package installed (dpkg's file
list), through documents.py: paragraphs of prose with inline code marked, so that a sentence naming
a command, path or option is dropped; besides the fortunes' filter, a documentation sentence has no
abbreviation with inner dots ("z.B."), no word starting with a dash (an option), no bare single
letters but the language's own one-letter words, and (but for English) more of the language's
function words than English ones (translations keep untranslated paragraphs).
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .documents import read_document
from .split import sentence_key

FORTUNE_DIR = Path("/usr/share/games/fortunes")
DPKG_INFO = Path("/var/lib/dpkg/info")
FILTER_VERSION = 5  # bump when the cleaning or filtering changes (invalidates the sentence cache)
DOC_FILTER_VERSION = 1  # the same for the documentation and man-page corpora
CORPORA = ("fortunes", "docs", "manpages")
TRAIN_CORPORA = ("fortunes", "docs")  # manpages: never trained on, the out-of-domain test set's source

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


@dataclass(frozen=True)
class DocSource:
    """Files of one Debian package holding one language's documentation (or man pages)."""

    corpus: str  # "docs" or "manpages"
    package: str
    language: str  # "en", "de", "es", "it", "pl", "cs", "pt-BR" (see doc_language)
    pattern: str  # fnmatch pattern on the package's installed paths


def _docs(package: str, pattern: str, languages: dict[str, str]) -> list[DocSource]:
    """One DocSource per language; `pattern` and `package` take {code}, the package's own language code."""
    return [DocSource("docs", package.format(code=code), lang, pattern.format(code=code))
            for lang, code in languages.items()]


_D = "/usr/share/doc"
DOC_SOURCES: tuple[DocSource, ...] = (
    *_docs("installation-guide-amd64", f"{_D}/installation-guide-amd64/{{code}}/*.html",
           {"en": "en", "de": "de", "es": "es", "it": "it", "cs": "cs"}),
    *_docs("debian-reference-{code}", "/usr/share/debian-reference/*.{code}.html",
           {"en": "en", "de": "de", "es": "es", "it": "it", "pt-BR": "pt-br"}),
    DocSource("docs", "debian-faq", "en", f"{_D}/debian/FAQ/*.en.html"),
    *_docs("debian-faq-{code}", f"{_D}/debian/FAQ/{{code}}/*.{{code}}.html", {"de": "de", "it": "it"}),
    *_docs("debian-handbook", f"{_D}/debian-handbook/html/{{code}}/*.html",
           {"en": "en-US", "de": "de-DE", "es": "es-ES", "it": "it-IT", "pl": "pl-PL", "cs": "cs-CZ",
            "pt-BR": "pt-BR"}),
    *_docs("gnome-user-docs", "/usr/share/help/{code}/gnome-help/*.page",
           {"en": "C", "de": "de", "es": "es", "it": "it", "pl": "pl", "cs": "cs", "pt-BR": "pt_BR"}),
    # Man pages: the out-of-domain test set only (TRAIN_CORPORA). English: the Linux man-pages project's.
    DocSource("manpages", "manpages", "en", "/usr/share/man/man[1-8]/*"),
    *[DocSource("manpages", f"manpages-{code.lower().replace('_', '-')}", lang, f"/usr/share/man/{code}/man[1-8]/*")
      for lang, code in {"de": "de", "es": "es", "it": "it", "pl": "pl", "cs": "cs", "pt-BR": "pt_BR"}.items()],
)
_ONE_LETTER_WORDS = {"en": "ai", "de": "", "es": "yoeua", "it": "eaoi", "pl": "iwzoau", "cs": "iaksvzou",
                     "pt-BR": "aoe"}  # lower case; any other single letter is a variable, key or drive
_WORD_EDGE = ",.;:!?'\"-–—’‘“”„«»¡¿…"
# The commonest function words: a translated document keeps untranslated English paragraphs, which
# the fortunes' two-word English check lets through in short sentences.
_FUNCTION_WORDS = {
    "en": "the a an of to and in is it that for on with as are be this you can not or by from your if",
    "de": "der die das und ist nicht ein eine zu den mit von sie es im auf für sich auch dem des wird kann oder "
          "wenn werden sind wie bei aus nur an",
    "es": "el la los las de que y en un una es se no por con para del al lo como su más pero o si puede",
    "it": "il la le lo gli di che e è un una per non con del della si da in al sono come se può o anche",
    "pl": "i w nie się na z do to że jest jak o co ale po za od jego tak czy tylko przez może lub jeśli są",
    "cs": "a v se na je že to s z do o jako k pro by ale jsou jeho lze nebo při jak které který když",
    "pt-BR": "o a os as de que e do da em um uma para é não com se por mais no na como ou pode",
}
_INNER_DOT = re.compile(r"\w\.\w")  # "z.B.", "e.g.", "www.debian"
_OPTION = re.compile(r"(^|\s)[-–][A-Za-z]")  # "-v", "--help"


def doc_language(locale: str) -> str:
    """The language code of DOC_SOURCES for a locale: pt-BR keeps its region, the others drop it."""
    return locale if locale == "pt-BR" else locale.split("-")[0]


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


def available_locales(corpus: str = "fortunes") -> list[str]:
    """Locales whose Debian packages for `corpus` are installed."""
    return [loc for loc in SOURCES if (corpus == "fortunes" or doc_sources(loc, corpus))
            and missing_package(loc, corpus) is None]


def missing_package(locale: str, corpus: str = "fortunes") -> str | None:
    """The Debian package(s) to install for `locale`'s texts of `corpus` (space-separated), or None when
    they are present; a locale without such texts at all raises ValueError."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown text corpus {corpus!r}; use one of {', '.join(CORPORA)}")
    if corpus == "fortunes":
        source = SOURCES[locale]
        return None if _source_files(source) else source.package
    sources = doc_sources(locale, corpus)
    if not sources:
        raise ValueError(f"no {corpus} texts for {locale}")
    missing = sorted({s.package for s in sources if not _dpkg_list(s.package)})
    return " ".join(missing) or None


def doc_sources(locale: str, corpus: str) -> list[DocSource]:
    """The documentation (or man page) sources of a locale's language."""
    return [s for s in DOC_SOURCES if s.corpus == corpus and s.language == doc_language(locale)]


@functools.lru_cache(maxsize=None)
def load_sentences(locale: str, corpus: str = "fortunes") -> tuple[Sentence, ...]:
    """Every usable sentence of the locale in `corpus`, deduplicated (case-insensitively), in file order.

    The result is cached on disk (keyed by the files' sizes and times and the filter version), since
    reading and filtering a language's texts takes seconds (man pages: a minute).
    """
    if corpus == "fortunes":
        files = [("", p) for p in _source_files(SOURCES[locale])]
        version = [FILTER_VERSION, locale]
    else:
        files = [(s.package, p) for s in doc_sources(locale, corpus) for p in _doc_files(s)]
        version = [DOC_FILTER_VERSION, locale, corpus]
    stamp = json.dumps(version + [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for _, p in files])
    name = locale if corpus == "fortunes" else f"{locale}-{corpus}"
    cache = _cache_dir() / f"{name}-{hashlib.sha1(stamp.encode()).hexdigest()[:16]}.json"
    try:
        return tuple(Sentence(*pair) for pair in json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    if corpus == "fortunes":
        sentences = _extract_sentences(locale, [p for _, p in files])
    else:
        sentences = _extract_doc_sentences(locale, files)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[s.text, s.source] for s in sentences], ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: no cache
    return sentences


def training_keys(locale: str) -> frozenset[str]:
    """sentence_key of every sentence any training corpus has for the locale (either split): the
    out-of-domain test set leaves these out, so it shares no sentence with any training text."""
    return frozenset(sentence_key(s.text) for corpus in TRAIN_CORPORA
                     if missing_package(locale, corpus) is None for s in load_sentences(locale, corpus))


def _extract_doc_sentences(locale: str, files: list[tuple[str, Path]]) -> tuple[Sentence, ...]:
    """The usable prose sentences of documentation files, deduplicated, labelled `package:path`."""
    source = SOURCES[locale]
    language = doc_language(locale)
    seen: set[str] = set()
    out: list[Sentence] = []
    for package, path in files:
        for paragraph in read_document(path):
            for sentence in split_sentences(paragraph, source.script):
                key = sentence.casefold()
                if key not in seen and is_usable(sentence, source.script, english=language == "en",
                                                 language=language) and is_prose(sentence, language):
                    seen.add(key)
                    out.append(Sentence(sentence, f"{package}:{path}"))
    return tuple(out)


def is_prose(sentence: str, language: str) -> bool:
    """The documentation filter on top of is_usable: no abbreviation with inner dots, no option,
    no single letter that is not a word of the language (a variable, a drive, a key), and (but for
    English) more function words of the language than of English (untranslated paragraphs)."""
    if _INNER_DOT.search(sentence) or _OPTION.search(sentence):
        return False
    words = [w.lower() for w in (w.strip(_WORD_EDGE) for w in sentence.split()) if w]
    letters = _ONE_LETTER_WORDS.get(language, "")
    if not all(len(w) > 1 or w in letters for w in words):
        return False
    if language != "en":  # more of its own language's function words than of English's
        own, english = (sum(w in _function_words(code) for w in words) for code in (language, "en"))
        return own > english
    return True


@functools.lru_cache(maxsize=None)
def _function_words(language: str) -> frozenset[str]:
    return frozenset(_FUNCTION_WORDS.get(language, "").split())


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


def _dpkg_list(package: str) -> list[str]:
    """The paths a Debian package installed (dpkg's list), [] when it is not installed."""
    for path in (DPKG_INFO / f"{package}.list", *sorted(DPKG_INFO.glob(f"{package}:*.list"))):
        try:
            return path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
    return []


def _doc_files(source: DocSource) -> list[Path]:
    """The files of a DocSource that exist, sorted."""
    paths = sorted({p for p in _dpkg_list(source.package) if fnmatch.fnmatchcase(p, source.pattern)})
    return [Path(p) for p in paths if Path(p).is_file()]
