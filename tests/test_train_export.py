"""A babelcast-built model exported with babelcast.train.export restores in NeMo 3.0.0 and decodes
to the same tokens as babelcast (nothing is trained: random weights made decisive)."""
from __future__ import annotations

import copy
import random
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import babelcast
from babelcast.config import parse_model_config
from babelcast.decoding.greedy import greedy_ctc, greedy_rnnt
from babelcast.model.asr import AsrModel
from babelcast.train.export import TARGETS, export_nemo, nemo_config
from babelcast.train.tokenizer import tags_in, train_tokenizer

from tiny import BASE, _calibrate_blank, synth_audio
from train_fixtures import one_thread, pseudo_sentence  # noqa: F401 (autouse fixture)

CLIP_SAMPLES = [24000, 20000, 13600]
PROMPTS = {"en-US": 0, "de-DE": 9, "auto": 101}
VARIANTS = {  # name → changes to the tiny NeMo-format config
    "prompt_rnnt": {},
    "prompt_hybrid": {"aux_ctc": {"ctc_loss_weight": 0.3}},
    "rnnt": {"model_defaults": None},
}


@pytest.fixture(scope="module")
def tokenizer_files():
    rng = random.Random(3)
    texts = [f"{pseudo_sentence(rng)} {rng.choice(['<en-US>', '<de-DE>'])}" for _ in range(400)]
    return train_tokenizer(texts, 64, tags_in(texts))


def model_section(variant: str, vocab: int) -> dict:
    cfg = copy.deepcopy(BASE)
    for key, value in VARIANTS[variant].items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    cfg["decoder"]["vocab_size"] = cfg["joint"]["num_classes"] = vocab
    return cfg


def decisive_model(section: dict, seed: int = 0) -> AsrModel:
    """Random weights whose argmaxes are far from ties (as tests/tiny.py does), CTC head included."""
    torch.manual_seed(seed)
    net = AsrModel(parse_model_config(section)).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "pos_bias" in name or (p.ndim == 1 and "norm" not in name):
                p.normal_(0, 0.1)
        net.joint.out.weight.mul_(10)
        net.joint.out.bias.zero_()
        net.joint.pred.weight.mul_(0.5)
        if net.prompt_kernel is not None:
            net.prompt_kernel[0].weight[:, -128:].mul_(30)  # make the language change the tokens
        if net.ctc_decoder is not None:
            net.ctc_decoder.decoder_layers[0].weight.mul_(10)
        _calibrate_blank(net)
    return net


@pytest.fixture(scope="module")
def nemo_asr():
    pytest.importorskip("nemo.collections.asr", reason="NeMo (the test extra) is the oracle")
    warnings.filterwarnings("ignore")
    from nemo.collections.asr.models import ASRModel
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(nemo_logging.ERROR)
    return ASRModel


def clips() -> tuple[torch.Tensor, torch.Tensor]:
    audio = torch.zeros(len(CLIP_SAMPLES), max(CLIP_SAMPLES))
    for i, n in enumerate(CLIP_SAMPLES):
        audio[i, :n] = synth_audio(n, seed=10 + i)
    return audio, torch.tensor(CLIP_SAMPLES)


def nemo_tokens(model, audio, lengths, prompt_ids, context):
    """NeMo's own forward (prompt indices given explicitly) and greedy_batch decoding."""
    model.encoder.set_default_att_context_size(list(context))
    with torch.no_grad():
        kwargs = {"prompt_indices": prompt_ids} if prompt_ids is not None else {}
        enc, enc_len = model.forward(input_signal=audio, input_signal_length=lengths, **kwargs)
        hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len,
                                                              return_hypotheses=True)
        rnnt = [[int(v) for v in h.y_sequence.tolist()] for h in hyps]
        ctc = None
        if hasattr(model, "ctc_decoder"):
            label = model.ctc_decoder(encoder_output=enc).argmax(-1)
            ctc = [_collapse(label[b, : int(enc_len[b])].tolist(), model.ctc_decoding.blank_id)
                   for b in range(len(hyps))]
    return rnnt, ctc


