"""Tokens per encoder frame of a checkpoint through the real engine, so benchmarks count decoding.

    python bench/check_emission.py /tmp/n35.nemo [--precisions fp32,int8] [--latencies 80,1120]

`bench/make_checkpoint.py` calibrates its random joint to emit one token per 3–4 encoder frames, at
most one per frame, like a trained model. This streams other speech-like utterances (another seed
than the calibration's) through `Recognizer.engine` and counts the tokens of the finals.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch

import babelcast
from babelcast import chunking
from babelcast.bench.streams import utterances
from precision_drift import engine_finals
from step import machine


def encoder_frames(rec, n_samples: int) -> int:
    """Encoder frames of an utterance of n_samples samples."""
    mel = chunking.feature_frames(n_samples, rec.cfg.features.hop_samples)
    return chunking.subsampled_len(mel, rec.cfg.encoder.n_subsampling_stages)


def emission_row(rec, precision: str, latency_ms: int, clips, language: str) -> str:
    """One table row: frames, tokens, frames per token, emitting frames and the largest burst."""
    finals = engine_finals(rec, precision, clips, language, latency_ms)
    frames = sum(encoder_frames(rec, len(c)) for c in clips)
    tokens = sum(len(t.tokens) for t in finals)
    per_frame = [Counter(t.token_frames) for t in finals]
    emitting = sum(len(c) for c in per_frame)
    burst = max([0] + [max(c.values()) for c in per_frame if c])
    rate = f"{frames / tokens:.2f}" if tokens else "no tokens"
    return f"| {precision} | {latency_ms} | {len(clips)} | {frames} | {tokens} | {rate} | {emitting} | {burst} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--latencies", default="80,1120")
    ap.add_argument("--seconds", type=float, default=32.0, help="speech-like audio, cut into 4-s utterances")
    ap.add_argument("--seed", type=int, default=1, help="audio seed (make_checkpoint calibrates on 99)")
    ap.add_argument("--language", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())
    print(f"command: python bench/check_emission.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    rec = babelcast.load_model(args.model)
    clips = utterances(args.seconds, seed=args.seed)
    print("| precision | latency ms | utterances | encoder frames | tokens | frames per token "
          "| frames with a token | most tokens on one frame |\n|---|---|---|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        for latency in map(int, args.latencies.split(",")):
            print(emission_row(rec, precision, latency, clips, args.language), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
