"""Who speaks a synthetic utterance, and how: voice pools per split, with held-out voices and prosody.

Three pools (POOLS):

- `main`: the locale's own espeak-ng voice with one of split.VARIANTS and the first demo model's
  prosody (data/demo's sets; every draw as before, so their files are the same);
- `wide` (training): every espeak-ng voice of the language but the held-out accents, every
  person-like variant of the train split (VARIANTS and NEW_VARIANTS), MBROLA voices when asked for
  (`mbrola=True`), Festival and flite voices when asked for (`festival=True`, `flite=True`), a wider
  prosody range, and a quarter of the utterances with no leading silence;
- `held-out` (the held-out-voice test set, synth split `voices`): the locale's voice and its
  held-out accents with the test split's variants, the held-out MBROLA, Festival and flite voices, and
  rates and pitches outside every training range (slower and faster, lower and higher).

MBROLA, Festival and flite voices are the pool's "other engines": a quarter of its utterances, when it
has any (ENGINE_SHARE). No pool's training voices meet a test voice: variants split by hash (split.py);
accents and the other engines' voices by the HELD_OUT list; held-out prosody lies outside `main`'s and
`wide`'s ranges, so neither the shipped model (trained on `main`) nor a model trained on `wide` has heard it.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .split import TEST_VOICE_SHARE, VARIANTS, split_variants, unit_interval

POOLS = ("main", "wide", "held-out")
BASE_RATE_WPM = 165
MBROLA_DIR = Path("/usr/share/mbrola")
FESTIVAL_DIR = Path("/usr/share/festival/voices")
ENGINE_SHARE = 0.25  # of a pool's utterances, when it has MBROLA, Festival or flite voices
_NEW_VARIANT_SALT = "babelcast-synth-voice-v3"

# Person-like espeak-ng variants that VARIANTS did not list (espeak-ng 1.51). Each is split on its own
# hash, so adding them moves no variant of VARIANTS across the split (the shipped model's test voices
# stay unheard). Robotic, whispering and novelty variants are still left out.
NEW_VARIANTS = ("anika", "antonio", "edward2", "Gene2", "gustave", "iven3", "iven4", "kaukovalta", "klatt4",
                "klatt5", "klatt6", "marcelo", "Michael", "Mike", "Mr", "Nguyen", "pablo", "steph2", "steph3")

# espeak-ng voices per language (accents); the locale's own voice (text_sources.SOURCES) comes first.
# British English is "en" (its voice file): the library's espeak_SetVoiceByName, which phones.py uses,
# does not know the name "en-gb".
ACCENTS = {
    "en": ("en-us", "en", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan", "en-gb-scotland", "en-gb-x-gbcwmd",
           "en-029"),
    "es": ("es-419", "es"),
}
# MBROLA voices (Debian's non-free mbrola-* packages) that espeak-ng drives for each language.
MBROLA = {
    "en": ("mb-us1", "mb-us2", "mb-us3", "mb-en1"),
    "de": ("mb-de1", "mb-de2", "mb-de3", "mb-de4", "mb-de5", "mb-de6", "mb-de7", "mb-de8"),
    "es": ("mb-es1", "mb-es2", "mb-es3", "mb-es4", "mb-mx1", "mb-mx2"),
    "it": ("mb-it1", "mb-it2", "mb-it3", "mb-it4"),
    "pl": ("mb-pl1",),
    "cs": ("mb-cz1", "mb-cz2"),
    "pt": ("mb-br1", "mb-br2", "mb-br3", "mb-br4"),
}
# Festival voices (Debian's festvox-* packages, free) per language, `fest-` + Festival's voice name; Debian
# has none for German, Spanish or Polish. cmu_us_slt_arctic_hts is statistical (HTS), the others diphone voices.
FESTIVAL = {
    "en": ("fest-kal_diphone", "fest-ked_diphone", "fest-cmu_us_slt_arctic_hts"),
    "it": ("fest-lp_diphone", "fest-pc_diphone"),
    "cs": ("fest-czech_dita", "fest-czech_machac", "fest-czech_krb", "fest-czech_ph"),
}
FESTIVAL_PACKAGES = ("festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k "
                     "festvox-czech-dita festvox-czech-machac festvox-czech-krb festvox-czech-ph")
# flite voices (Debian's flite package, free: the voices built into it), `flite-` + flite's voice name; English
# only. kal16 is Festival's kal speaker through another engine; awb and rms are speakers no other engine here has;
# slt is the speaker of the held-out Festival HTS voice, so it is held out too.
FLITE = {"en": ("flite-kal16", "flite-awb", "flite-rms", "flite-slt")}
FLITE_PACKAGES = "flite"
# Never in a training pool: the held-out-voice test set's accents, MBROLA, Festival and flite voices.
HELD_OUT = frozenset({"en-gb-scotland", "en-029", "mb-us3", "mb-de5", "mb-es2", "mb-mx2", "mb-it4", "mb-cz2",
                      "mb-br4", "fest-cmu_us_slt_arctic_hts", "fest-pc_diphone", "fest-czech_machac", "flite-slt"})
OWN_PROSODY_ENGINES = ("festival", "flite")  # keep their own pitch and report no phoneme events (no phone timeline)
# The other engines: their voices per language, their name in messages, the Debian packages that install them.
ENGINE_VOICES = {"mbrola": MBROLA, "festival": FESTIVAL, "flite": FLITE}
ENGINE_LABELS = {"mbrola": "MBROLA", "festival": "Festival", "flite": "flite"}
ENGINE_PACKAGES = {"festival": FESTIVAL_PACKAGES, "flite": FLITE_PACKAGES}  # MBROLA's: missing_mbrola, per voice


@dataclass(frozen=True)
class Prosody:
    """Ranges an utterance's delivery is drawn from (uniformly over the union of the intervals)."""

    rate: tuple[tuple[float, float], ...]  # × BASE_RATE_WPM
    pitch: tuple[tuple[float, float], ...]  # espeak-ng pitch 0-99, default 50
    lead_s: tuple[float, float]  # silence before the speech
    tail_s: tuple[float, float]  # and after it
    no_lead_share: float = 0.0  # utterances whose speech starts at the first sample


