"""Batched RNNT beam search with phrase boosting: K hypotheses per row, frame-synchronous, at most
max_symbols labels per frame (the same frame rule as greedy), on the device.

Why: greedy decoding cannot revisit a label, so a boosted phrase whose first pieces the model does not
prefer is lost (on the demo model's rare-word set greedy boosting recovered 8 of 31 missed phrases). A
beam keeps the phrase's spelling as one of K hypotheses while the following frames decide; the boost
is scored as shallow fusion should be: a hypothesis earns each token of a partial match and gives it
back when the match breaks (or the stream ends unfinished), so an unspoken phrase costs a hypothesis
its bonus rather than a word of the transcript.

Per frame t, the frame's start set of K hypotheses is expanded up to max_symbols times: each expansion
ends hypotheses on blank (they go on to frame t+1) and extends the best K by one label (the K best of
K × V label extensions, scored log-prob + boost). A label extension worse than the K-th best ended
hypothesis is dropped; when none is left in any row the frame ends early (the one host sync per
expansion, as greedy has one per symbol step). The ended hypotheses with the same labels are merged
(their probabilities added) and the best K start the next frame.

Labels are not emitted here: each call returns a trace (parents and labels per expansion, origins per
frame) that `BeamHistory` on the host turns into hypotheses, committing the labels all live hypotheses
share; the best hypothesis's other labels are tentative (partials show them; a final takes them and
`BeamState.collapse` keeps only that hypothesis).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ..config import BEAM_PRUNE
from ..model.transducer import Joint, Predictor, PredictorState
from .boost import Booster, BoostTrie

_HASH_MOD = 2_147_483_647  # labels hash modulo a prime below 2**31: key * 31 + label stays in int64
_NEG = float("-inf")


@dataclass
class BeamState:
    """K hypotheses of B rows; row b's are b*K … b*K+K-1 in the flat predictor state."""

    pred: PredictorState  # [.., B*K, H]
    score: Tensor  # [B, K] fp32 log-prob + boost of each hypothesis; -inf: an empty place
    node: Tensor  # [B, K] int64 each hypothesis's node in its row's phrase trie (0: root)
    key: Tensor  # [B, K] int64 hash of the hypothesis's labels (merging equal label sequences)

    @classmethod
    def start(cls, predictor: Predictor, batch: int, width: int, device: torch.device | str = "cpu") -> "BeamState":
        """One empty hypothesis per row (score 0), the other places empty."""
        score = torch.full((batch, width), _NEG, device=device)
        score[:, 0] = 0.0
        zeros = torch.zeros((batch, width), dtype=torch.long, device=device)
        return cls(predictor.init_state(batch * width, device, torch.float32), score, zeros, zeros.clone())

    @property
    def width(self) -> int:
        return self.score.shape[1]

    def index(self, rows: Tensor) -> "BeamState":
        """These rows' hypotheses."""
        return BeamState(self.pred.index(_flat(rows, self.width)), self.score[rows], self.node[rows], self.key[rows])

    def put(self, rows: Tensor, new: "BeamState") -> "BeamState":
        """This state with `rows` replaced by new's rows."""
        flat = _flat(rows, self.width)
        p = self.pred
        pred = PredictorState(p.out.index_copy(0, flat, new.pred.out), p.h.index_copy(1, flat, new.pred.h),
                              p.c.index_copy(1, flat, new.pred.c))
        return BeamState(pred, self.score.index_copy(0, rows, new.score), self.node.index_copy(0, rows, new.node),
                         self.key.index_copy(0, rows, new.key))


    def write_(self, rows: Tensor, new: "BeamState") -> None:
        """Write new's rows into `rows` in place (the cache pool's scatter)."""
        flat = _flat(rows, self.width)
        self.pred.out.index_copy_(0, flat, new.pred.out)
        self.pred.h.index_copy_(1, flat, new.pred.h)
        self.pred.c.index_copy_(1, flat, new.pred.c)
        for mine, theirs in ((self.score, new.score), (self.node, new.node), (self.key, new.key)):
            mine.index_copy_(0, rows, theirs)


def _flat(rows: Tensor, width: int) -> Tensor:
    """Flat hypothesis indices [R*K] of rows [R]."""
    return (rows[:, None] * width + torch.arange(width, device=rows.device)).reshape(-1)


def collapse(state: BeamState, best: Tensor) -> BeamState:
    """Keep only hypothesis best[b] of each row, as the row's one hypothesis with score 0 at the trie's
    root (after a final: what it took is settled; a match it left open is given up)."""
    b, k = state.score.shape
    rows = torch.arange(b, device=best.device)
    src = rows * k + best  # [B]
    flat = src.repeat_interleave(k)  # every place copies the best (only place 0 counts)
    pred = state.pred.index(flat)
    score = torch.full_like(state.score, _NEG)
    score[:, 0] = 0.0
    return BeamState(pred, score, torch.zeros_like(state.node), state.key.gather(1, best[:, None]).expand(b, k).clone())


