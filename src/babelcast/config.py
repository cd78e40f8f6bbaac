"""Frozen model configs, parsed once from a NeMo `model_config.yaml` (spec §1.2).

Nothing here is specific to one checkpoint: every size, flag and context comes from the config
or, where the config is silent, from the state dict (bias presence, CTC head).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

AUTO = "auto"
LOCALE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")  # a canonical locale such as de-DE or haw-US
PRECISIONS = ("fp32", "bf16", "int8")  # inference weight copies (streaming/engine.py, spec §8.9)
DEFAULT_BEAM = 4  # hypotheses of an RNNT beam search by default (boosted streams; bench/boost.py)
MAX_BEAM = 16
BEAM_PRUNE = 8.0  # a label extension more than this (log-prob) behind the best ended hypothesis is dropped
# Log-probability bonus per boosted token when a phrase gives none, per search (bench/boost.py): the beam at 3
# meets the recall target; greedy cannot take a label back, and at 3 it changes words of speech without the
# phrases, so it keeps 2.
DEFAULT_WEIGHT = 3.0
GREEDY_WEIGHT = 2.0


class ConfigError(ValueError):
    """A checkpoint config babelcast cannot run, with the offending key named."""


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (spec §2)."""

    sample_rate_hz: int = 16000
    n_mels: int = 128
    n_fft: int = 512
    win_samples: int = 400
    hop_samples: int = 160
    preemph: float = 0.97
    log_guard: float = 2.0**-24
    mag_power: float = 2.0

    @property
    def frame_ms(self) -> float:
        return 1000.0 * self.hop_samples / self.sample_rate_hz


@dataclass(frozen=True)
class EncoderConfig:
    """Cache-aware FastConformer encoder (spec §3)."""

    feat_in: int
    n_layers: int
    d_model: int
    n_heads: int
    ff_expansion: int
    conv_kernel: int
    conv_norm: str  # "layer_norm" | "batch_norm"
    subsampling_factor: int
    subsampling_channels: int
    xscaling: bool
    use_bias: bool
    att_contexts: tuple[tuple[int, int], ...]  # trained [left, right] pairs; the first is the default
    pos_emb_max_len: int = 5000

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_subsampling_stages(self) -> int:
        return int(math.log2(self.subsampling_factor))

    @property
    def subsampled_feat(self) -> int:
        """Frequency bins after the strided convs: f(F) = floor(F/2) + 1 per stage (spec §3.1)."""
        n = self.feat_in
        for _ in range(self.n_subsampling_stages):
            n = n // 2 + 1
        return n

    @property
    def left_context_frames(self) -> int:
        return self.att_contexts[0][0]


@dataclass(frozen=True)
class PromptConfig:
    """Language prompt: one-hot(num_prompts) after the encoder output → MLP (spec §4)."""

    num_prompts: int
    dictionary: Mapping[str, int]  # locale or alias → prompt index; "auto" included
    # The canonical locales the weights were trained on (model_defaults.trained_locales, a babelcast
    # key; a known release's model card when the file says nothing); None: not known.
    trained_locales: tuple[str, ...] | None = None

    def canonical(self, language: str) -> str | None:
        """'de' / 'DE-de' / 'ja-JA' → the canonical locale of its prompt slot ('ja-JP'); None if unknown."""
        lowered = {k.lower(): v for k, v in self.dictionary.items()}
        index = lowered.get(language.lower())
        if index is None or language.lower() == AUTO:
            return None
        return next((k for k, v in self.dictionary.items() if v == index and LOCALE.match(k)), language)

    @property
    def locales(self) -> tuple[str, ...]:
        """Canonical locales, one per prompt slot: trained ones first, then the rest, each group sorted."""
        slots = {self.canonical(k) for k in self.dictionary if k != AUTO}
        trained = set(self.trained_locales or ())
        return tuple(sorted(slots & trained)) + tuple(sorted(slots - trained))

    @property
    def aliases(self) -> dict[str, str]:
        """Every other accepted name → its canonical locale ('de' → 'de-DE', 'enGB' → 'en-GB')."""
        names = {k: self.canonical(k) for k in self.dictionary if k != AUTO}
        return {k: v for k, v in sorted(names.items()) if k != v}

    def untrained(self, language: str) -> str | None:
        """The canonical locale when it is known not to be trained (worth a warning), else None."""
        locale = self.canonical(language)
        if locale is None or self.trained_locales is None or locale in self.trained_locales:
            return None
        return locale

    def untrained_note(self, language: str) -> str | None:
        """What to tell a user who asks for a locale the model was not trained on; None for a trained one."""
        locale = self.untrained(language)
        if locale is None:
            return None
        return (f"this model was not trained on {locale} (trained: {', '.join(self.trained_locales)}); its "
                f"transcripts will likely be in a trained language")

    def describe(self) -> str:
        """The accepted names for an error message: canonical locales (trained first), then aliases apart."""
        trained = [x for x in self.locales if x in (self.trained_locales or ())]
        others = [x for x in self.locales if x not in trained]
        parts = [f"trained: {', '.join(trained)}; untrained: {', '.join(others)}" if trained
                 else f"locales: {', '.join(others)}"]
        parts.append(f"aliases: {', '.join(f'{a} → {c}' for a, c in self.aliases.items())}")
        return "auto, or " + "; ".join(parts)


