"""Token agreement of the engine's bf16 and int8 runtimes with fp32, on the NeMo parity fixtures.

    python bench/precision_drift.py ~/.cache/babelcast/parity/<hash>/ [/tmp/n35.nemo ...]

For every checkpoint in the folder, every trained latency and the languages it knows, each clip is
streamed through an Engine per precision; the share of clips whose tokens equal fp32's and the
token-level edit rate against fp32 are printed (a random-weight model's logits are less decisive
than a trained model's, so this is a pessimistic bound).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import babelcast
from babelcast.model.precision import runtime_model
from babelcast.streaming.engine import EngineConfig


def edits(a: list[int], b: list[int]) -> int:
    """Levenshtein distance between token lists."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def stream_all(rec, precision: str, clips, language, latency: int) -> list[list[int]]:
    engine = rec.engine(EngineConfig(max_sessions=len(clips), precision=precision, endpoint_ms=0,
                                     max_lag_ms=float("inf")))  # whole clips at once, not real time
    sids = []
    for clip in clips:
        sid = engine.open(rec.stream_options(language, latency, keep_lang_tags=True))
        engine.feed(sid, clip)
        engine.finish(sid, close=True)
        sids.append(sid)
    tokens = {sid: [] for sid in sids}
    while engine.n_sessions:
        for e in engine.step():
            if e.kind == "final":
                tokens[e.session_id] += e.transcript.tokens
    return [tokens[s] for s in sids]


def main(folder: str) -> None:
    ref = torch.load(Path(folder) / "reference.pt", weights_only=False)
    print("| model | precision | cases | identical | token edit rate vs fp32 |\n|---|---|---|---|---|")
    for name, entry in ref["models"].items():
        rec = babelcast.load_model(Path(folder) / f"{name}.nemo")
        clips = [c.numpy() for c in entry["clips"]]
        langs = ["en-US", "de-DE", "auto"] if rec.cfg.prompt else ["auto"]
        stats = {p: [0, 0, 0, 0] for p in ("bf16", "int8")}  # cases, identical, edits, tokens
        for latency in rec.latencies_ms:
            for lang in langs:
                base = stream_all(rec, "fp32", clips, lang, latency)
                for p in stats:
                    got = stream_all(rec, p, clips, lang, latency)
                    for a, b in zip(base, got):
                        s = stats[p]
                        s[0] += 1
                        s[1] += a == b
                        s[2] += edits(a, b)
                        s[3] += max(1, len(a))
        for p, (n, same, e, t) in stats.items():
            print(f"| {name} | {p} | {n} | {same} | {100 * e / t:.1f}% |")


@torch.no_grad()
def encoder_error(path: Path) -> str:
    """Relative error ‖x − x_fp32‖ / ‖x_fp32‖ of encoder frames on 400 random mel frames."""
    rec = babelcast.load_model(path)
    torch.manual_seed(0)
    mel = torch.randn(1, rec.cfg.encoder.feat_in, 400)
    lengths = torch.tensor([400])
    left, right = rec.cfg.encoder.att_contexts[0]
    ref, _ = rec.model.encoder(mel, lengths, left, right)
    errors = []
    for precision in ("bf16", "int8"):
        out, _ = runtime_model(rec.model, precision).encoder(mel, lengths, left, right)
        errors.append(f"{((out.float() - ref).norm() / ref.norm()).item():.4f}")
    return f"| {path.name} | " + " | ".join(errors) + " |"


if __name__ == "__main__":
    main(sys.argv[1])
    print("\n| checkpoint | encoder rel. error bf16 | int8 |\n|---|---|---|")
    for nemo in sorted(Path(sys.argv[1]).glob("*.nemo")) + [Path(p) for p in sys.argv[2:]]:
        print(encoder_error(nemo))
