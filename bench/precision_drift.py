"""Token agreement (and, on a trained model, WER) of the engine's bf16 and int8 runtimes with fp32.

    python bench/precision_drift.py ~/.cache/babelcast/parity/<hash>/ [/tmp/n35.nemo ...]
    python bench/precision_drift.py --manifest data/demo/test/manifest.jsonl \
           [--model src/babelcast/assets/babelcast-demo.nemo] [--latencies 80,1120] [--out bench/results/precision_drift_demo]

Parity mode: for every checkpoint in the folder, every trained latency and the languages it knows,
each clip is streamed through an Engine per precision; the share of clips whose tokens equal fp32's
and the token-level edit rate against fp32 are printed (a random-weight model's logits are less
decisive than a trained model's, so this is a pessimistic bound).

Manifest mode (a trained model, e.g. the demo model on its held-out test set): every utterance is
streamed through `rec.engine(EngineConfig(precision=p, endpoint_ms=0))` with its language given, at
each latency and precision; per precision: normalized WER (eval/metrics.py, the average of the
languages' corpus WERs, as the README's tables), the share of utterances whose tokens equal fp32's,
and token agreement 1 − (token edits against fp32) / (fp32 tokens).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import babelcast
from babelcast.decoding.result import Transcript
from babelcast.eval.metrics import error_rate
from babelcast.manifest import ManifestEntry, load_entry_audio, read_manifest
from babelcast.model.precision import runtime_model
from babelcast.streaming.engine import EngineConfig
from babelcast.bench.streams import machine


def edits(a: list[int], b: list[int]) -> int:
    """Levenshtein distance between token lists."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def engine_finals(rec, precision: str, clips, language, latency: int,
                  keep_lang_tags: bool = True) -> list[Transcript]:
    """Each clip streamed whole through one Engine (no endpoints), its final transcript; the
    engine path users run, not real time."""
    engine = rec.engine(EngineConfig(max_sessions=len(clips), precision=precision, endpoint_ms=0,
                                     max_lag_ms=float("inf"), phase_align=False))  # not real time
    sids = []
    for clip in clips:
        sid = engine.open(rec.stream_options(language, latency, keep_lang_tags))
        engine.feed(sid, clip)
        engine.finish(sid, close=True)
        sids.append(sid)
    finals = {}
    while engine.n_sessions:
        for e in engine.step():
            if e.kind == "final":
                finals[e.session_id] = e.transcript
    return [finals[s] for s in sids]


def stream_all(rec, precision: str, clips, language, latency: int) -> list[list[int]]:
    """Token ids of each clip streamed through the engine."""
    return [t.tokens for t in engine_finals(rec, precision, clips, language, latency)]


def agreement(base: list[list[int]], got: list[list[int]]) -> list[int]:
    """[cases, identical, token edits, fp32 tokens (≥ 1 per case)] of token lists against fp32's."""
    return [len(base), sum(a == b for a, b in zip(base, got)), sum(edits(a, b) for a, b in zip(base, got)),
            sum(max(1, len(a)) for a in base)]


def parity(folder: str) -> None:
    """Token agreement on the NeMo parity fixtures (random weights)."""
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
                    stats[p] = [x + y for x, y in zip(stats[p], agreement(base, got))]
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


def demo(manifest: Path, model: Path, latencies: list[int], out: Path | None, per_lang: int | None) -> None:
    """WER and token agreement of bf16 / int8 with fp32 on a trained model's test manifest."""
    rec = babelcast.load_model(model)
    groups = by_language(read_manifest(manifest), per_lang)
    rows = []
    for latency in latencies:
        base = None
        for precision in ("fp32", "bf16", "int8"):
            finals = {lang: engine_finals(rec, precision, [a for _, a in items], lang, latency, keep_lang_tags=False)
                      for lang, items in groups.items()}
            tokens = [t.tokens for lang in groups for t in finals[lang]]
            base = base or tokens
            n, same, e, t = agreement(base, tokens)
            wer = {lang: error_rate([(x.text, f.text) for (x, _), f in zip(items, finals[lang])], lang)
                   for lang, items in groups.items()}
            rows.append({"latency_ms": latency, "precision": precision, "utterances": n, "identical": same,
                         "token_edits": e, "fp32_tokens": t, "token_agreement": 1 - e / t,
                         "wer_avg": sum(wer.values()) / len(wer), "wer": wer})
            print(demo_row(rows[-1]), flush=True)
    if out:
        write_demo(out, rows, manifest, model)


def by_language(entries: list[ManifestEntry], per_lang: int | None) -> dict[str, list[tuple[ManifestEntry, np.ndarray]]]:
    """Manifest entries with their audio, grouped by language (one engine run per language), the
    first per_lang of each (all with None)."""
    groups: dict[str, list] = {}
    for e in entries:
        group = groups.setdefault(e.language, [])
        if per_lang is None or len(group) < per_lang:
            group.append((e, load_entry_audio(e)))
    return dict(sorted(groups.items()))


def demo_row(r: dict) -> str:
    """A markdown row of one (latency, precision)."""
    langs = " | ".join(f"{100 * w:.1f}" for w in r["wer"].values())
    return (f"| {r['latency_ms']} | {r['precision']} | {100 * r['wer_avg']:.2f} | {langs} | "
            f"{r['identical']} / {r['utterances']} ({100 * r['identical'] / r['utterances']:.1f} %) | "
            f"{100 * r['token_agreement']:.2f} % |")


def write_demo(out: Path, rows: list[dict], manifest: Path, model: Path) -> None:
    """out.md (machine, date, command, table) and out.json (the rows)."""
    info = machine()
    command = "python bench/precision_drift.py " + " ".join(sys.argv[1:])
    langs = " | ".join(f"{lang} WER %" for lang in rows[0]["wer"])
    table = [f"| latency ms | precision | average WER % | {langs} | identical tokens to fp32 | token agreement |",
             "|" + "---|" * (5 + len(rows[0]["wer"]))] + [demo_row(r) for r in rows]
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "command": command, "manifest": str(manifest),
                                                    "model": str(model), "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join([
        f"# Precision drift on the demo model ({model.name}, {manifest})", "",
        f"Machine: {info['cpu']}, flags {', '.join(info['flags'])}; torch {info['torch']}, {info['torch_threads']} threads; "
        f"{info['date']}.", f"Command: `{command}`", "", *table, ""]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", help="parity fixtures folder (parity mode)")
    ap.add_argument("extra", nargs="*", type=Path, help="more checkpoints for the encoder error table")
    ap.add_argument("--manifest", type=Path, help="a trained model's test manifest (manifest mode)")
    ap.add_argument("--model", type=Path, default=Path(babelcast.__file__).parent / "assets" / "babelcast-demo.nemo")
    ap.add_argument("--latencies", default="80,1120")
    ap.add_argument("--max-per-lang", type=int, help="only the first N utterances per language")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write OUT.md and OUT.json (manifest mode)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())
    if args.manifest:
        return demo(args.manifest, args.model, [int(x) for x in args.latencies.split(",")], args.out,
                    args.max_per_lang)
    parity(args.folder)
    print("\n| checkpoint | encoder rel. error bf16 | int8 |\n|---|---|---|")
    for nemo in sorted(Path(args.folder).glob("*.nemo")) + args.extra:
        print(encoder_error(nemo))


if __name__ == "__main__":
    main()
