"""Set up a training session: from scratch (`babelcast train`) or from a `.nemo` (`babelcast finetune`)."""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint.hub import resolve_model_path
from ..checkpoint.load import _tokenizer, _with_state_dict_facts, load_state, tokenizer_proto
from ..checkpoint.nemo_archive import NemoArchive, read_nemo
from ..checkpoint.tokenizer import Tokenizer
from ..config import ModelConfig, PromptConfig, parse_model_config
from ..manifest import read_manifest
from ..model.asr import AsrModel
from .augment import AugmentConfig
from .config import TrainConfig, parse_train_config
from .data import load_utterances, tagged_text
from .export import export_like, export_nemo
from .loop import Trainer
from .tokenizer import TokenizerFiles, tags_in, train_tokenizer


def with_vocab(model_section: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
    """The NeMo model section with the vocabulary size the tokenizer gives."""
    out = copy.deepcopy(dict(model_section))
    out.setdefault("decoder", {})["vocab_size"] = vocab_size
    out.setdefault("joint", {})["num_classes"] = vocab_size
    return out


def training_texts(cfg: TrainConfig, prompt: PromptConfig | None) -> list[str]:
    """Every transcript the tokenizer learns from, as it will be trained (language tag appended on
    prompt models): the training manifests' and those of tokenizer.extra_texts."""
    paths = [source.path for source in cfg.data.train] + list(cfg.tokenizer.extra_texts)
    texts = (tagged_text(entry, prompt, cfg.data.default_lang, path)[0]
             for path in paths for entry in read_manifest(path))
    return [text for text in texts if text]  # empty transcripts (non-speech clips) teach no pieces


def prepare_tokenizer(cfg: TrainConfig, start_proto: bytes | None = None) -> TokenizerFiles:
    """The run's tokenizer: kept in OUT_DIR/tokenizer once made, so a resumed run reuses it; a new run
    started from a model (start_proto, trainer.init_from) takes that model's."""
    folder = cfg.out_dir / "tokenizer"
    if (folder / "tokenizer.model").is_file():
        return TokenizerFiles.load(folder)
    if cfg.tokenizer.model_path:
        files = TokenizerFiles.from_model(Path(cfg.tokenizer.model_path).read_bytes())
    elif start_proto is not None:
        files = TokenizerFiles.from_model(start_proto)
    else:
        prompt = parse_model_config(with_vocab(cfg.model, 1)).prompt
        texts = training_texts(cfg, prompt)
        tags = [t for t in tags_in(texts) if prompt is None or t[1:-1] in prompt.dictionary]
        files = train_tokenizer(texts, cfg.tokenizer.vocab_size, tags, cfg.tokenizer.character_coverage,
                                cfg.trainer.seed)
    files.save(folder)
    return files


def init_model(model_cfg: ModelConfig, seed: int) -> AsrModel:
    """Fresh weights: PyTorch's default inits, LSTM forget-gate bias 1 (NeMo's forget_gate_bias)."""
    torch.manual_seed(seed)
    model = AsrModel(model_cfg)
    lstm = model.decoder.prediction["dec_rnn"].lstm
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            getattr(lstm, f"bias_ih_l{layer}").chunk(4)[1].fill_(1.0)
            getattr(lstm, f"bias_hh_l{layer}").chunk(4)[1].fill_(0.0)
    return model


def start_from(model: AsrModel, archive: NemoArchive, path: Path, layers: tuple[int, ...] | None = None) -> None:
    """Load a .nemo's weights into a fresh model of the same config and tokenizer (see check_init_from); a CTC
    head its export left out (trainer.export_ctc: false) keeps its fresh weights; `layers` (trainer.init_layers)
    says which of the .nemo's encoder layers each of the model's starts from."""
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith("ctc_decoder.")}
    state = archive.state_dict if layers is None else restacked(archive.state_dict, layers, model.cfg.encoder.n_layers)
    load_state(model, {**fresh, **state}, str(path))


