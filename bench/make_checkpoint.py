"""Write a full-size Nemotron-3.5-shaped `.nemo` with random weights, for speed benchmarks.

The architecture is the released checkpoint's (spec §0: 24 layers, d_model 1024, 8 heads, 13,088
outputs, 128 mels, the 3.5 prompt dictionary); NeMo 3.0.0 restores the file, so NeMo and babelcast are
measured on the same weights. The joint and prediction net are set so that greedy decoding emits about
one token every 3–4 encoder frames, at most one per frame, on the engine's speech-like inputs at every
latency, like a trained model (a random joint emits either nothing or max_symbols tokens on a frame,
which would make decoding cost unrepresentative). `bench/check_emission.py` checks it through the engine.

    python bench/make_checkpoint.py /tmp/n35.nemo      # ~2.4 GiB, 3–5 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import copy
import io
import random
import sys
from pathlib import Path

import sentencepiece as spm
import torch
import yaml
from torch import Tensor
from sentencepiece import sentencepiece_model_pb2

from babelcast.bench.streams import utterances
from babelcast.config import parse_model_config
from babelcast.decoding.greedy import greedy_rnnt
from babelcast.model.asr import AsrModel
from babelcast.model.prompt import prompt_index
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


CLASSES = 32  # labels the calibrated joint chooses among (ordinary word pieces, no tags)
SHIFT = 10.0  # keeps the class units of the joint in ReLU's linear range
OFF = 100.0  # switches a joint unit off (below ReLU's zero) or a logit out of reach


@torch.no_grad()
def calibration_frames(net: AsrModel, seconds: float = 32.0, seed: int = 99) -> list[tuple[Tensor, Tensor]]:
    """Prompted encoder frames of the benchmark's speech-like utterances, as the engine makes them:
    every trained context, the auto prompt (streaming equals offline at the same context)."""
    clips = [torch.from_numpy(c) for c in utterances(seconds, seed=seed)]
    lengths = torch.tensor([len(c) for c in clips])
    audio = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    auto = torch.full((len(clips),), prompt_index(net.cfg.prompt, "auto"))
    return [net.encode(audio, lengths, left, right, auto) for left, right in net.cfg.encoder.att_contexts]


def class_labels(vocab: int, classes: int = CLASSES) -> Tensor:
    """Token ids of the labels the joint emits: spread over the widened word pieces."""
    return torch.linspace(1000, vocab - 1000, classes).long()


@torch.no_grad()
def memoryless_predictor(net: AsrModel) -> Tensor:
    """Zero the LSTM's recurrence and close its forget gates, so the last label alone sets the
    predictor's output (same shapes and matmuls, so the same decoding cost)."""
    lstm, hidden = net.decoder.prediction["dec_rnn"].lstm, net.decoder.cfg.pred_hidden
    for layer in range(lstm.num_layers):
        getattr(lstm, f"weight_hh_l{layer}").zero_()
        getattr(lstm, f"bias_ih_l{layer}")[hidden:2 * hidden] = -OFF / 2  # gates i, f, g, o: f ≈ 0
    return lstm


@torch.no_grad()
def set_joint(net: AsrModel, frames: list[tuple[Tensor, Tensor]], margin: float) -> None:
    """Joint for 'emit a label when the frame's best class changes': class k scores e_k, a random
    direction of the encoder frame (unit variance on the calibration frames); label k's logit is e_k,
    blank's is e_last + margin, where last is the class of the last emitted label. So a frame emits
    at most one token, and only when some class beats the last one by `margin`."""
    joint, k = net.joint, CLASSES
    labels = class_labels(net.cfg.transducer.vocab_size)
    blank = net.cfg.transducer.blank_id
    x = torch.cat([f[b, :n] for f, lens in frames for b, n in enumerate(lens.tolist())])
    gen = torch.Generator().manual_seed(1)
    dirs = torch.randn(k, x.shape[1], generator=gen)
    mean = x.mean(0)
    dirs /= ((x - mean) @ dirs.T).std(0)[:, None]
    u, a = slice(0, k), slice(k, 2 * k)  # joint units: u_k = relu(e_k + SHIFT), a_k: the same if last is k
    for units in (u, a):
        joint.enc.weight[units] = dirs
        joint.enc.bias[units] = SHIFT - dirs @ mean
    joint.pred.weight[u], joint.pred.bias[u] = 0.0, 0.0
    joint.pred.weight[a], joint.pred.bias[a] = last_class_gate(net, labels)
    out = joint.out
    out.weight[:, : 2 * k] = 0.0
    out.bias[:] = -OFF
    out.weight[labels, torch.arange(k)] = 1.0
    out.bias[labels] = -SHIFT
    out.weight[blank, a] = 1.0
    out.bias[blank] = margin - SHIFT


@torch.no_grad()
def last_class_gate(net: AsrModel, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of the joint's predictor projection giving 0 to unit a_k when the last label is class k
    and -OFF otherwise (also at the start, after blank): exact, the predictor being memoryless."""
    dec = net.decoder
    start = dec.init_state(1)
    outs = torch.cat([dec.step(labels[i:i + 1], start).out for i in range(len(labels))] + [start.out])  # [K+1, H]
    g = torch.cat([outs, torch.ones(len(outs), 1)], dim=1)
    target = torch.full((len(labels), len(outs)), -OFF)
    target[:, : len(labels)] += OFF * torch.eye(len(labels))
    w = torch.linalg.lstsq(g, target.T).solution.T  # [K, H + 1]
    return w[:, :-1], w[:, -1]


@torch.no_grad()
def emission(net: AsrModel, frames: list[tuple[Tensor, Tensor]]) -> tuple[float, int]:
    """(encoder frames per token, most tokens on one frame) of greedy decoding over the frames."""
    n_frames = n_tokens = burst = 0
    for f, lens in frames:
        em, _ = greedy_rnnt(net.decoder, net.joint, f, lens, net.decoder.init_state(f.shape[0]),
                            net.cfg.transducer.max_symbols)
        for labels, at, _ in em.to_lists():
            burst = max([burst] + [at.count(t) for t in set(at)])
        n_frames += int(lens.sum())
        n_tokens += int(em.count.sum())
    return n_frames / max(1, n_tokens), burst


@torch.no_grad()
def calibrate(net: AsrModel, frames_per_token: float = 3.5, seconds: float = 32.0) -> tuple[float, int]:
    """Bisect the blank margin until greedy decoding emits one token per `frames_per_token` encoder
    frames on the engine's inputs; returns the rate reached and the most tokens on one frame."""
    memoryless_predictor(net)
    frames = calibration_frames(net, seconds)
    lo, hi = 0.0, 8.0
    for _ in range(16):
        set_joint(net, frames, (lo + hi) / 2)
        rate, burst = emission(net, frames)
        lo, hi = ((lo + hi) / 2, hi) if rate < frames_per_token else (lo, (lo + hi) / 2)
    return rate, burst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    section = model_section()
    cfg = parse_model_config(section)
    net = AsrModel(cfg).eval()
    rate, burst = calibrate(net)
    locales = sorted({k for k in cfg.prompt.dictionary if "-" in k})
    tok = TokenizerFiles.from_model(tokenizer(locales, args.seed))
    export_nemo(args.out, net, section, tok)
    n = sum(p.numel() for p in net.parameters())
    print(f"wrote {args.out}: {n / 1e6:.1f} M parameters, {args.out.stat().st_size / 2**30:.2f} GiB, "
          f"{rate:.2f} encoder frames per token, at most {burst} on one frame (calibration audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