@dataclass(frozen=True)
class BeamTrace:
    """What one call did, for the host to rebuild hypotheses (copied once per call, like Emissions).
    Shapes: T frames, S = max_symbols expansions, B rows, K hypotheses."""

    parent: Tensor  # [T, S, B, K] int64 the hypothesis each expansion extended (in the set before it)
    label: Tensor  # [T, S, B, K] int64
    prob: Tensor  # [T, S, B, K] fp32 the model's probability of the label
    origin_set: Tensor  # [T, B, K] int64 the set a frame's new hypothesis comes from (0: frame start, s: expansion s)
    origin: Tensor  # [T, B, K] int64 its place in that set
    live: Tensor  # [B, K] bool hypotheses alive after the call
    best: Tensor  # [B] int64 the best hypothesis after the call (unfinished matches given back)
    valid: Tensor  # [B] int64 frames of each row in the call


@torch.no_grad()
def beam_rnnt(predictor: Predictor, joint: Joint, frames: Tensor, valid: Tensor, state: BeamState,
              max_symbols: int, tries: "list[BoostTrie | None] | None" = None) -> tuple[BeamTrace, BeamState]:
    """frames [B, T, D] (prompted encoder output), valid [B] frames per row, state carried across calls;
    tries: each row's phrases (None: not boosted)."""
    b, t_max, _ = frames.shape
    k, blank, dev = state.width, predictor.cfg.blank_id, frames.device
    enc_proj = joint.enc(frames)  # [B, T, J]
    booster = _booster(tries, state.node, k, blank)
    places = torch.arange(k, device=dev).expand(b, k)
    parents = torch.zeros((t_max, max_symbols, b, k), dtype=torch.long, device=dev)
    labels, probs = torch.full_like(parents, blank), torch.zeros(parents.shape, device=dev)
    origin_set = torch.zeros((t_max, b, k), dtype=torch.long, device=dev)
    origin = places.expand(t_max, b, k).clone()  # [T, B, K] a frame without labels keeps every place
    pred_proj = joint.pred(state.pred.out)  # [B*K, J]
    enc_k = enc_proj.repeat_interleave(k, 0)  # [B*K, T, J] each row's frames for its K hypotheses
    for t in range(t_max):
        active = valid > t  # [B]
        sets, pred_proj = _frame(predictor, joint, enc_k[:, t], state, pred_proj, booster, max_symbols,
                                 parents[t], labels[t], probs[t])
        if len(sets) == 1:  # no label on this frame: each hypothesis ends on blank in its place (keys stay unique)
            state = BeamState(state.pred, torch.where(active[:, None], sets[0].ended, state.score), state.node,
                              state.key)
            continue
        new, src_set, src, new_proj = _select(sets, k)
        state = _where_rows(active, new, state)
        pred_proj = torch.where(active.repeat_interleave(k)[:, None], new_proj, pred_proj)
        origin_set[t] = torch.where(active[:, None], src_set, 0)  # a row past its frames keeps its set
        origin[t] = torch.where(active[:, None], src, places)
        if booster is not None:  # the booster follows the hypotheses' nodes (_frame's invariant)
            booster.set_nodes(state.node.reshape(-1))
    final = state.score if booster is None else state.score - booster.risk().view(b, k)  # open matches given back
    best = final.argmax(1)
    trace = BeamTrace(parents, labels, probs, origin_set, origin, torch.isfinite(state.score), best, valid)
    return trace, state


class _Set(NamedTuple):
    """Hypotheses at one point of a frame: ended ones carry the blank's log-prob in `ended`."""

    score: Tensor  # [B, K] score before ending on blank
    ended: Tensor  # [B, K] score after ending on blank (or forced to the next frame)
    node: Tensor  # [B, K]
    key: Tensor  # [B, K]
    pred: PredictorState  # [.., B*K, H]
    proj: Tensor  # [B*K, J]


