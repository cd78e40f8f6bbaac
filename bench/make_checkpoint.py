"""Write a full-size Nemotron-3.5-shaped `.nemo` with random weights, for speed benchmarks.

The architecture is the released checkpoint's (spec §0: 24 layers, d_model 1024, 8 heads, 13,088
outputs, 128 mels, the 3.5 prompt dictionary); NeMo 3.0.0 restores the file, so NeMo and babelcast are
measured on the same weights. The joint is calibrated so that greedy decoding emits about one token
every 3–4 encoder frames on speech-like audio, like a trained model (a random joint emits either
nothing or max_symbols tokens on every frame, which would make decoding cost unrepresentative).

    python bench/make_checkpoint.py /tmp/nemotron35-random.nemo      # ~2.5 GB, ~1 minute
"""
from __future__ import annotations

import argparse
import copy
import io
import random
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import yaml
from sentencepiece import sentencepiece_model_pb2

from babelcast.bench.streams import utterances
from babelcast.config import parse_model_config
from babelcast.decoding.greedy import greedy_rnnt
from babelcast.model.asr import AsrModel
from babelcast.train.export import export_nemo
from babelcast.train.tokenizer import TokenizerFiles

REPO = Path(__file__).resolve().parents[1]
FULL_SIZE = {  # spec §0 / §1.2
    "encoder": {"feat_in": 128, "n_layers": 24, "d_model": 1024, "n_heads": 8, "subsampling_conv_channels": 256},
    "decoder": {"prednet": {"pred_hidden": 640, "pred_rnn_layers": 2}},
    "joint": {"jointnet": {"joint_hidden": 640}},
    "model_defaults": {"enc_hidden": 1024, "pred_hidden": 640, "joint_hidden": 640},
    "preprocessor": {"features": 128},
}
VOCAB = 13087  # SentencePiece pieces; blank is 13087


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def model_section() -> dict:
    """The demo config's NeMo model section (3.5's prompt dictionary, contexts, flags) at full size."""
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["model"]
    cfg = _merge(demo, FULL_SIZE)
    cfg["decoder"]["vocab_size"] = VOCAB
    cfg["joint"]["num_classes"] = VOCAB
    cfg.pop("tokenizer", None)
    return cfg


def tokenizer(locales: list[str], seed: int = 0) -> bytes:
    """A valid unigram SentencePiece model with one piece per language tag, widened to VOCAB pieces."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(12))
             for _ in range(3000)]
    tags = [f"<{loc}>" for loc in locales]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=600,
                                   model_type="unigram", user_defined_symbols=tags, bos_id=-1, eos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    have = {p.piece for p in proto.pieces}
    i = 0
    while len(proto.pieces) < VOCAB:
        piece = f"▁w{i:05d}"
        i += 1
        if piece not in have:
            proto.pieces.add(piece=piece, score=-20.0 - i * 1e-4, type=1)
    return proto.SerializeToString()


@torch.no_grad()
def calibrate(net: AsrModel, frames_per_token: float = 3.5) -> float:
    """Center the joint on speech-like audio and set the blank bias for ~1 token per 3–4 frames."""
    audio = torch.from_numpy(np.concatenate(utterances(8.0, seed=99)))[None]
    frames, enc_len = net.encode(audio, torch.tensor([audio.shape[1]]), 56, 3, torch.tensor([101]))
    enc = net.joint.enc
    enc.bias.copy_(-(enc.weight @ frames[0].mean(0)))
    out = net.joint.out
    out.weight.mul_(4.0)
    lo, hi = -50.0, 50.0
    for _ in range(20):  # bisection on the blank bias against the measured emission rate
        out.bias[-1] = (lo + hi) / 2
        em, _ = greedy_rnnt(net.decoder, net.joint, frames, enc_len, net.decoder.init_state(1), 10)
        rate = int(enc_len) / max(1, int(em.count[0]))
        lo, hi = (out.bias[-1].item(), hi) if rate < frames_per_token else (lo, out.bias[-1].item())
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    section = model_section()
    cfg = parse_model_config(section)
    net = AsrModel(cfg).eval()
    rate = calibrate(net)
    locales = sorted({k for k in cfg.prompt.dictionary if "-" in k})
    tok = TokenizerFiles.from_model(tokenizer(locales, args.seed))
    export_nemo(args.out, net, section, tok)
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {n / 1e6:.1f} M parameters, {args.out.stat().st_size / 2**30:.2f} GiB, "
          f"{rate:.2f} encoder frames per token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
