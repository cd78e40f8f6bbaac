"""Model-based endpointing: a segment ends after a run of blank frames that follows terminal
punctuation or a language tag (the model writes `. <de-DE>` at the end of an utterance), like
Riva's stop_history_eou."""
from __future__ import annotations

from ..checkpoint.tokenizer import Tokenizer

TERMINAL = tuple(".?!。？！؟।")


def ends_sentence(tok: Tokenizer, ids: list[int]) -> bool:
    """True when the tokens end with terminal punctuation or a language tag."""
    if not ids:
        return False
    spans = tok.find_tags(ids)
    if spans and spans[-1].start + spans[-1].length == len(ids):
        return True
    return tok.pieces[ids[-1]].rstrip().endswith(TERMINAL)


def is_endpoint(tok: Tokenizer, ids: list[int], last_token_frame: int, frames_done: int,
                window_frames: int) -> bool:
    """A segment with text whose last `window_frames` frames were blank after a sentence end."""
    return bool(ids) and frames_done - 1 - last_token_frame >= window_frames and ends_sentence(tok, ids)