PROSODY = {
    "main": Prosody(rate=((0.8, 1.25),), pitch=((25, 75),), lead_s=(0.15, 0.5), tail_s=(0.2, 0.5)),
    "wide": Prosody(rate=((0.75, 1.3),), pitch=((18, 82),), lead_s=(0.0, 0.5), tail_s=(0.1, 0.5),
                    no_lead_share=0.25),
    "held-out": Prosody(rate=((0.6, 0.7), (1.38, 1.5)), pitch=((4, 13), (88, 97)), lead_s=(0.0, 0.5),
                        tail_s=(0.1, 0.5), no_lead_share=0.25),
}


@dataclass(frozen=True)
class Speakers:
    """The voices one locale's utterances of a pool are spoken with."""

    espeak: tuple[str, ...]  # espeak-ng voices (accents)
    variants: tuple[str, ...]  # espeak-ng variants, combined with any of `espeak`
    engines: tuple[str, ...] = ()  # other engines' voices (MBROLA `mb-…`, Festival `fest-…`, flite `flite-…`)
    prosody: Prosody = PROSODY["main"]


def variant_split(variant: str) -> str:
    """'test' or 'train' for any variant of VARIANTS (split.voice_split) or NEW_VARIANTS (its own hash)."""
    if variant in NEW_VARIANTS:
        return "test" if unit_interval(_NEW_VARIANT_SALT, variant) < TEST_VOICE_SHARE else "train"
    return "test" if variant in split_variants("test") else "train" if variant in VARIANTS else _unknown(variant)


def _unknown(variant: str) -> str:
    raise ValueError(f"unknown voice variant {variant!r}")


def all_variants(split: str) -> list[str]:
    """The variants of VARIANTS and NEW_VARIANTS in one split."""
    return split_variants(split) + [v for v in NEW_VARIANTS if variant_split(v) == split]


def language_of(voice: str) -> str:
    """'en-us' → 'en', 'mb-de1' → 'de', 'mb-mx2' → 'es', 'fest-czech_ph' → 'cs' (the language a voice speaks)."""
    return next((lang for table in ENGINE_VOICES.values() for lang, voices in table.items() if voice in voices),
                voice.split("-")[0].split("+")[0])


