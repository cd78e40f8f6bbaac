"""Phrase boosting on a model (default: the bundled demo): recall of boosted phrases, WER with and without,
false insertions of boosted phrases that are not spoken, and the engine's throughput by list size.

    python bench/boost.py --out bench/results/boost-demo.json

Accuracy: bench/boost_sentences.tsv (names and terms in the six demo languages, and sentences without
any) is synthesized with `babelcast data synth --sentences` (test voices); every utterance is decoded
with its language given, without boosting (greedy, and the beam search boosted streams use) and with
the whole list of phrases (all languages) at each weight. A phrase counts as recognized when its
normalized words start words of the normalized transcript (inflected forms pass). The same decodes of
a larger set without any of the phrases (`--plain-n` test utterances per language, made as
scripts/train_demo.sh makes the demo's test set) give the WER cost of boosting and the false insertions.
Throughput: `--streams` streams of the set's audio through one engine, drained, greedy with no phrases,
then with the beam search and 0 / 10 / 100 / 1,000 phrases per stream; the configurations are
interleaved and repeated, and the ratios are of medians within the run (a shared machine is noisy;
rerun on a quiet one for absolutes).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import babelcast
from babelcast.bench.streams import machine
from babelcast.cli import main as cli
from babelcast.config import DEFAULT_BEAM, DEFAULT_WEIGHT, GREEDY_WEIGHT
from babelcast.eval.metrics import Counts, normalize, score
from babelcast.manifest import load_entry_audio, read_manifest
from babelcast.streaming.engine import Engine, EngineConfig

SET = Path(__file__).with_name("boost_sentences.tsv")
SIZES = (0, 10, 100, 1000)
DEMO_LANGS = "en-US,de-DE,es-US,it-IT,pl-PL,cs-CZ"


def read_set(path: Path = SET) -> list[tuple[str, str, str]]:
    """(locale, phrase or "", sentence) rows of the rare-word set."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return [(loc, "" if phrase == "-" else phrase, text) for loc, phrase, text in rows]


def synthesize(rows: list[tuple[str, str, str]], out: Path) -> list:
    """The set's audio via `babelcast data synth --sentences` (files are reused on a rerun)."""
    out.mkdir(parents=True, exist_ok=True)
    sentences = out / "sentences.tsv"
    sentences.write_text("".join(f"{loc}\t{text}\n" for loc, _, text in rows), encoding="utf-8")
    if cli(["data", "synth", "--sentences", str(sentences), "--out", str(out), "--jobs", "2"]) not in (0, None):
        sys.exit("synthesis failed")
    return read_manifest(out / "manifest.jsonl")


def spoken(phrase: str, text: str, locale: str) -> bool:
    """The phrase's words start consecutive words of the text (both normalized)."""
    words, want = normalize(text, locale).split(), normalize(phrase, locale).split()
    return any(all(w.startswith(p) for w, p in zip(words[i:], want)) for i in range(len(words) - len(want) + 1))


def plain_set(out: Path, n_per_lang: int) -> list:
    """Test-split utterances of the demo languages (none holds a phrase of the set), via `data synth`."""
    if cli(["data", "synth", "--langs", DEMO_LANGS, "--n", str(n_per_lang), "--split", "test", "--seed", "0",
            "--out", str(out)]) not in (0, None):
        sys.exit("synthesis failed")
    return read_manifest(out / "manifest.jsonl")


def plain_accuracy(rec, entries, phrases: list[str], boost: list[str], latency_ms: int | None,
                   beam_size: int | None) -> dict:
    """WER of utterances without the phrases, and how often a phrase appears in their transcripts."""
    total, inserted = Counts(), 0
    for e in entries:
        h = rec.transcribe([load_entry_audio(e)], language=e.language, latency_ms=latency_ms, boost=boost,
                           beam_size=beam_size)[0].text
        total = total + score(e.text, h, e.language)
        inserted += sum(spoken(p, h, e.language) and not spoken(p, e.text, e.language) for p in phrases)
    return {"utterances": len(entries), "wer": round(total.rate, 4), "insertions": inserted,
            "insertion_rate": round(inserted / max(1, len(entries) * len(phrases)), 6)}


def accuracy(rec, rows, entries, boost: list[str], latency_ms: int | None, beam_size: int | None = None) -> dict:
    """Recall of the spoken phrases, false insertions of the others, WER of all and of phrase-free utterances."""
    audio = [load_entry_audio(e) for e in entries]
    hyps = [rec.transcribe([a], language=loc, latency_ms=latency_ms, boost=boost, beam_size=beam_size)[0].text
            for a, (loc, _, _) in zip(audio, rows)]
    phrases = [p.rpartition(":")[0] or p for p in boost]
    hits = [spoken(p, h, loc) for (loc, p, _), h in zip(rows, hyps) if p]
    inserted = [spoken(p, h, loc) for (loc, own, ref), h in zip(rows, hyps) for p in phrases
                if p != own and not spoken(p, ref, loc)]
    every, plain = Counts(), Counts()
    for (loc, p, ref), h in zip(rows, hyps):
        c = score(ref, h, loc)
        every, plain = every + c, plain + c if not p else plain
    return {"recall": round(sum(hits) / len(hits), 4), "phrases_spoken": len(hits),
            "false_insertion_rate": round(sum(inserted) / max(1, len(inserted)), 5), "unspoken_pairs": len(inserted),
            "wer": round(every.rate, 4), "wer_without_phrases": round(plain.rate, 4), "hypotheses": hyps}


