"""SentencePiece tokenizer with language-tag handling (spec §6).

Tags are removed at the token level: single pieces such as `<en-US>` and, for locales without one,
the piece sequence the tokenizer spells the tag with (e.g. `<mt-MT>` → `▁<`, `mt`, `-`, `MT`, `>`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import sentencepiece as spm

TAG_PIECE = re.compile(r"^▁?<([a-z]{2,3}-[A-Za-z]{2,3})>$")
WORD_START = "▁"


@dataclass(frozen=True)
class TagSpan:
    start: int  # index into the token list
    length: int
    locale: str


class Tokenizer:
    def __init__(self, model_proto: bytes, locales: Iterable[str] = ()):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self.tag_of_id = {i: m.group(1) for i, p in enumerate(self.pieces) if (m := TAG_PIECE.match(p))}
        single = set(self.tag_of_id.values())
        self.tag_sequences: dict[tuple[int, ...], str] = {}
        for loc in locales:
            if "-" in loc and loc not in single:
                seq = tuple(self.sp.encode(f"<{loc}>"))
                if len(seq) > 1:
                    self.tag_sequences[seq] = loc
        self.max_tag_len = max((len(s) for s in self.tag_sequences), default=1)
        self._sequences_from: dict[int, list[tuple[tuple[int, ...], str]]] = {}  # first id -> (seq, locale), in order
        for seq, loc in self.tag_sequences.items():
            self._sequences_from.setdefault(seq[0], []).append((seq, loc))

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))

    def find_tags(self, ids: list[int]) -> list[TagSpan]:
        """Every language tag in a token list, single-piece or multi-piece, left to right."""
        spans, i = [], 0
        while i < len(ids):
            if ids[i] in self.tag_of_id:
                spans.append(TagSpan(i, 1, self.tag_of_id[ids[i]]))
                i += 1
                continue
            for seq, loc in self._sequences_from.get(ids[i], ()):  # only those that start with ids[i]
                if tuple(ids[i:i + len(seq)]) == seq:
                    spans.append(TagSpan(i, len(seq), loc))
                    i += len(seq)
                    break
            else:
                i += 1
        return spans

    def pending_tag_prefix(self, ids: list[int]) -> int:
        """How many trailing tokens could still become a multi-piece tag (hold them back in partials)."""
        for n in range(min(self.max_tag_len - 1, len(ids)), 0, -1):
            tail = tuple(ids[-n:])
            if any(seq[:n] == tail for seq in self.tag_sequences):
                return n
        return 0