def accents(main_voice: str) -> tuple[str, ...]:
    """The espeak-ng voices of a locale whose own voice is `main_voice`, that one first."""
    others = ACCENTS.get(language_of(main_voice), ())
    return (main_voice, *[v for v in others if v != main_voice])


def pool_speakers(pool: str, split: str, main_voice: str, installed_variants: set[str],
                  mbrola: bool = False, festival: bool = False, flite: bool = False) -> Speakers:
    """The speakers of one locale in a pool (`main_voice`: the locale's espeak-ng voice); `split`
    (train or test) picks `main`'s variants, `wide` is the training pool, `held-out` the test one."""
    if pool not in POOLS:
        raise ValueError(f"unknown voice pool {pool!r}; use one of {', '.join(POOLS)}")
    language = language_of(main_voice)
    asked = {"mbrola": mbrola, "festival": festival, "flite": flite}
    mb = tuple(v for engine, table in ENGINE_VOICES.items() if asked[engine] for v in table.get(language, ()))
    if pool == "main":
        return Speakers((main_voice,), tuple(v for v in split_variants(split) if v in installed_variants))
    if pool == "wide":
        return Speakers(tuple(v for v in accents(main_voice) if v not in HELD_OUT),
                        tuple(v for v in all_variants("train") if v in installed_variants),
                        tuple(v for v in mb if v not in HELD_OUT), PROSODY["wide"])
    return Speakers(tuple(v for v in accents(main_voice) if v == main_voice or v in HELD_OUT),
                    tuple(v for v in all_variants("test") if v in installed_variants),
                    tuple(v for v in mb if v in HELD_OUT), PROSODY["held-out"])


def engine_of(voice: str) -> str:
    """Which synthesizer speaks a voice name: 'festival' (`fest-…`), 'flite' (`flite-…`), 'mbrola' (`mb-…`) or
    'espeak-ng'."""
    prefixes = {"fest-": "festival", "flite-": "flite", "mb-": "mbrola"}
    return next((engine for prefix, engine in prefixes.items() if voice.startswith(prefix)), "espeak-ng")


def missing_mbrola(voices: tuple[str, ...]) -> list[str]:
    """The Debian packages (mbrola-xx1) of MBROLA voices whose database is not installed."""
    return [f"mbrola-{v[3:]}" for v in voices if engine_of(v) == "mbrola" and not mbrola_installed(v)]


def engine_installed(voice: str) -> bool:
    """Whether an MBROLA (`mb-…`), Festival (`fest-…`) or flite (`flite-…`) voice can speak here."""
    installed = {"festival": festival_installed, "flite": flite_installed}.get(engine_of(voice), mbrola_installed)
    return installed(voice)


@functools.lru_cache(maxsize=None)
def flite_installed(voice: str) -> bool:
    """Whether flite is installed with voice `flite-name` built in (`flite -lv` lists it)."""
    if shutil.which("flite") is None:
        return False
    listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return voice.removeprefix("flite-") in listed.split()


@functools.lru_cache(maxsize=None)
def festival_installed(voice: str) -> bool:
    """Whether Festival and its voice `fest-name` are installed (/usr/share/festival/voices/<language>/<name>)."""
    name = voice.removeprefix("fest-")
    return shutil.which("text2wave") is not None and any(FESTIVAL_DIR.glob(f"*/{name}"))


@functools.lru_cache(maxsize=None)
def mbrola_installed(voice: str) -> bool:
    """Whether espeak-ng can speak with MBROLA voice `mb-xx1` (its database is under /usr/share/mbrola)."""
    name = voice[3:]
    return (MBROLA_DIR / name / name).is_file() or (MBROLA_DIR / name).is_file()


def draw_interval(intervals: tuple[tuple[float, float], ...], u: float) -> float:
    """A uniform u in [0, 1) mapped onto the union of the intervals (low + (high - low)·u for one)."""
    if len(intervals) == 1:
        low, high = intervals[0]
        return low + (high - low) * u
    total = sum(high - low for low, high in intervals)
    at = u * total
    for low, high in intervals:
        if at < high - low:
            return low + at
        at -= high - low
    return intervals[-1][1]
