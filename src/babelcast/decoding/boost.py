"""Phrase boosting for RNNT decoding, greedy and beam search (shallow fusion with a context graph), per stream,
batched on the device.

A stream's phrases compile into a token prefix tree of the model's own SentencePiece spellings, with
Aho–Corasick failure links. Each node has the score accumulated along its path (weight per token; a bare
"▁" earns nothing). A token that extends a partial match moves to the next node; a token that breaks one
falls back along the failure links (a new match may start at once, earning its whole path again) or to
the root; blank leaves the state unchanged. What a partial match has earned is at risk until the phrase
is complete (then it is kept): the token that breaks the match gives it back.

In greedy decoding a step only compares the classes of one frame, and staying on blank does not keep
the score at risk either (the match is still open), so that score is subtracted from every class alike
and drops out of the argmax: the bonus of a token is what its arc earns beyond what is kept (the next
node's score minus the kept score; a growing pull to finish a phrase once started); every other class,
blank included, gets 0. (Giving the risk back on non-blank classes only biases the search towards blank:
on the demo model's rare-word set it lost recall and words of phrase-free utterances; bench/boost.py.)

On the device a batch's tries are one arc table: each node's outgoing arcs (token, next node, gain; arcs
through failure links included, the root's excepted) stored contiguously (CSR: memory grows with the arcs,
not with nodes × the widest node); the root's arcs are a dense row per stream. The bonus of B rows is
two gathers and one scatter over each row's current arcs, kept as indices [B, K] between steps.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ..checkpoint.tokenizer import WORD_START, Tokenizer
from ..config import DEFAULT_WEIGHT, GREEDY_WEIGHT

MAX_WEIGHT = 20.0
MAX_PHRASES = 1000
MAX_PHRASE_CHARS = 100


@dataclass(frozen=True)
class Phrase:
    """One phrase to favour and its bonus per token (log-probability)."""

    text: str
    weight: float | None = None  # None: the search's default (DEFAULT_WEIGHT for a beam, GREEDY_WEIGHT greedy)


def parse_phrase(spec: "str | Phrase") -> Phrase:
    """'PHRASE[:WEIGHT]' → Phrase (a phrase holds no ':'); ValueError naming an empty phrase or a bad weight."""
    if isinstance(spec, Phrase):
        return _checked(spec.text, spec.weight, repr(spec.text))
    if not isinstance(spec, str):
        raise ValueError(f"a boost phrase must be a string PHRASE[:WEIGHT], got {spec!r}")
    text, sep, weight = spec.rpartition(":")
    if not sep:
        return _checked(spec, None, repr(spec))
    try:
        value = float(weight)
    except ValueError:
        raise ValueError(f"bad weight {weight!r} in boost phrase {spec!r}: use PHRASE:WEIGHT with a number "
                         f"above 0 and at most {MAX_WEIGHT:g}") from None
    return _checked(text, value, repr(spec))


def _checked(text: str, weight: float | None, shown: str) -> Phrase:
    """The phrase stripped, with its weight checked against the limits."""
    text = " ".join(text.split())
    if not text:
        raise ValueError(f"empty boost phrase {shown}")
    if len(text) > MAX_PHRASE_CHARS:
        raise ValueError(f"boost phrase {shown} is longer than {MAX_PHRASE_CHARS} characters")
    if weight is None:
        return Phrase(text)
    if not (math.isfinite(weight) and 0 < weight <= MAX_WEIGHT):
        raise ValueError(f"bad weight {weight:g} in boost phrase {shown}: it must be above 0 and at most "
                         f"{MAX_WEIGHT:g}")
    return Phrase(text, float(weight))


def parse_phrases(specs: "Iterable[str | Phrase] | None") -> tuple[Phrase, ...]:
    """A boost list (strings PHRASE[:WEIGHT] or Phrases) → Phrases; ValueError for a bad one or too many."""
    if isinstance(specs, str):
        raise ValueError("boost takes a list of phrases, not one string")
    phrases = tuple(parse_phrase(s) for s in specs or ())
    if len(phrases) > MAX_PHRASES:
        raise ValueError(f"{len(phrases)} boost phrases; at most {MAX_PHRASES} are allowed per stream")
    return phrases


def spellings(tok: Tokenizer, text: str) -> set[tuple[int, ...]]:
    """The token sequences of a phrase that matter: as given, lower case and Capitalized, each word-initial
    (SentencePiece's ▁ start); spellings with an unknown piece are dropped. (Other segmentations than the
    encoding, SentencePiece's n-best, added no recall on the demo set and cost words elsewhere.)"""
    unk = tok.sp.unk_id()
    seqs = {tuple(tok.encode(v)) for v in (text, text.lower(), text.capitalize())}
    return {s for s in seqs if s and unk not in s}


@dataclass(frozen=True, eq=False)  # hashed by identity: a compiled list is packed once per batch make-up
class BoostTrie:
    """One stream's phrases as a prefix tree; node 0 is the root. Shapes: N nodes, A arcs, C classes."""

    first: Tensor  # [N + 1] int64 node n's arcs are first[n]:first[n + 1]
    arc_token: Tensor  # [A] int64 arc labels
    arc_next: Tensor  # [A] int64 node an arc leads to
    arc_gain: Tensor  # [A] fp32 bonus of the arc's token: score earned beyond what is kept
    root_gain: Tensor  # [C] fp32 bonus of a token from the root (0: no phrase starts with it; blank 0)
    root_next: Tensor  # [C] int64 node a token leads to from the root
    risk: Tensor  # [N] fp32 score an open match holds at each node (given back if it breaks; beam search)


def compile_boost(tok: Tokenizer, specs: "Iterable[str | Phrase] | None", blank_id: int,
                  beam: bool = True) -> BoostTrie | None:
    """A stream's boost list → its trie for a beam search or greedy decoding (the default weight of phrases
    without one differs); None for an empty list: decoding then pays nothing."""
    phrases = parse_phrases(specs)
    default = DEFAULT_WEIGHT if beam else GREEDY_WEIGHT
    if not phrases:
        return None
    children: list[dict[int, int]] = [{}]
    score, is_end = [0.0], [False]
    bare = tok.sp.piece_to_id(WORD_START)  # "▁" alone starts many words: it earns nothing
    for p in phrases:
        for seq in spellings(tok, p.text):
            weight = default if p.weight is None else p.weight
            _insert(children, score, is_end, seq, [0.0 if t == bare else weight for t in seq])
    fail = _failure_links(children)
    return _tables(children, score, _kept(children, score, is_end), fail, blank_id)


def _insert(children: list[dict[int, int]], score: list[float], is_end: list[bool], seq: tuple[int, ...],
            weights: list[float]) -> None:
    """Add one spelling (a weight per token); a node shared by several phrases keeps the highest
    accumulated score."""
    node = 0
    for t, weight in zip(seq, weights):
        if t not in children[node]:
            children[node][t] = len(children)
            children.append({})
            score.append(-math.inf)
            is_end.append(False)
        nxt = children[node][t]
        score[nxt] = max(score[nxt], score[node] + weight)
        node = nxt
    is_end[node] = True


def _failure_links(children: list[dict[int, int]]) -> list[int]:
    """Aho–Corasick: each node's longest proper suffix that is also a path from the root (breadth first)."""
    fail = [0] * len(children)
    queue = deque(children[0].values())
    while queue:
        node = queue.popleft()
        for t, child in children[node].items():
            f = fail[node]
            while f and t not in children[f]:
                f = fail[f]
            fail[child] = children[f].get(t, 0)
            queue.append(child)
    return fail


def _parents(children: list[dict[int, int]]) -> list[int]:
    """Each node's parent (the root is its own); children always come after their parent."""
    parent = [0] * len(children)
    for node, arcs in enumerate(children):
        for child in arcs.values():
            parent[child] = node
    return parent


def _kept(children: list[dict[int, int]], score: list[float], is_end: list[bool]) -> list[float]:
    """Score of the longest complete phrase on each node's path (0 if none): earned for good."""
    kept, parent = [0.0] * len(children), _parents(children)
    for node in range(1, len(children)):
        kept[node] = score[node] if is_end[node] else kept[parent[node]]
    return kept


def _arcs(children: list[dict[int, int]], score: list[float], kept: list[float], fail: list[int],
          node: int) -> dict[int, tuple[int, float]]:
    """token → (next node, gain) from a non-root node: its children, then its failure chain's (root's excepted)."""
    arcs = {t: (c, score[c] - kept[node]) for t, c in children[node].items()}
    f = fail[node]
    while f:
        for t, c in children[f].items():
            arcs.setdefault(t, (c, score[c]))  # a new match restarts: its whole path is earned
        f = fail[f]
    return arcs


def _tables(children: list[dict[int, int]], score: list[float], kept: list[float], fail: list[int],
            blank_id: int) -> BoostTrie:
    """The arc table of one trie (host side, built once per list)."""
    arcs = [{}] + [_arcs(children, score, kept, fail, node) for node in range(1, len(children))]
    first = torch.tensor([0] + list(accumulate(len(a) for a in arcs)))
    flat = [(t, c, g) for a in arcs for t, (c, g) in a.items()]
    token = torch.tensor([t for t, _, _ in flat], dtype=torch.long)
    nxt = torch.tensor([c for _, c, _ in flat], dtype=torch.long)
    gain = torch.tensor([g for _, _, g in flat], dtype=torch.float32)
    root_gain, root_next = torch.zeros(blank_id + 1), torch.zeros(blank_id + 1, dtype=torch.long)
    for t, c in children[0].items():
        root_gain[t], root_next[t] = score[c], c
    risk = torch.tensor([s - k for s, k in zip(score, kept)], dtype=torch.float32)
    return BoostTrie(first, token, nxt, gain, root_gain, root_next, risk)


@dataclass(frozen=True)
class _Packed:
    """The tries of a batch's rows in one arc table on the device (node and arc ids offset per row), with
    one padding arc at the end (blank, gain 0) for rows with fewer arcs than the widest node."""

    offset: Tensor  # [B] int64 first node of each row's trie
    first: Tensor  # [M + 1] int64, M nodes of all rows
    arc_token: Tensor  # [A + 1] int64, A arcs of all rows, then the padding arc
    arc_next: Tensor  # [A + 1] int64, offset
    arc_gain: Tensor  # [A + 1] fp32
    root_gain: Tensor  # [B, C] fp32
    root_next: Tensor  # [B, C] int64, offset
    risk: Tensor  # [M] fp32
    slots: Tensor  # [K] int64 0..K-1, K the most arcs of a node (at least 1)


@lru_cache(maxsize=16)
def _pack(tries: tuple[BoostTrie, ...], device: torch.device) -> _Packed:
    """Concatenate rows' tries (one copy to the device per batch make-up; cached)."""
    nodes = torch.tensor([t.first.shape[0] - 1 for t in tries])
    arcs = torch.tensor([t.arc_token.shape[0] for t in tries])
    offset, arc_offset = torch.cumsum(nodes, 0) - nodes, torch.cumsum(arcs, 0) - arcs  # [B]
    n_arcs, blank = int(arcs.sum()), tries[0].root_gain.shape[0] - 1
    first = torch.cat([t.first[:-1] + o for t, o in zip(tries, arc_offset)] + [torch.tensor([n_arcs])])
    token = torch.cat([t.arc_token for t in tries] + [torch.tensor([blank])])
    nxt = torch.cat([t.arc_next + o for t, o in zip(tries, offset)] + [torch.tensor([0])])
    gain = torch.cat([t.arc_gain for t in tries] + [torch.tensor([0.0])])
    width = max(1, max(int((t.first[1:] - t.first[:-1]).max()) for t in tries))
    parts = (offset, first, token, nxt, gain, torch.stack([t.root_gain for t in tries]),
             torch.stack([t.root_next + o for t, o in zip(tries, offset)]), torch.cat([t.risk for t in tries]),
             torch.arange(width))
    return _Packed(*(p.to(device) for p in parts))


class Booster:
    """The boosting state of one decode call's rows: their packed tries and current nodes [B]; greedy_rnnt
    asks for the bonus before each argmax and advances the rows that emitted. Made only for a batch where
    some row boosts: a batch without boosting passes None and runs no extra op."""

    def __init__(self, tries: Sequence[BoostTrie | None], nodes: Tensor, blank_id: int):
        """tries per row (None: no boosting), nodes [B] int64 each row's node in its own trie."""
        empty = _empty_trie(blank_id)
        self.t = _pack(tuple(t or empty for t in tries), nodes.device)
        self.node = self.t.offset + nodes  # [B] int64 node in the packed table
        self.arcs = self._arcs_of(self.node)  # [B, K] int64

    def _arcs_of(self, node: Tensor) -> Tensor:
        """[B, K] the arc ids of each row's node, the padding arc where it has fewer than K."""
        idx = self.t.first[node][:, None] + self.t.slots  # [B, K]
        return torch.where(idx < self.t.first[node + 1][:, None], idx, self.t.arc_token.shape[0] - 1)

    def bonus(self) -> Tensor:
        """[B, C] fp32 added to the joint's log-probabilities: the gain of each token's arc (a token without
        an arc of its own restarts at the root; the padding arc writes blank's 0)."""
        return self.t.root_gain.scatter(1, self.t.arc_token[self.arcs], self.t.arc_gain[self.arcs])

    def advance(self, label: Tensor, emit: Tensor) -> None:
        """Rows that emitted label [B] move along its arc (or restart from the root); the others stay."""
        hit = self.t.arc_token[self.arcs] == label[:, None]  # [B, K] at most one arc per token
        via_arc = self.t.arc_next[self.arcs].gather(1, hit.int().argmax(1, keepdim=True))[:, 0]
        from_root = self.t.root_next.gather(1, label[:, None])[:, 0]
        self.node = torch.where(emit, torch.where(hit.any(1), via_arc, from_root), self.node)
        self.arcs = self._arcs_of(self.node)

    def set_nodes(self, nodes: Tensor) -> None:
        """Move the rows to these nodes [B] of their own tries (a beam reorders its hypotheses)."""
        self.node = self.t.offset + nodes
        self.arcs = self._arcs_of(self.node)

    def risk(self) -> Tensor:
        """[B] fp32 the score each row's open match holds (given back if it breaks or never ends)."""
        return self.t.risk[self.node]

    def beam_bonus(self) -> Tensor:
        """[B, C-1] the change of each row's boost score per non-blank label, for a beam's scores: what the
        label's arc earns less what the open match gives back (a continuation nets its own token's weight, a
        break loses the match); blank changes nothing (the match stays open)."""
        return self.bonus()[:, :-1] - self.risk()[:, None]

    def nodes(self) -> Tensor:
        """[B] int64 each row's node in its own trie (the state to carry to the next call)."""
        return self.node - self.t.offset


@lru_cache(maxsize=8)
def _empty_trie(blank_id: int) -> BoostTrie:
    """The trie of a row without boosting in a batch that boosts: every bonus is exactly 0."""
    return _tables([{}], [0.0], [0.0], [0], blank_id)

