"""Typed errors for options a model does not support, so callers (the server's error codes) need not
read message text."""
from __future__ import annotations


class UnsupportedLanguage(ValueError):
    """A language (or a language for a model without a prompt) this model cannot be asked for."""


class UnsupportedLatency(ValueError):
    """A chunk latency that is not a whole number of encoder frames or not usable with this model."""


class UnsupportedDecoder(ValueError):
    """A decoder this checkpoint does not have (ctc without a CTC head), or no decoder at all."""