def _collapse(seq: list[int], blank: int) -> list[int]:
    out, prev = [], blank
    for p in seq:
        if p != blank and p != prev:
            out.append(p)
        prev = p
    return out


def babelcast_tokens(net: AsrModel, audio, lengths, prompt_ids, context):
    with torch.no_grad():
        frames, enc_len = net.encode(audio, lengths, *context, prompt_ids)
        state = net.decoder.init_state(frames.shape[0])
        em, _ = greedy_rnnt(net.decoder, net.joint, frames, enc_len, state, net.cfg.transducer.max_symbols)
        rnnt = [ids for ids, _, _ in em.to_lists()]
        ctc = None
        if net.ctc_decoder is not None:
            em, _ = greedy_ctc(net.ctc_decoder, frames, enc_len, net.cfg.transducer.blank_id)
            ctc = [ids for ids, _, _ in em.to_lists()]
    return rnnt, ctc


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nemo_restores_export_and_decodes_the_same_tokens(variant, tokenizer_files, nemo_asr, tmp_path):
    from babelcast.checkpoint.tokenizer import Tokenizer

    vocab = len(Tokenizer(tokenizer_files.model))
    section = model_section(variant, vocab)
    net = decisive_model(section)
    path = export_nemo(tmp_path / f"{variant}.nemo", net, section, tokenizer_files)

    nemo_model = nemo_asr.restore_from(str(path), map_location="cpu").eval()
    expected_class = TARGETS[(variant != "rnnt", variant == "prompt_hybrid")].rsplit(".", 1)[1]
    assert type(nemo_model).__name__ == expected_class
    reloaded = babelcast.load_model(path).model  # babelcast reads its own export too
    audio, lengths = clips()
    compared = 0
    for context in [(28, 3), (28, 13), (28, 0)]:
        for lang in (PROMPTS if variant != "rnnt" else [None]):
            prompt_ids = None if lang is None else torch.full((len(CLIP_SAMPLES),), PROMPTS[lang])
            ours = babelcast_tokens(reloaded, audio, lengths, prompt_ids, context)
            assert ours == babelcast_tokens(net, audio, lengths, prompt_ids, context)
            theirs = nemo_tokens(nemo_model, audio, lengths, prompt_ids, context)
            assert ours[0] == theirs[0], f"RNNT tokens differ at {context}, {lang}"
            assert ours[1] == theirs[1], f"CTC tokens differ at {context}, {lang}"
            assert all(len(t) >= 3 for t in ours[0]), "decode too few tokens for a meaningful comparison"
            compared += 1
    assert compared >= 3


def test_hybrid_exported_without_ctc_is_the_plain_prompt_rnnt(tokenizer_files, nemo_asr, tmp_path):
    """trainer.export_ctc: false — the CTC head trained beside the transducer is left out of the .nemo."""
    from babelcast.checkpoint.tokenizer import Tokenizer

    section = model_section("prompt_hybrid", len(Tokenizer(tokenizer_files.model)))
    net = decisive_model(section)
    path = export_nemo(tmp_path / "plain.nemo", net, section, tokenizer_files, with_ctc=False)
    nemo_model = nemo_asr.restore_from(str(path), map_location="cpu").eval()
    assert type(nemo_model).__name__ == "EncDecRNNTBPEModelWithPrompt"
    reloaded = babelcast.load_model(path).model
    assert reloaded.ctc_decoder is None
    audio, lengths = clips()
    prompt_ids = torch.full((len(CLIP_SAMPLES),), PROMPTS["de-DE"])
    ours = babelcast_tokens(reloaded, audio, lengths, prompt_ids, (28, 3))[0]
    assert ours == babelcast_tokens(net, audio, lengths, prompt_ids, (28, 3))[0]
    assert ours == nemo_tokens(nemo_model, audio, lengths, prompt_ids, (28, 3))[0]