def phrase_list(real: list[str], n: int, seed: int = 0) -> list[str]:
    """n phrases: the set's, then made-up names (two or three syllables), deterministic."""
    rng = random.Random(seed)
    syllables = ["ka", "zor", "vel", "mi", "dra", "tho", "quen", "bra", "lu", "ste", "gor", "fin", "ux", "pel"]
    made = [("".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))).capitalize() for _ in range(n)]
    return (real + made)[:n]


def throughput(rec, audio: np.ndarray, lists: dict[int, list[str]], streams: int, latency_ms: int,
               precision: str, repeats: int, beam_size: int) -> dict:
    """Seconds to drain `streams` streams of `audio` per configuration ("greedy": no phrases, no beam;
    n: the beam search with n phrases), interleaved and repeated; ratios to greedy and to beam with 0."""
    cfg = EngineConfig(max_sessions=streams, precision=precision, endpoint_ms=0, max_lag_ms=float("inf"),
                       max_segment_ms=0, phase_align=False, beam_size=beam_size)
    engine = Engine(rec.model, rec.tokenizer, cfg)
    opts = {"greedy": rec.stream_options("auto", latency_ms, beam=False)}
    opts.update({n: rec.stream_options("auto", latency_ms, boost=lists[n], beam=True) for n in lists})
    seconds: dict = {n: [] for n in opts}
    for _ in range(repeats + 1):  # the first round warms up
        for n in opts:
            t0 = time.perf_counter()
            for _ in range(streams):
                sid = engine.open(opts[n], interim=False)
                engine.feed(sid, audio)
                engine.finish(sid, close=True)
            engine.drain()
            seconds[n].append(time.perf_counter() - t0)
    median = {n: statistics.median(s[1:]) for n, s in seconds.items()}
    audio_s = streams * len(audio) / 16000
    return {"precision": engine.precision.precision, "streams": streams, "latency_ms": latency_ms,
            "beam_size": beam_size, "audio_s_per_round": round(audio_s, 1), "repeats": repeats,
            "median_s": {n: round(s, 3) for n, s in median.items()},
            "rtfx": {n: round(audio_s / s, 1) for n, s in median.items()},
            "throughput_vs_greedy": {n: round(median["greedy"] / s, 3) for n, s in median.items()},
            "throughput_vs_beam_0": {n: round(median[0] / s, 3) for n, s in median.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a .nemo path or hub id (default: the bundled demo model)")
    ap.add_argument("--set-dir", type=Path, default=Path("/tmp/babelcast-boost-set"))
    ap.add_argument("--weights", default=f"{GREEDY_WEIGHT:g},{DEFAULT_WEIGHT:g}", help="the beam's per-token weights to measure")
    ap.add_argument("--beam-size", type=int, default=DEFAULT_BEAM, help="hypotheses of the boosted streams' search")
    ap.add_argument("--plain-n", type=int, default=50, help="phrase-free test utterances per language (0: none)")
    ap.add_argument("--plain-dir", type=Path, default=Path("/tmp/babelcast-boost-plain"))
    ap.add_argument("--latency", type=int, help="accuracy latency (default: the offline default)")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--stream-latency", type=int, default=320)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--throughput-only", action="store_true",
                    help="skip the accuracy tables (e.g. a random-weight full-size checkpoint: speed only)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rec = babelcast.load_model(args.model)
    rows = read_set()
    entries = synthesize(rows, args.set_dir)
    real = sorted({p for _, p, _ in rows if p})
    result = {"command": " ".join(["python", "bench/boost.py"] + (argv if argv is not None else sys.argv[1:])),
              "machine": machine(), "model": args.model or "demo", "utterances": len(rows), "phrases": len(real)}
    k = args.beam_size
    configs = {"greedy, none": ([], 1), f"beam {k}, none": ([], k)}
    configs.update({f"beam {k}, weight {w}": ([f"{p}:{w}" for p in real], k) for w in args.weights.split(",")})
    configs[f"greedy, weight {GREEDY_WEIGHT:g}"] = ([f"{p}:{GREEDY_WEIGHT:g}" for p in real], 1)
    plain = plain_set(args.plain_dir, args.plain_n) if args.plain_n and not args.throughput_only else []
    result["accuracy"], result["without_phrases"] = {}, {}
    for name, (boost, beam_size) in ({} if args.throughput_only else configs).items():
        result["accuracy"][name] = accuracy(rec, rows, entries, boost, args.latency, beam_size)
        print(name, {k: v for k, v in result["accuracy"][name].items() if k != "hypotheses"}, flush=True)
        if plain:
            result["without_phrases"][name] = plain_accuracy(rec, plain, real, boost, args.latency, beam_size)
            print("   phrase-free set:", result["without_phrases"][name], flush=True)
    audio = np.concatenate([load_entry_audio(e) for e in entries[:: max(1, len(entries) // 6)]])
    lists = {n: phrase_list(real, n) for n in SIZES}
    result["throughput"] = throughput(rec, audio, lists, args.streams, args.stream_latency, args.precision,
                                      args.repeats, k)
    print(json.dumps(result["throughput"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
