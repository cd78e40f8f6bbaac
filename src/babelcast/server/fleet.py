"""Several models behind one address (`serve --ray`): what each `--model` spec says, the replica count or
autoscaling range, and which model a request names. Light on purpose: the ingress imports it, not torch.

    --model [NAME=]PATH_OR_ID[,precision=fp32|bf16|int8|auto][,replicas=N|MIN-MAX][,device=cpu|cuda]

e.g. `--model nemotron=nvidia/nemotron-3.5-asr-streaming-0.6b,replicas=2-8 --model int8=M.nemo,precision=int8`.
The first model is the default (a request that names none gets it). A deployment of one model answers every
`model` value with it, as a single server does (OpenAI clients send their own model ids); with several, an
unknown name is a `model_not_found` error that lists the names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import PRECISIONS
from .errors import ApiError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a model name: URL, form field and Ray deployment safe
SPEC_KEYS = {"precision": ("auto",) + PRECISIONS, "replicas": None, "device": ("cpu", "cuda")}


@dataclass(frozen=True)
class Replicas:
    """How many replicas serve a model: `low` == `high` is a fixed count, otherwise Ray Serve autoscales
    between them."""

    low: int
    high: int

    @property
    def autoscaled(self) -> bool:
        return self.high > self.low

    def __str__(self) -> str:
        return f"{self.low}-{self.high}" if self.autoscaled else str(self.low)


def parse_replicas(text: str) -> Replicas:
    """`N` or `MIN-MAX` (1 <= MIN <= MAX); ValueError naming the problem."""
    low, dash, high = text.strip().partition("-")
    try:
        replicas = Replicas(int(low), int(high) if dash else int(low))
    except ValueError:
        raise ValueError(f"replicas {text!r}: expected a count N or a range MIN-MAX, e.g. 2 or 1-8") from None
    if replicas.low < 1 or replicas.high < replicas.low:
        raise ValueError(f"replicas {text!r}: need 1 <= MIN <= MAX (a live session cannot wait for a replica to "
                         "load its model, so at least one stays up)")
    return replicas


@dataclass(frozen=True)
class ModelSpec:
    """One `--model`: its name, its file or hub id (None: the bundled demo model), and what it overrides of
    the server-wide --precision, --replicas and --device (None: the server-wide value)."""

    name: str
    source: str | None
    precision: str | None = None
    replicas: Replicas | None = None
    device: str | None = None


def parse_model_spec(text: str, name: str | None = None) -> ModelSpec:
    """`[NAME=]SOURCE[,KEY=VALUE]...` → ModelSpec; `name` (--model-name) names a spec without NAME=. A path
    holding '=' needs NAME= in front; one holding ',' cannot be given. ValueError naming the problem."""
    head, *options = text.split(",")
    given, eq, source = head.partition("=")
    if not (eq and NAME.fullmatch(given)):
        given, source = None, head
    if not source:
        raise ValueError(f"--model {text!r}: no checkpoint; give [NAME=]PATH_OR_HUB_ID")
    fields = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in SPEC_KEYS:
            raise ValueError(f"--model {text!r}: {option!r} is not an option; options are "
                             f"{', '.join(k + '=' for k in SPEC_KEYS)} (a path holding ',' cannot be given)")
        choices = SPEC_KEYS[key]
        if choices is not None and value not in choices:
            raise ValueError(f"--model {text!r}: {key} must be one of {', '.join(choices)}, got {value!r}")
        fields[key] = parse_replicas(value) if key == "replicas" else value
    return ModelSpec(given or name or default_name(source), source, **fields)


def default_name(source: str | None) -> str:
    """A model's name when none is given: its file's name without .nemo (hub id: the repository's name),
    made name-safe."""
    if source is None:
        return "babelcast"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).name.removesuffix(".nemo")).strip("-._")
    return stem[:64] or "model"


def model_specs(texts: list[str], model_name: str | None = None) -> tuple[ModelSpec, ...]:
    """The --model options (none: the bundled demo model) as specs with distinct names; ValueError if two
    share a name or --model-name is given with several."""
    if model_name is not None and len(texts) > 1:
        raise ValueError("--model-name names the one model; with several --model, name each: --model NAME=PATH")
    specs = tuple(parse_model_spec(t, model_name) for t in texts) or (ModelSpec(model_name or "babelcast", None),)
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two models are named {name!r}; name each one: --model NAME=PATH_OR_ID")
    return specs


def pick_model(names: tuple[str, ...], requested: str | None) -> str:
    """The model serving a request that names `requested` (None or empty: the first, the default). With one
    model, any name is that model; with several, an unknown name is ApiError model_not_found."""
    if len(names) == 1 or not requested:
        return names[0]
    if requested not in names:
        raise ApiError("model_not_found", f"unknown model {requested!r}; this server has {', '.join(names)} "
                                          f"(default {names[0]})", "model")
    return requested


def models_body(names: tuple[str, ...] | list[str]) -> dict:
    """GET /v1/models: the OpenAI list of model objects."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "babelcast"}
                                       for name in names]}


def realtime_model(event: dict) -> str | None:
    """The transcription model a Realtime `session.update` (or the beta `transcription_session.update`) names."""
    session = event.get("session")
    if not isinstance(session, dict):
        return None
    if event.get("type") == "transcription_session.update":
        transcription = session.get("input_audio_transcription")
    else:
        audio = session.get("audio")
        audio_in = audio.get("input") if isinstance(audio, dict) else None
        transcription = audio_in.get("transcription") if isinstance(audio_in, dict) else None
    model = transcription.get("model") if isinstance(transcription, dict) else None
    return str(model) if model else None