def test_exported_config_is_complete(tokenizer_files):
    """Every section NeMo instantiates names its class; the tokenizer is carried as nemo: artifacts."""
    from babelcast.checkpoint.tokenizer import Tokenizer

    vocab = len(Tokenizer(tokenizer_files.model))
    config, artifacts = nemo_config(model_section("prompt_hybrid", vocab), tokenizer_files)
    for key in ("preprocessor", "encoder", "decoder", "joint", "spec_augment"):
        assert config[key]["_target_"].startswith("nemo.collections.asr.modules.")
    assert config["aux_ctc"]["decoder"]["_target_"].endswith("ConvASRDecoder")
    assert config["target"].endswith("EncDecHybridRNNTCTCBPEModelWithPrompt")
    refs = [config["tokenizer"][k] for k in ("model_path", "vocab_path", "spe_tokenizer_vocab")]
    assert sorted(r.removeprefix("nemo:") for r in refs) == sorted(artifacts)
    assert config["joint"]["vocabulary"] == config["labels"] and len(config["labels"]) == vocab
    assert config["model_defaults"]["prompt_dictionary"]["no"] == 27


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
DEMO_MAX_BYTES = 30_000_000


def demo_tokenizer(vocab_size: int):
    """A tokenizer that fills the demo's whole vocabulary (the size bound needs the largest one)."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzäöüßéèàçñóíúãõąęłśżабвгдежзийклмнопрстуфхцчшщыэюяαβγδεζηθικλμνξοπρστυφχψω"
    words = lambda: " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
                             for _ in range(rng.randint(3, 12)))
    texts = [f"{words()}. <{rng.choice(['en-US', 'de-DE', 'fr-FR', 'ru-RU'])}>" for _ in range(8000)]
    files = train_tokenizer(texts, vocab_size, tags_in(texts), 0.9995)
    return files


def test_demo_config_is_3_5_shaped_fits_30_mb_and_restores_in_nemo(nemo_asr, tmp_path):
    from babelcast.checkpoint.tokenizer import Tokenizer
    from babelcast.train.config import load_train_config, normalized_model_section
    from babelcast.train.run import init_model, with_vocab

    cfg = load_train_config(DEMO_CONFIG)
    files = demo_tokenizer(cfg.tokenizer.vocab_size)
    vocab = len(Tokenizer(files.model))
    assert vocab == cfg.tokenizer.vocab_size
    section = with_vocab(cfg.model, vocab)
    model_cfg = parse_model_config(section)
    enc = model_cfg.encoder
    assert enc.att_contexts == ((56, 3), (56, 0), (56, 6), (56, 13)) and enc.feat_in == 128
    assert (enc.subsampling_factor, enc.use_bias, enc.xscaling, enc.conv_kernel) == (8, False, False, 9)
    assert model_cfg.prompt.dictionary["auto"] == 101 and model_cfg.prompt.dictionary["no"] == 27
    parity = yaml.safe_load((Path(__file__).parent / "parity" / "configs" / "prompt_rnnt.yaml").read_text())
    reference = normalized_model_section(parity)["model_defaults"]["prompt_dictionary"]
    assert dict(model_cfg.prompt.dictionary) == reference  # 3.5's prompt dictionary, as the parity tests use
    net = init_model(model_cfg, 0)
    assert not cfg.trainer.export_ctc  # the CTC head trains beside the transducer and is not shipped
    path = export_nemo(tmp_path / "demo.nemo", net, section, files, with_ctc=cfg.trainer.export_ctc)
    assert path.stat().st_size <= DEMO_MAX_BYTES
    restored = nemo_asr.restore_from(str(path), map_location="cpu")
    assert type(restored).__name__ == "EncDecRNNTBPEModelWithPrompt"
    shipped = sum(p.numel() for name, p in net.named_parameters() if not name.startswith("ctc_decoder."))
    assert sum(p.numel() for p in restored.parameters()) == shipped