def _frame(predictor: Predictor, joint: Joint, enc_k: Tensor, state: BeamState, pred_proj: Tensor,
           booster: Booster | None, max_symbols: int, parents: Tensor, labels: Tensor, probs: Tensor
           ) -> tuple[list[_Set], Tensor]:
    """Expand one frame's start set up to max_symbols times; every set with its blank-ended scores (one set:
    no label was kept). enc_k [B*K, J]; parents/labels/probs [S, B, K] are filled with what each expansion
    did. The booster holds the current set's nodes on entry and on return."""
    b, k = state.score.shape
    blank = predictor.cfg.blank_id
    cur = _Set(state.score, state.score, state.node, state.key, state.pred, pred_proj)
    sets: list[_Set] = []
    for s in range(max_symbols + 1):
        if s == max_symbols:  # max_symbols labels on this frame: the rest go on to the next one unscored
            sets.append(cur)
            break
        logp = torch.log_softmax(joint.logits(enc_k, cur.proj).float(), dim=-1).view(b, k, -1)  # [B, K, C]
        sets.append(cur._replace(ended=cur.score + logp[..., blank]))
        ext = cur.score[..., None] + logp[..., :blank]  # [B, K, V]
        if booster is not None:
            ext = ext + booster.beam_bonus().view(b, k, -1)
        top, idx = ext.reshape(b, -1).topk(k, dim=1)  # [B, K]
        ended = torch.cat([x.ended for x in sets], dim=1)  # [B, K*(s+1)]
        best_k = ended.topk(k, dim=1).values  # [B, K]
        # kept: better than the K-th best ended hypothesis, and within the pruning margin of the best one
        # (a label extension has still to end on blank; far behind, it only costs expansions)
        keep = torch.isfinite(top) & (top > best_k[:, -1:]) & (top > best_k[:, :1] - BEAM_PRUNE)
        if not bool(keep.any()):  # the one host sync per expansion
            break
        parent, label = idx // blank, idx % blank  # [B, K]
        flat = (torch.arange(b, device=idx.device)[:, None] * k + parent).reshape(-1)
        pred = predictor.step(label.reshape(-1), cur.pred.index(flat))
        node = cur.node.gather(1, parent)
        if booster is not None:
            booster.set_nodes(node.reshape(-1))
            booster.advance(label.reshape(-1), torch.ones_like(label.reshape(-1), dtype=torch.bool))
            node = booster.nodes().view(b, k)
        key = (cur.key.gather(1, parent) * 31 + label + 1) % _HASH_MOD
        parents[s], labels[s] = parent, label
        probs[s] = logp.reshape(b, -1).gather(1, parent * logp.shape[-1] + label).exp()
        score = torch.where(keep, top, _NEG)
        cur = _Set(score, score, node, key, pred, joint.pred(pred.out))
    return sets, cur.proj


def _select(sets: list[_Set], k: int) -> tuple[BeamState, Tensor, Tensor, Tensor]:
    """The best K ended hypotheses of a frame, equal label sequences merged (probabilities added):
    the new state, each one's set and place, and its prediction projection."""
    b = sets[0].score.shape[0]
    score = torch.cat([x.ended for x in sets], dim=1)  # [B, M], M = K * len(sets)
    key = torch.cat([x.key for x in sets], dim=1)
    score = _merge(score, key)
    top, idx = score.topk(k, dim=1)  # [B, K]
    src_set, src = idx // k, idx % k
    node = torch.cat([x.node for x in sets], dim=1).gather(1, idx)
    flat_all = torch.arange(b, device=idx.device)[:, None] * k  # [B, 1]
    pick = (src_set * b * k + flat_all + src).reshape(-1)  # [B*K] into the sets' stacked flat rows
    out = torch.cat([x.pred.out for x in sets])[pick]
    h = torch.cat([x.pred.h for x in sets], dim=1)[:, pick]
    c = torch.cat([x.pred.c for x in sets], dim=1)[:, pick]
    proj = torch.cat([x.proj for x in sets])[pick]
    return BeamState(PredictorState(out, h, c), top, node, key.gather(1, idx)), src_set, src, proj


def _merge(score: Tensor, key: Tensor) -> Tensor:
    """score [B, M] with each group of equal keys summed (log-add) into its best member, the others -inf."""
    same = (key[:, :, None] == key[:, None, :]) & torch.isfinite(score)[:, None, :]  # [B, M, M]
    total = torch.logsumexp(torch.where(same, score[:, None, :], _NEG), dim=2)  # [B, M]
    m = score.shape[1]
    order = torch.arange(m, device=score.device)
    # the group's representative: its best member (first on ties)
    better = same & ((score[:, None, :] > score[:, :, None]) |
                     ((score[:, None, :] == score[:, :, None]) & (order[None, None, :] < order[None, :, None])))
    lead = ~better.any(dim=2) & torch.isfinite(score)
    return torch.where(lead, total, _NEG)


