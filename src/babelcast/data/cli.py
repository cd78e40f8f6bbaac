"""`babelcast data synth` and `babelcast data fleurs`: make or index evaluation / training sets."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babelcast.argtypes import positive_int as _positive_int

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `babelcast data` (one sub-subcommand per data source)."""
    sub = parser.add_subparsers(dest="data_command", metavar="SOURCE")

    synth = sub.add_parser(
        "synth", help="synthesize a multilingual set with espeak-ng and sox (texts from Debian's fortunes packages)",
        description="Synthesize a multilingual speech set (16 kHz mono wav + NeMo manifest) with espeak-ng and sox. "
                    "Sentences come from Debian's fortune packages; the train and test splits use disjoint "
                    "sentences and voices.")
    synth.add_argument("--langs", default="all", help="comma-separated locales, or all (default); see --list")
    synth.add_argument("--n", type=_positive_int, metavar="N",
                       help="utterances per language (default 10, or each of --sentences once)")
    synth.add_argument("--sentences", type=Path, metavar="FILE",
                       help="read these sentences (LOCALE<TAB>SENTENCE lines) instead of the fortunes; "
                            "--langs defaults to the file's locales")
    synth.add_argument("--out", type=Path, help="output folder (manifest.jsonl, audio/, synth_info.json)")
    synth.add_argument("--split", choices=("train", "test"), default="test")
    synth.add_argument("--seed", type=int, default=0, help="order of sentences, voices and prosody (not the split)")
    synth.add_argument("--voices", type=_positive_int, metavar="K",
                       help="voice variants per language, from the split's voices (default: all of them)")
    synth.add_argument("--augment", action="store_true", help="add reverberation, band-limiting, gain and noise")
    synth.add_argument("--jobs", type=_positive_int, metavar="P", help="parallel processes (default: CPU count)")
    synth.add_argument("--list", action="store_true", help="list the locales, their voices and packages, and exit")
    synth.add_argument("--progress", action="store_true", help="show a progress bar even when stderr is not a TTY")

    fleurs = sub.add_parser(
        "fleurs", help="write a NeMo manifest for a local copy of FLEURS",
        description="Write a NeMo manifest for a local copy of FLEURS in its published layout: "
                    "ROOT/<lang_code>/{<split>.tsv, audio/<split>/*.wav} (or ROOT/data/...).")
    fleurs.add_argument("root", type=Path, metavar="ROOT")
    fleurs.add_argument("--langs", default="all", help="comma-separated FLEURS codes (de_de,en_us,...) or all")
    fleurs.add_argument("--split", choices=("train", "dev", "test"), default="test")
    fleurs.add_argument("--max-per-lang", type=_positive_int, metavar="N", help="first N utterances per language")
    fleurs.add_argument("--out", type=Path, required=True, metavar="MANIFEST", help="manifest to write (.jsonl)")


def run_data(args: argparse.Namespace) -> int:
    """Dispatch to the chosen data source."""
    if args.data_command == "synth":
        return _run_synth(args)
    if args.data_command == "fleurs":
        return _run_fleurs(args)
    print("error: choose a data source: babelcast data synth|fleurs --help", file=sys.stderr)
    return EXIT_USAGE


def _run_synth(args: argparse.Namespace) -> int:
    from . import synth
    from .split import TEST_SENTENCE_SHARE, TEST_VOICE_SHARE, split_variants
    from .text_sources import SOURCES, available_locales, missing_package

    if args.list:
        for locale, source in SOURCES.items():
            state = "installed" if missing_package(locale) is None else f"missing: apt-get install -y {source.package}"
            print(f"{locale:6} espeak-ng voice {source.voice:7} texts from {source.package:13} ({state})")
        print(f"test voices ({len(split_variants('test'))}): {', '.join(split_variants('test'))}")
        print(f"train voices ({len(split_variants('train'))}): {', '.join(split_variants('train'))}")
        return EXIT_OK
    if args.out is None:
        print("error: --out DIR is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        synth.check_tools()
        own = synth.read_sentences(args.sentences) if args.sentences else None
        everything = list(own) if own else available_locales()
        locales = everything if args.langs == "all" else [s.strip() for s in args.langs.split(",") if s.strip()]
        if not locales:
            print("error: no locale available; install a fortunes package (see --list)", file=sys.stderr)
            return EXIT_USAGE
        n = args.n or (None if own else 10)
        jobs = synth.plan(locales, n, args.split, seed=args.seed, voices=args.voices, augment=args.augment, own=own)
    except synth.SynthError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    info = dict(split=args.split, langs=locales, n_per_lang=n, seed=args.seed, sentences=str(args.sentences or ""),
                voices=args.voices, augment=args.augment, test_sentence_share=TEST_SENTENCE_SHARE,
                test_voice_share=TEST_VOICE_SHARE,
                text_sources={loc: SOURCES[loc].package for loc in locales},
                voice_variants=sorted({j.variant for j in jobs}))
    show = args.progress or sys.stderr.isatty()
    report = synth.synthesize(jobs, args.out, processes=args.jobs, progress=show, info=info)
    for failure in report.failures:
        print(f"error: {failure}", file=sys.stderr)
    per_utt = f"{report.synth_seconds / report.made:.3f} s per utterance per process" if report.made else "all reused"
    hours = sum(r["duration"] for r in report.records) / 3600
    print(f"{len(report.records)} utterances ({report.made} made, {report.reused} reused, {hours:.2f} h of audio) "
          f"in {report.seconds:.1f} s ({per_utt}) -> {report.manifest}")
    return EXIT_FAILED if report.failures else EXIT_OK


def _run_fleurs(args: argparse.Namespace) -> int:
    from .fleurs import FleursError, read_fleurs, write_fleurs_manifest

    langs = None if args.langs == "all" else [s.strip() for s in args.langs.split(",") if s.strip()]
    try:
        utterances = read_fleurs(args.root, args.split, langs, args.max_per_lang)
    except FleursError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not utterances:
        print("error: no FLEURS utterance with audio found", file=sys.stderr)
        return EXIT_FAILED
    path = write_fleurs_manifest(utterances, args.out)
    n_langs = len({u.lang_code for u in utterances})
    print(f"{len(utterances)} utterances in {n_langs} languages -> {path}")
    return EXIT_OK


