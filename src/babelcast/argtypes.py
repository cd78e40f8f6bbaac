"""argparse value types shared by the subcommands."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