def _where_rows(mask: Tensor, new: BeamState, old: BeamState) -> BeamState:
    """Rows where mask [B] is set take the new state."""
    k = new.width
    m, mf = mask[:, None], mask.repeat_interleave(k)[:, None]
    pred = PredictorState(torch.where(mf, new.pred.out, old.pred.out), torch.where(mf[None], new.pred.h, old.pred.h),
                          torch.where(mf[None], new.pred.c, old.pred.c))
    return BeamState(pred, torch.where(m, new.score, old.score), torch.where(m, new.node, old.node),
                     torch.where(m, new.key, old.key))


def _booster(tries: "list[BoostTrie | None] | None", node: Tensor, k: int, blank: int) -> Booster | None:
    """One Booster over all B*K hypotheses (each row's trie repeated K times); None without boosting."""
    if not tries or all(t is None for t in tries):
        return None
    return Booster([t for t in tries for _ in range(k)], node.reshape(-1), blank)


class RowTrace(NamedTuple):
    """One row's part of a BeamTrace on the host (lists indexed [t][s][k], [t][k], [k])."""

    parent: list
    label: list
    prob: list
    origin_set: list
    origin: list
    live: list
    best: int
    frame_offset: int


def row_traces(em_beam: "tuple[list[int], BeamTrace] | None", frame_offset: list[int]) -> dict[int, RowTrace]:
    """Batch row → its RowTrace (one device→host copy of the trace per call)."""
    if em_beam is None:
        return {}
    rows, tr = em_beam
    parent, label, prob, oset, orig = (x.cpu() for x in (tr.parent, tr.label, tr.prob, tr.origin_set, tr.origin))
    live, best, valid = tr.live.cpu(), tr.best.cpu().tolist(), tr.valid.cpu().tolist()
    out = {}
    for j, row in enumerate(rows):
        n = valid[j]
        out[row] = RowTrace(parent[:n, :, j].tolist(), label[:n, :, j].tolist(), prob[:n, :, j].tolist(),
                            oset[:n, j].tolist(), orig[:n, j].tolist(), live[j].tolist(), best[j], frame_offset[row])
    return out


class _Tok(NamedTuple):
    """A hypothesis's labels as a linked list from the segment start (hypotheses share their prefixes)."""

    prev: "_Tok | None"
    label: int
    frame: int
    prob: float
    depth: int


Tokens = tuple[list[int], list[int], list[float]]  # labels, frames, probs


class BeamHistory:
    """One stream's hypotheses on the host, rebuilt from each call's trace: the labels every live
    hypothesis shares are committed (final from then on); the best one's later labels are tentative."""

    def __init__(self, width: int):
        self.width = width
        self.reset()

    def reset(self) -> None:
        """A new segment: one empty hypothesis (the device state is collapsed to match)."""
        self.hyps: list[_Tok | None] = [None] * self.width
        self.committed = 0  # depth of the labels already committed
        self.best = 0

    def update(self, tr: RowTrace) -> tuple[Tokens, Tokens]:
        """Apply one call's trace: (labels newly committed, the best hypothesis's tentative labels)."""
        for t, (oset, orig) in enumerate(zip(tr.origin_set, tr.origin)):
            sets = [self.hyps]
            for s in range(max(oset)):  # only the expansions a chosen hypothesis came from
                prev = sets[-1]
                sets.append([_Tok(prev[p], lab, t + tr.frame_offset, pr, _depth(prev[p]) + 1)
                             for p, lab, pr in zip(tr.parent[t][s], tr.label[t][s], tr.prob[t][s])])
            self.hyps = [sets[a][b] for a, b in zip(oset, orig)]
        self.best = tr.best
        live = [h for h, ok in zip(self.hyps, tr.live) if ok]
        common = _common(live)
        done = _labels(common, self.committed)
        self.committed = _depth(common)
        return done, _labels(self.hyps[self.best], self.committed)

    def take_best(self) -> Tokens:
        """The best hypothesis's uncommitted labels, committed (a final); then reset()."""
        return _labels(self.hyps[self.best], self.committed)


def _depth(tok: "_Tok | None") -> int:
    return 0 if tok is None else tok.depth


def _common(hyps: "list[_Tok | None]") -> "_Tok | None":
    """The longest prefix all hypotheses share (their deepest common node)."""
    if not hyps:
        return None
    depth = min(_depth(h) for h in hyps)
    nodes = []
    for h in hyps:
        while _depth(h) > depth:
            h = h.prev
        nodes.append(h)
    while any(n is not nodes[0] for n in nodes):
        nodes = [n.prev for n in nodes]
    return nodes[0]


def _labels(tok: "_Tok | None", after: int) -> Tokens:
    """The labels, frames and probabilities of a hypothesis below depth `after`… its end, in order."""
    out = []
    while tok is not None and tok.depth > after:
        out.append(tok)
        tok = tok.prev
    out.reverse()
    return [t.label for t in out], [t.frame for t in out], [t.prob for t in out]