@dataclass(frozen=True)
class TransducerConfig:
    """RNNT prediction net + joint (spec §5)."""

    vocab_size: int  # non-blank tokens; blank id == vocab_size
    pred_hidden: int
    pred_layers: int
    joint_hidden: int
    activation: str
    max_symbols: int
    # NeMo puts a Dropout between activation and output only when jointnet.dropout is non-zero, which
    # shifts the output layer's state-dict key (joint_net.2 vs joint_net.1).
    joint_dropout_slot: bool

    @property
    def blank_id(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class ModelConfig:
    features: FeatureConfig
    encoder: EncoderConfig
    transducer: TransducerConfig
    prompt: PromptConfig | None = None
    has_ctc: bool = False
    target: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def _get(cfg: Mapping[str, Any], path: str, default: Any = ...) -> Any:
    """Read a dotted key; a missing required key is a ConfigError naming it."""
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is ...:
                raise ConfigError(f"model_config.yaml has no '{path}'")
            return default
        node = node[part]
    return node


def _feature_config(cfg: Mapping[str, Any]) -> FeatureConfig:
    pre = _get(cfg, "preprocessor")
    sr = int(pre.get("sample_rate", cfg.get("sample_rate", 16000)))
    normalize = str(pre.get("normalize", "NA"))
    if normalize not in ("NA", "None", "none"):
        raise ConfigError(f"preprocessor.normalize={normalize!r}: only 'NA' works for streaming")
    if pre.get("log", True) is False or pre.get("log_zero_guard_type", "add") != "add":
        raise ConfigError("preprocessor: only log features with an additive zero guard are supported")
    if int(pre.get("frame_splicing", 1)) != 1:
        raise ConfigError("preprocessor.frame_splicing != 1 is not supported")
    window = str(pre.get("window", "hann"))
    if window != "hann":
        raise ConfigError(f"preprocessor.window={window!r}: only 'hann' is supported")
    guard = pre.get("log_zero_guard_value", 2.0**-24)
    return FeatureConfig(
        sample_rate_hz=sr,
        n_mels=int(pre.get("features", pre.get("nfilt", 64))),
        n_fft=int(pre.get("n_fft") or 2 ** math.ceil(math.log2(pre.get("window_size", 0.02) * sr))),
        win_samples=int(float(pre.get("window_size", 0.02)) * sr),
        hop_samples=int(float(pre.get("window_stride", 0.01)) * sr),
        preemph=float(pre.get("preemph", 0.97) or 0.0),
        log_guard=float(guard) if not isinstance(guard, str) else 2.0**-24,
        mag_power=float(pre.get("mag_power", 2.0)),
    )


def parse_att_contexts(enc: Mapping[str, Any]) -> tuple[tuple[int, int], ...]:
    """The trained [left, right] list: a single pair or a list of pairs (multi-lookahead)."""
    raw = enc.get("att_context_size", [-1, -1])
    pairs = [raw] if raw and isinstance(raw[0], int) else list(raw)
    out = tuple((int(p[0]), int(p[1])) for p in pairs)
    for left, right in out:
        if left < 0 or right < 0:
            raise ConfigError(f"encoder.att_context_size {[left, right]}: not a cache-aware streaming model")
        if left % (right + 1):
            raise ConfigError(f"encoder.att_context_size {[left, right]}: left must be a multiple of right+1")
    return out


def _encoder_config(cfg: Mapping[str, Any]) -> EncoderConfig:
    enc = _get(cfg, "encoder")
    checks = {
        "subsampling": ("dw_striding",),
        "self_attention_model": ("rel_pos",),
        "att_context_style": ("chunked_limited",),
        "causal_downsampling": (True,),
    }
    for key, allowed in checks.items():
        if enc.get(key) not in allowed:
            raise ConfigError(f"encoder.{key}={enc.get(key)!r}: babelcast supports {allowed}")
    conv_ctx = enc.get("conv_context_size", "causal")
    kernel = int(enc.get("conv_kernel_size", 31))
    if conv_ctx not in ("causal", [kernel - 1, 0]):
        raise ConfigError(f"encoder.conv_context_size={conv_ctx!r}: only causal convolutions stream")
    if enc.get("reduction") or int(enc.get("feat_out", -1)) > 0:
        raise ConfigError("encoder.reduction / feat_out are not supported")
    factor = int(enc.get("subsampling_factor", 8))
    if factor & (factor - 1) or factor < 2:
        raise ConfigError(f"encoder.subsampling_factor={factor}: must be a power of two")
    return EncoderConfig(
        feat_in=int(enc["feat_in"]),
        n_layers=int(enc["n_layers"]),
        d_model=int(enc["d_model"]),
        n_heads=int(enc.get("n_heads", 8)),
        ff_expansion=int(enc.get("ff_expansion_factor", 4)),
        conv_kernel=kernel,
        conv_norm=str(enc.get("conv_norm_type", "batch_norm")),
        subsampling_factor=factor,
        subsampling_channels=int(enc.get("subsampling_conv_channels", 256)),
        xscaling=bool(enc.get("xscaling", True)),
        use_bias=bool(enc.get("use_bias", True)),
        att_contexts=parse_att_contexts(enc),
        pos_emb_max_len=int(enc.get("pos_emb_max_len", 5000)),
    )


def _prompt_config(cfg: Mapping[str, Any]) -> PromptConfig | None:
    defaults = cfg.get("model_defaults", {}) or {}
    if not defaults.get("initialize_prompt_feature", False):
        return None
    # YAML 1.1 reads the key `no` (Norwegian) as False: normalize every key to str (spec §1.1).
    raw = defaults.get("prompt_dictionary") or {}
    dictionary = {_yaml_key(k): int(v) for k, v in raw.items()}
    if AUTO not in dictionary:
        raise ConfigError("model_defaults.prompt_dictionary has no 'auto' entry")
    prompt = PromptConfig(num_prompts=int(defaults.get("num_prompts", 128)), dictionary=dictionary)
    trained = defaults.get("trained_locales")
    return prompt if trained is None else with_trained_locales(prompt, trained)


def with_trained_locales(prompt: PromptConfig, locales: Any) -> PromptConfig:
    """`prompt` with its trained locales set, each checked against the prompt dictionary."""
    from dataclasses import replace

    if not isinstance(locales, (list, tuple)):
        raise ConfigError(f"model_defaults.trained_locales must be a list of locales, got {locales!r}")
    unknown = [x for x in locales if prompt.canonical(str(x)) is None]
    if unknown:
        raise ConfigError(f"model_defaults.trained_locales names locales the prompt dictionary lacks: {unknown}")
    return replace(prompt, trained_locales=tuple(sorted({prompt.canonical(str(x)) for x in locales})))


def _yaml_key(key: Any) -> str:
    if key is False:
        return "no"
    if key is True:
        return "yes"
    return str(key)


def _transducer_config(cfg: Mapping[str, Any]) -> TransducerConfig:
    vocab = int(_get(cfg, "decoder.vocab_size"))
    greedy = _get(cfg, "decoding.greedy", {}) or {}
    max_symbols = greedy.get("max_symbols", greedy.get("max_symbols_per_step", 10))
    return TransducerConfig(
        vocab_size=vocab,
        pred_hidden=int(_get(cfg, "decoder.prednet.pred_hidden")),
        pred_layers=int(_get(cfg, "decoder.prednet.pred_rnn_layers", 1)),
        joint_hidden=int(_get(cfg, "joint.jointnet.joint_hidden")),
        activation=str(_get(cfg, "joint.jointnet.activation", "relu")),
        max_symbols=int(max_symbols) if max_symbols else 10,
        joint_dropout_slot=bool(float(_get(cfg, "joint.jointnet.dropout", 0.0) or 0.0)),
    )


def parse_model_config(cfg: Mapping[str, Any]) -> ModelConfig:
    """Build the frozen ModelConfig from a NeMo model_config.yaml mapping."""
    return ModelConfig(
        features=_feature_config(cfg),
        encoder=_encoder_config(cfg),
        transducer=_transducer_config(cfg),
        prompt=_prompt_config(cfg),
        has_ctc="aux_ctc" in cfg,
        target=str(cfg.get("target", "")),
        raw=cfg,
    )
