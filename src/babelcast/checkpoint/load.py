"""Build an AsrModel and Tokenizer from a `.nemo` archive, checking every tensor by name."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig, parse_model_config, with_trained_locales
from ..model.asr import AsrModel
from .hub import resolve_model_path
from .nemo_archive import CheckpointError, NemoArchive, artifact, read_nemo
from .tokenizer import Tokenizer

# Trained locales of released checkpoints whose config does not list them, by file stem: Nemotron 3.5's
# model card (its three tiers: 19 transcription-ready, 13 broad-coverage, 8 adaptation-ready).
RELEASED_TRAINED_LOCALES = {
    "nemotron-3.5-asr-streaming-0.6b": (
        "en-US", "en-GB", "es-US", "es-ES", "fr-FR", "fr-CA", "it-IT", "pt-BR", "pt-PT", "nl-NL", "de-DE", "tr-TR",
        "ru-RU", "ar-AR", "hi-IN", "ja-JP", "ko-KR", "vi-VN", "uk-UA",
        "pl-PL", "sv-SE", "cs-CZ", "nb-NO", "da-DK", "bg-BG", "fi-FI", "hr-HR", "sk-SK", "zh-CN", "hu-HU", "ro-RO",
        "et-EE",
        "el-GR", "lt-LT", "lv-LV", "mt-MT", "sl-SI", "he-IL", "th-TH", "nn-NO"),
}

# Buffers a checkpoint may lack; babelcast then computes them (librosa-identical slaney filters).
OPTIONAL_KEYS = ("preprocessor.featurizer.window", "preprocessor.featurizer.fb")


def load_checkpoint(model: str | Path) -> tuple[AsrModel, Tokenizer]:
    """Path or hub id → (model in eval mode, fp32, on CPU; tokenizer)."""
    path = resolve_model_path(model)
    archive = read_nemo(path)
    try:
        cfg = parse_model_config(archive.config)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    cfg = _with_release_facts(_with_state_dict_facts(cfg, archive.state_dict), path)
    net = AsrModel(cfg)
    load_state(net, archive.state_dict, str(path))
    return net.eval(), _tokenizer(archive, cfg, path)


def _with_state_dict_facts(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> ModelConfig:
    """A hybrid head is known by its tensors too (configs vary in where they put aux_ctc)."""
    from dataclasses import replace

    has_ctc = any(k.startswith("ctc_decoder.") for k in state)
    return replace(cfg, has_ctc=has_ctc) if has_ctc != cfg.has_ctc else cfg


def _with_release_facts(cfg: ModelConfig, path: Path) -> ModelConfig:
    """A released checkpoint's trained locales from its model card when its config does not say."""
    from dataclasses import replace

    known = RELEASED_TRAINED_LOCALES.get(path.stem)
    if cfg.prompt is None or cfg.prompt.trained_locales is not None or known is None:
        return cfg
    if any(cfg.prompt.canonical(x) is None for x in known):  # renamed from another model: not that release
        return cfg
    return replace(cfg, prompt=with_trained_locales(cfg.prompt, known))


def load_state(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors into `net`; a missing, unexpected or mis-shaped tensor is an error naming it."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and k not in OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:20])}{' …' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:20])}{' …' if len(unexpected) > 20 else ''}")
    if shapes:
        problems.append("mis-shaped tensors: " + "; ".join(shapes[:20]))
    if problems:
        raise CheckpointError(f"{source}: weights do not match the config: " + " | ".join(problems))
    net.load_state_dict({k: v for k, v in state.items()}, strict=False)


def tokenizer_proto(archive: NemoArchive, path: Path) -> bytes:
    """The SentencePiece model proto the archive's tokenizer config points at."""
    tok_cfg = archive.config.get("tokenizer") or {}
    if tok_cfg.get("type", "bpe") not in ("bpe", "wpe") or "langs" in tok_cfg:
        raise CheckpointError(f"{path}: tokenizer type {tok_cfg.get('type')!r} is not supported (SentencePiece only)")
    proto = artifact(archive, tok_cfg.get("model_path"))
    if proto is None:
        raise CheckpointError(f"{path}: tokenizer.model_path is missing")
    return proto


def _tokenizer(archive: NemoArchive, cfg: ModelConfig, path: Path) -> Tokenizer:
    proto = tokenizer_proto(archive, path)
    locales = cfg.prompt.dictionary.keys() if cfg.prompt else ()
    tok = Tokenizer(proto, locales)
    if len(tok) != cfg.transducer.vocab_size:
        raise CheckpointError(f"{path}: tokenizer has {len(tok)} pieces but decoder.vocab_size is "
                              f"{cfg.transducer.vocab_size}")
    return tok