class StartError(ValueError):
    """trainer.init_from / init_layers cannot start this run (`babelcast train` says so in one line)."""


def restacked(state: Mapping[str, torch.Tensor], layers: tuple[int, ...], n_layers: int) -> dict[str, torch.Tensor]:
    """`state` with encoder layer i taken from its layer layers[i]: a deeper (or shallower) model started from
    a trained one's layers (progressive stacking: a copied layer starts near what its neighbours learned)."""
    prefix = "encoder.layers."
    have = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if len(layers) != n_layers or not all(type(j) is int and j in have for j in layers):
        raise StartError(f"trainer.init_layers {list(layers)}: give one of init_from's encoder layers "
                         f"(0-{max(have)}) for each of the model's {n_layers}")
    out = {k: v for k, v in state.items() if not k.startswith(prefix)}
    for i, j in enumerate(layers):  # a layer copied twice shares its tensors here: load_state copies them
        src = f"{prefix}{j}."
        out.update({f"{prefix}{i}.{k[len(src):]}": v for k, v in state.items() if k.startswith(src)})
    return out


def starting_model(cfg: TrainConfig) -> tuple[Path | None, NemoArchive | None, bytes | None]:
    """trainer.init_from's path, archive and tokenizer proto (all None for a run from fresh weights)."""
    if not cfg.trainer.init_from:
        return None, None, None
    path = resolve_model_path(cfg.trainer.init_from)
    archive = read_nemo(path)
    return path, archive, tokenizer_proto(archive, path)


def check_init_from(cfg: TrainConfig, files: TokenizerFiles,
                    start: tuple[Path | None, NemoArchive | None, bytes | None]) -> None:
    """The run can start from trainer.init_from (`start`: starting_model's answer): it has the run's tokenizer
    (`files`), and trainer.init_layers names one of its layers for each of this model's."""
    path, archive, proto = start
    if archive is not None and proto != files.model:
        raise StartError(f"{path}: trainer.init_from has another tokenizer than this run's OUT_DIR/tokenizer")
    if cfg.trainer.init_layers is None:
        return
    if archive is None:
        raise StartError("trainer.init_layers needs trainer.init_from or --init-from "
                         "(the model whose layers it copies)")
    restacked(archive.state_dict, cfg.trainer.init_layers, int(cfg.model["encoder"]["n_layers"]))


def fingerprint(path: Path) -> str:
    """The starting model's SHA-256 (then its file name, for messages): a resumed run must continue from the
    same weights, wherever the file is."""
    with open(path, "rb") as f:
        return f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()[:16]} {path.name}"


def starting_fingerprint(cfg: TrainConfig) -> str | None:
    """trainer.init_from's fingerprint (None for a run from fresh weights)."""
    return fingerprint(resolve_model_path(cfg.trainer.init_from)) if cfg.trainer.init_from else None


def checked_start(cfg: TrainConfig) -> tuple[tuple[Path | None, NemoArchive | None, bytes | None], TokenizerFiles]:
    """starting_model's answer and the run's tokenizer, the one checked against the other (check_init_from)."""
    starting = starting_model(cfg)
    files = prepare_tokenizer(cfg, starting[2])
    check_init_from(cfg, files, starting)
    return starting, files


def run_tokenizer(cfg: TrainConfig) -> TokenizerFiles:
    """The tokenizer `babelcast train` uses: OUT_DIR's, else trainer.init_from's, else trained on the data;
    a start that cannot work (StartError) is refused here, before train/parallel.py spawns any process."""
    return checked_start(cfg)[1]


