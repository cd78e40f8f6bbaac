"""Batch transcription across a Ray cluster with Ray Data: inputs are cut into units of about `unit_s` audio
seconds (consecutive inputs of one language and latency), a pool of actors each loading the model once
transcribes the units with `Recognizer.transcribe` (the single-process command's own call), and the results
come back in input order as each unit finishes."""
from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .cluster import ClusterError, connect


@dataclass(frozen=True)
class WorkItem:
    """One input as the actors need it: where its audio is, in which language and at which latency."""

    index: int  # position in the input, to put results back in order
    path: str
    language: str
    latency_ms: int | None
    offset_s: float
    duration_s: float | None
    seconds: float  # audio length (header or manifest), for cutting units by duration


@dataclass(frozen=True)
class Outcome:
    """What an actor returns for one input: a transcript, or the error that kept it from one."""

    index: int
    transcript: object | None
    error: str | None
    seconds: float
    compute_s: float = 0.0  # its share (by length) of its unit's decoding time


def units_by_duration(items: list[WorkItem], unit_s: float) -> list[list[WorkItem]]:
    """Consecutive runs of one language and latency, cut where a unit would pass unit_s seconds (a longer input
    alone)."""
    units: list[list[WorkItem]] = []
    total = 0.0
    for item in items:
        head = units[-1][0] if units else None
        if head is None or (head.language, head.latency_ms) != (item.language, item.latency_ms) \
                or total + item.seconds > unit_s:
            units.append([])
            total = 0.0
        units[-1].append(item)
        total += item.seconds
    return units


class Transcriber:
    """A Ray Data actor: loads the model once, then transcribes one unit per call."""

    def __init__(self, model: str | None, device: str, options: dict):
        from babelcast.recognizer import load_model

        self.recognizer = load_model(model, device)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        """Ray Data's batch of pickled units → the same batch of pickled outcome lists."""
        return {"outcomes": [pickle.dumps(self.transcribe(pickle.loads(u))) for u in batch["unit"]]}

    def transcribe(self, unit: list[WorkItem]) -> list[Outcome]:
        """Load each input's audio (a failure is that input's outcome) and transcribe the rest in one call."""
        from babelcast.audio.io import AudioError, load_audio

        outcomes, audios, loaded = [], [], []
        for item in unit:
            try:
                audios.append(load_audio(item.path, item.offset_s, item.duration_s))
                loaded.append(item)
            except AudioError as e:
                outcomes.append(Outcome(item.index, None, str(e), item.seconds))
        if audios:
            start = time.perf_counter()
            transcripts = self.recognizer.transcribe(audios, language=unit[0].language,
                                                     latency_ms=unit[0].latency_ms, **self.options)
            share = (time.perf_counter() - start) / sum(len(a) for a in audios)
            outcomes += [Outcome(i.index, t, None, i.seconds, share * len(a))
                         for i, t, a in zip(loaded, transcripts, audios)]
        return sorted(outcomes, key=lambda o: o.index)


def transcribe_on_ray(address: str, model: str | None, device: str, items: list[WorkItem], options: dict,
                      unit_s: float, actors: int | None = None) -> Iterator[Outcome]:
    """Transcribe `items` on the cluster at `address`; outcomes in input order, each unit's as soon as it and
    the units before it are done. `options` are Recognizer.transcribe's keyword arguments but the language and
    latency, which each item has."""
    import ray
    import ray.data

    units = units_by_duration(items, unit_s)
    if not units:  # nothing left to do (a finished run, resumed): no cluster needed
        return
    connect(address)
    resource = "GPU" if device == "cuda" else "CPU"
    actors = min(actors or max(1, int(ray.cluster_resources().get(resource, 1))), len(units))
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the CLI shows its own, in audio-hours
    dataset = ray.data.from_items([{"unit": pickle.dumps(u)} for u in units], override_num_blocks=len(units))
    results = dataset.map_batches(Transcriber, batch_size=1, batch_format="numpy",
                                  fn_constructor_kwargs={"model": model, "device": device, "options": options},
                                  compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                                  num_gpus=int(resource == "GPU"))
    try:
        for row in results.iter_rows():
            yield from pickle.loads(row["outcomes"])
    except ray.exceptions.RayError as e:  # an actor could not load the model, a node left for good...
        raise ClusterError(f"the job failed on the cluster: {_last_line(e)}") from None


def _last_line(error: Exception) -> str:
    """The line of a Ray error that says what went wrong (the last of the remote traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
