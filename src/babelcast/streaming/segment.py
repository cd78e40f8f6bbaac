"""The tokens of a stream's current segment, with partials rendered in time independent of its length.

A partial is `to_transcript` of the segment's tokens less a possibly unfinished language tag. Rendering
all of them at every step made a long stream's steps slower and slower (issue 14: 2.3 → 4.9 s of compute
per 10 s of audio over 78 s), so the tokens before a *cut* are rendered once into a `_Head` and each
partial renders only the tokens after it. A cut is a position where rendering can be split without
changing the result: a kept word-start piece (`▁…`, not part of a tag) that the tag scan lands on, far
enough from the end (2 × the longest tag) that no later token can change how the tags before it are read.
Until the first cut (which needs a run that renders to a text) partials are `to_transcript` itself.
Languages written without spaces have few word starts; their tail is bounded by the segment (endpoints).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..checkpoint.tokenizer import WORD_START, Tokenizer
from ..decoding.result import Transcript, Word
from ..decoding.text import TextOptions, split_tags, to_transcript, words

MIN_TAIL_TOKENS = 48  # look for a new cut once the unrendered tail is this long (amortizes the scan)


@dataclass
class _Head:
    """What the tokens before the cut render to (tags removed unless kept)."""

    ids: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    prob_sum: float = 0.0  # left-to-right sum of the kept tokens' probabilities
    n_probs: int = 0
    text: str = ""  # whitespace-normalized
    words: list[Word] = field(default_factory=list)
    locale: str | None = None  # the last tag's locale


class SegmentTokens:
    """Tokens, frames and probabilities of one segment; partials and finals rendered from them."""

    def __init__(self, tok: Tokenizer, opts: TextOptions):
        self.tok, self.opts = tok, opts
        self.ids: list[int] = []
        self.frames: list[int] = []  # encoder frame of each token, within the utterance
        self.probs: list[float] = []
        self.last_token_frame = -1  # survives a segment end (endpointing counts blanks since it)
        self._cut = 0
        self._head = _Head()
        self._partial: tuple[tuple, Transcript] | None = None  # (tokens it covers, rendering): steps without tokens reuse it
        self.tentative: tuple[list[int], list[int], list[float]] = ([], [], [])  # beam search: the best
        # hypothesis's labels after the committed ones (partials and endpoints read them; a final commits them)

    def add(self, labels: list[int], frames: list[int], probs: list[float]) -> None:
        """Tokens of one step."""
        self.ids += labels
        self.frames += frames
        self.probs += probs
        if labels:
            self.last_token_frame = frames[-1]

    def set_tentative(self, labels: list[int], frames: list[int], probs: list[float]) -> None:
        """The best beam hypothesis's uncommitted labels (replacing the last step's)."""
        self.tentative = (labels, frames, probs)
        if labels:
            self.last_token_frame = frames[-1]

    def clear(self, opts: TextOptions | None = None) -> None:
        """A new segment (tokens go; last_token_frame stays); new text options for a new utterance."""
        self.opts = opts or self.opts
        self.ids, self.frames, self.probs = [], [], []
        self.tentative = ([], [], [])
        self._cut, self._head, self._partial = 0, _Head(), None

    def tail(self) -> list[int]:
        """The tokens after the cut, tentative ones included: the tag scan of the segment is aligned at
        their start."""
        return self.ids[self._cut:] + self.tentative[0]

    def final(self, **meta) -> Transcript:
        """The segment's transcript, rendered in full."""
        return to_transcript(self.tok, self.ids, self.frames, self.probs, self.opts, **meta)

    def cut_final(self, **meta) -> Transcript | None:
        """The tokens before the cut as a final of their own, the rest staying as the segment (bounds a
        segment that never reaches an endpoint); None when there is no cut yet."""
        self._advance()
        cut = self._cut
        if not cut:
            return None
        t = to_transcript(self.tok, self.ids[:cut], self.frames[:cut], self.probs[:cut], self.opts, **meta)
        self.ids, self.frames, self.probs = self.ids[cut:], self.frames[cut:], self.probs[cut:]
        self._cut, self._head, self._partial = 0, _Head(), None
        return t

    def partial(self, **meta) -> Transcript:
        """The transcript so far, less trailing tokens that may still become a language tag;
        equal to `to_transcript` of those tokens, in time independent of the segment's length."""
        key = (len(self.ids), tuple(self.tentative[0]))
        if self._partial is None or self._partial[0] != key:
            self._partial = key, self._render_partial()
        return dataclasses.replace(self._partial[1], **meta)

    def _render_partial(self) -> Transcript:
        self._advance()
        all_ids, all_frames, all_probs = self.ids, self.frames, self.probs
        if self.tentative[0]:  # a copy only for a beam's rows
            all_ids, all_frames, all_probs = (a + b for a, b in zip((all_ids, all_frames, all_probs), self.tentative))
        n = len(all_ids) - self.tok.pending_tag_prefix(all_ids)
        if not self._cut:  # nothing rendered yet: to_transcript's own rules for a text without words apply
            return to_transcript(self.tok, all_ids[:n], all_frames[:n], all_probs[:n], self.opts)
        ids, frames, probs = all_ids[self._cut:n], all_frames[self._cut:n], all_probs[self._cut:n]
        tail = self._render(ids, frames, probs, _Head(prob_sum=self._head.prob_sum))
        h = self._head
        text = f"{h.text} {tail.text}" if h.text and tail.text else h.text or tail.text
        count = h.n_probs + tail.n_probs
        return Transcript(text=text, tokens=h.ids + tail.ids, language=self.opts.language or tail.locale or h.locale,
                          words=h.words + tail.words, token_frames=h.frames + tail.frames,
                          confidence=round(tail.prob_sum / count, 4) if count else 1.0)

    def _advance(self) -> None:
        """Move the cut forward to the last safe position, rendering the tokens it passes once."""
        if len(self.ids) - self._cut < MIN_TAIL_TOKENS:
            return
        limit = len(self.ids) - 2 * self.tok.max_tag_len
        tagged = {i for s in self.tok.find_tags(self.tail()) for i in range(s.start, s.start + s.length)}
        cut = None
        for i in range(limit - self._cut, 0, -1):
            if i not in tagged and self.tok.pieces[self.ids[self._cut + i]].startswith(WORD_START):
                cut = self._cut + i
                break
        if cut is None or not (self._cut or self._has_words(cut)):
            return
        part = self._render(self.ids[self._cut:cut], self.frames[self._cut:cut], self.probs[self._cut:cut],
                            _Head(prob_sum=self._head.prob_sum))
        h = self._head
        h.ids += part.ids
        h.frames += part.frames
        h.prob_sum, h.n_probs = part.prob_sum, h.n_probs + part.n_probs
        h.text = f"{h.text} {part.text}" if h.text and part.text else h.text or part.text
        h.words += part.words
        h.locale = part.locale or h.locale
        self._cut = cut

    def _has_words(self, end: int) -> bool:
        """Whether the tokens before `end` render to a text, by to_transcript's rule for finals (has_words:
        punctuation alone, such as a lone '"', is no text); then the rest cannot empty it."""
        return bool(to_transcript(self.tok, self.ids[:end], self.frames[:end], self.probs[:end], self.opts).text)

    def _render(self, ids: list[int], frames: list[int], probs: list[float], start: _Head) -> _Head:
        """Render a run of tokens that starts at a cut (tags as to_transcript removes them)."""
        keep, locale = split_tags(self.tok, ids)
        if not self.opts.keep_lang_tags:
            ids, frames, probs = [ids[i] for i in keep], [frames[i] for i in keep], [probs[i] for i in keep]
        return dataclasses.replace(
            start, ids=ids, frames=frames, prob_sum=sum(probs, start.prob_sum), n_probs=len(probs),
            text=" ".join(self.tok.decode(ids).split()), locale=locale,
            words=words(self.tok, ids, frames, probs, self.opts.frame_s, self.opts.offset_s))
