"""argparse value types and options shared by the subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

from .config import DEFAULT_WEIGHT, GREEDY_WEIGHT


def positive_int(text: str) -> int:
    """A strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_boost_arguments(parser: argparse.ArgumentParser) -> None:
    """--boost and --boost-file: phrases (names, terms) the decoder should favour."""
    parser.add_argument("--boost", action="append", default=[], metavar="PHRASE[:WEIGHT]",
                        help=f"favour this phrase (repeatable; weight per token, default {DEFAULT_WEIGHT:g} with "
                             f"the beam search, {GREEDY_WEIGHT:g} greedy)")
    parser.add_argument("--boost-file", type=Path, metavar="FILE", help="phrases to favour, one PHRASE[:WEIGHT] a line")


def add_beam_argument(parser: argparse.ArgumentParser) -> None:
    """--beam-size: hypotheses of the RNNT beam search."""
    parser.add_argument("--beam-size", type=positive_int, metavar="N",
                        help="hypotheses of an RNNT beam search (1: greedy; default 4 with --boost, else greedy)")


def boost_phrases(args: argparse.Namespace) -> list[str]:
    """The phrases of --boost-file (blank lines skipped), then of --boost, checked (ValueError naming a bad
    one or an unreadable file)."""
    try:
        lines = args.boost_file.read_text(encoding="utf-8").splitlines() if args.boost_file else []
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read --boost-file {args.boost_file}: {getattr(e, 'strerror', None) or e}") from None
    phrases = [line.strip() for line in lines if line.strip()] + args.boost
    if phrases:  # torch is imported only when boosting
        from babelcast.decoding.boost import parse_phrases

        parse_phrases(phrases)
    return phrases