def trainer_from_scratch(cfg: TrainConfig) -> Trainer:
    """Tokenizer, model and data of a `babelcast train` run (weights fresh or from OUT_DIR/last.pt)."""
    (start_path, start, _), files = checked_start(cfg)
    vocab = len(Tokenizer(files.model))
    section = with_vocab(cfg.model, vocab)
    cfg = replace(cfg, model=section)
    model_cfg = parse_model_config(section)
    model = init_model(model_cfg, cfg.trainer.seed)
    if start is not None:
        start_from(model, start, start_path, cfg.trainer.init_layers)
    tok = Tokenizer(files.model, model_cfg.prompt.dictionary if model_cfg.prompt else ())
    t = cfg.trainer
    return _trainer(cfg, model, tok, lambda path: export_nemo(path, model, section, files, t.ctc_weight, t.export_ctc),
                    start=fingerprint(start_path) if start_path else None)


def _trainer(cfg: TrainConfig, model: AsrModel, tok: Tokenizer, export, export_path: Path | None = None,
             start: str | None = None) -> Trainer:
    prompt = model.cfg.prompt
    train = load_utterances(cfg.data.train, tok, prompt, cfg.data)
    val = load_utterances(cfg.data.val, tok, prompt, cfg.data)
    return Trainer(cfg, model, tok, train, val, export, export_path, start)


@dataclass(frozen=True)
class FinetuneOptions:
    model: str  # .nemo path or hub id
    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    out: str = "finetuned.nemo"
    lang: str | None = None  # language of entries without target_lang (also their tag)
    steps: int = 1000
    lr: float = 1e-4
    warmup_steps: int | None = None  # default: 10 % of the steps
    batch_duration_s: float = 120.0
    precision: str = "bf16"
    prompt_mode: str = "unified"
    val_latency_ms: int | None = None
    joint_chunk: int = 2  # NeMo's fused_batch_size: a 13k-vocab joint is large
    augment: bool = True
    seed: int = 1234


def finetune_config(opts: FinetuneOptions, base_config: Mapping[str, Any]) -> TrainConfig:
    """The training config of a fine-tuning run: cosine LR, the base model's SpecAugment and dropout."""
    out = Path(opts.out)
    spec = {k: v for k, v in (base_config.get("spec_augment") or {}).items()
            if k in ("freq_masks", "freq_width", "time_masks", "time_width")}
    raw = {
        "model": base_config,
        "data": {"train": list(opts.train), "val": list(opts.val), "prompt_mode": opts.prompt_mode,
                 "default_lang": opts.lang, "batch_duration_s": opts.batch_duration_s},
        "augment": spec if opts.augment else _no_augment(),
        "optim": {"lr": opts.lr, "schedule": "cosine", "min_lr": opts.lr / 100,
                  "warmup_steps": opts.warmup_steps if opts.warmup_steps is not None else max(1, opts.steps // 10)},
        "trainer": {"out_dir": str(out.with_name(out.stem + ".train")), "max_steps": opts.steps,
                    "precision": opts.precision, "val_latency_ms": opts.val_latency_ms,
                    "joint_chunk": opts.joint_chunk, "seed": opts.seed,
                    "val_every": max(1, opts.steps // 5), "checkpoint_every": max(1, opts.steps // 5)},
    }
    return parse_train_config(raw)


def _no_augment() -> dict[str, Any]:
    off = AugmentConfig.off()
    return {"freq_masks": off.freq_masks, "time_masks": off.time_masks, "speed_rates": list(off.speed_rates),
            "noise_prob": off.noise_prob, "dither": off.dither}


def trainer_for_finetune(opts: FinetuneOptions) -> Trainer:
    """Base weights and tokenizer from the `.nemo`; the result keeps the base's config and artifacts."""
    path = resolve_model_path(opts.model)
    archive = read_nemo(path)
    model_cfg = _with_state_dict_facts(parse_model_config(archive.config), archive.state_dict)
    model = AsrModel(model_cfg)
    load_state(model, archive.state_dict, str(path))
    tok = _tokenizer(archive, model_cfg, path)
    cfg = finetune_config(opts, archive.config)
    base = replace(archive, state_dict={})  # exports need the config and artifacts, not the old weights
    return _trainer(cfg, model, tok, lambda out: export_like(out, model, base), Path(opts.out), fingerprint(path))
