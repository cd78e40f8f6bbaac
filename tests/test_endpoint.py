"""streaming/endpoint.py on its own: a segment ends after `window` blank frames that follow terminal
punctuation or a closing language tag, and not otherwise."""
from __future__ import annotations

import pytest

from babelcast.streaming.endpoint import ends_sentence, is_endpoint

from server_util import load_tiny


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tiny(tmp_path_factory).tokenizer


@pytest.mark.parametrize("text, ends", [
    ("Guten Tag.", True), ("Wie geht es?", True), ("Guten Tag. <de-DE>", True), ("hola <es-US>", True),
    ("Guten Tag", False), ("hola <es-US> que", False), ("", False)])
def test_a_sentence_ends_with_terminal_punctuation_or_a_tag(tok, text, ends):
    assert ends_sentence(tok, tok.encode(text)) is ends


def test_an_endpoint_needs_the_whole_blank_window_after_a_sentence_end(tok):
    done, unfinished = tok.encode("Guten Tag."), tok.encode("Guten Tag")
    last = 10  # the frame of the last token; frames 11.. are blank
    window = 5
    assert not is_endpoint(tok, done, last, last + window, window)  # frames 11-14: four blank frames
    assert is_endpoint(tok, done, last, last + window + 1, window)  # frames 11-15: five
    assert not is_endpoint(tok, unfinished, last, last + 100, window)  # no sentence end: never
    assert not is_endpoint(tok, [], -1, 100, window)  # nothing said: no segment to end
