"""The `babelcast` command line (also `python -m babelcast`).

Each subcommand is one entry of COMMANDS: a function adding its options and a
function running it. Exit codes: 0 success, 1 some input failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from babelcast.argtypes import add_beam_argument, add_boost_arguments, boost_phrases
from babelcast.argtypes import positive_int as _positive_int
from babelcast.audio.io import AudioError, load_audio
from babelcast.cli_errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, describe, exit_code_of, load_recognizer
from babelcast.decoding.result import Transcript
from babelcast.errors import UnsupportedLanguage
from babelcast.formats import to_json_dict, to_srt, to_text, to_vtt
from babelcast.manifest import ManifestError, read_manifest

LATENCIES_MS = (80, 160, 320, 560, 1120)
OUTPUT_FORMATS = ("text", "json", "srt", "vtt")
OUTPUT_EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}
MANIFEST_SUFFIXES = (".jsonl", ".json")
PROGRESS_MIN_INPUTS = 5  # show a progress bar from this many inputs...
PROGRESS_MIN_AUDIO_S = 60.0  # ...or beyond this much audio
PROGRESS_FORMAT = "{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}{postfix}]"
CHUNK_BATCHES = 4  # audio of batch_size * CHUNK_BATCHES inputs is held in memory at once


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, how it declares its options and how it runs."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per registered command."""
    from babelcast import __version__

    parser = argparse.ArgumentParser(prog="babelcast", description="Real-time multilingual speech recognition.")
    parser.add_argument("--version", action="version", version=f"babelcast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        subparser = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = next(c for c in COMMANDS if c.name == args.command)
    return reported(lambda: command.run(args))


def reported(work: Callable[[], int]) -> int:
    """Run a command; an ordinary mistake becomes one `error:` line and its exit code, never a traceback."""
    try:
        return work()
    except BrokenPipeError:  # `babelcast transcribe ... | head`: the reader left; nothing more to say
        _silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = exit_code_of(e)
        if code is None:
            raise  # not an ordinary mistake: a bug, whose traceback is wanted
        _print_error(describe(e))
        return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not raise BrokenPipeError again."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---------------------------------------------------------------- transcribe


@dataclass(frozen=True)
class _Input:
    """One utterance to transcribe: a file, or a span of one named by a manifest line."""

    source: str  # how outputs and errors name it
    path: Path
    language: str  # "auto" or a locale
    language_origin: str  # where the language came from, for error messages
    offset_s: float = 0.0
    duration_s: float | None = None
    reference: str | None = None  # the manifest's text, if any


def _add_transcribe_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `babelcast transcribe`."""
    parser.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files, or NeMo manifests (.jsonl/.json)")
    parser.add_argument("--model", help="checkpoint path or Hugging Face id (default: babelcast.DEFAULT_MODEL)")
    parser.add_argument(
        "--lang", help="locale such as en-US, or auto (default: the manifest's target_lang/lang, else auto)"
    )
    parser.add_argument(
        "--latency", type=int, metavar="MS", help=f"attention context in ms: {'|'.join(map(str, LATENCIES_MS))}"
    )
    parser.add_argument("--mode", choices=("offline", "streaming"), default="offline")
    parser.add_argument("--decoder", choices=("rnnt", "ctc"), default="rnnt",
                        help="ctc: the CTC head of a hybrid RNNT+CTC checkpoint, offline or streaming")
    parser.add_argument("--output", choices=OUTPUT_FORMATS, default="text")
    parser.add_argument("--keep-lang-tags", action="store_true", help="keep language tags in the text")
    parser.add_argument("--batch-size", type=_positive_int, default=8, metavar="N")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--output-dir", type=Path, metavar="DIR", help="write one <stem>.<format> file per input into DIR"
    )
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a TTY")
    add_boost_arguments(parser)
    add_beam_argument(parser)
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="append one JSON line per input to FILE instead of printing; inputs already there are "
                             "skipped, so rerunning an interrupted command continues it")
    cluster = parser.add_argument_group("on a Ray cluster (the ray extra; docs/scaling.md)")
    cluster.add_argument("--ray", metavar="ADDRESS",
                         help="transcribe on the Ray cluster at HOST:PORT; auto joins RAY_ADDRESS, local starts one")
    cluster.add_argument("--actors", type=_positive_int, metavar="N",
                         help="model copies on the cluster (default: one per CPU, or per GPU with --device cuda)")
    cluster.add_argument("--unit-seconds", type=float, default=600.0, metavar="S",
                         help="audio seconds per unit of work sent to an actor (default 600)")


def _cmd_transcribe(args: argparse.Namespace) -> int:
    """Load the model named by --model and transcribe the inputs."""
    return run_transcribe(args, load_recognizer(args.model, args.device))


def run_transcribe(args: argparse.Namespace, recognizer) -> int:
    """Transcribe every input with `recognizer` (or, with --ray, on a cluster), print or write the results in
    input order, return the exit code."""
    try:
        args.boost = boost_phrases(args)
    except ValueError as e:
        raise CliError(str(e)) from None
    inputs, failures = _collect_inputs(args.audio, args.lang)
    _check_languages(inputs, recognizer)
    sink = _ResultFile(args.out) if args.out else _OutputWriter(args.output, args.output_dir,
                                                                several=len(inputs) > 1)
    todo = [i for i, item in enumerate(inputs) if not sink.done(item)]
    seconds = _input_seconds(inputs)
    with _progress_bar(args, [seconds[i] for i in todo]) as bar:
        if args.ray:
            results = _results_on_ray(args, recognizer, inputs, todo, seconds, bar)
        else:
            results = _results_here(args, recognizer, inputs, todo, seconds, bar)
        for i, transcript in results:
            if transcript is None or not sink.write(inputs[i], transcript):
                failures += 1
    return EXIT_FAILED if failures else EXIT_OK


def _results_here(args: argparse.Namespace, recognizer, inputs: list[_Input], todo: list[int],
                  seconds: list[float], bar: tqdm) -> Iterator[tuple[int, Transcript | None]]:
    """Transcribe in this process: one recognizer call per language and chunk; (index, transcript or None
    for a failed input) in input order, each as soon as the inputs before it are done."""
    results: dict[int, Transcript | None] = {}
    order = iter(todo)
    next_to_write = next(order, None)
    for language, indices in _group_by_language([inputs[i] for i in todo], todo).items():
        for chunk in _chunks(indices, args.batch_size * CHUNK_BATCHES):
            audios, loaded = [], []
            for i in chunk:
                try:
                    audios.append(load_audio(inputs[i].path, inputs[i].offset_s, inputs[i].duration_s))
                    loaded.append(i)
                except AudioError as e:
                    _print_error(str(e))
                    results[i] = None
                    bar.update(seconds[i])
            if audios:
                progress = _ChunkProgress(bar, [seconds[i] for i in loaded])
                try:
                    transcripts = _transcribe(recognizer, audios, language, args, progress=progress.advance)
                except ValueError as e:  # the recognizer rejects an option (latency, decoder...)
                    raise CliError(str(e)) from None
                progress.finish()
                results.update(zip(loaded, transcripts))
            while next_to_write in results:  # in input order, as soon as possible
                yield next_to_write, results.pop(next_to_write)
                next_to_write = next(order, None)


def _results_on_ray(args: argparse.Namespace, recognizer, inputs: list[_Input], todo: list[int],
                    seconds: list[float], bar: tqdm) -> Iterator[tuple[int, Transcript | None]]:
    """Transcribe on the Ray cluster named by --ray (babelcast.scale.batch); the options are checked here
    first, so a bad one fails before the cluster does any work."""
    import time

    from babelcast.scale.batch import WorkItem, transcribe_on_ray

    options = _transcribe_options(args)
    for language in {inputs[i].language for i in todo}:
        try:
            recognizer.transcribe([], language=language, **options)
        except ValueError as e:
            raise CliError(str(e)) from None
    latency_ms = options.pop("latency_ms")  # each work item carries it
    items = [WorkItem(i, str(inputs[i].path), inputs[i].language, latency_ms, inputs[i].offset_s,
                      inputs[i].duration_s, seconds[i]) for i in todo]
    start, done_s = time.perf_counter(), 0.0
    for outcome in transcribe_on_ray(args.ray, args.model, args.device, items, options, args.unit_seconds,
                                     args.actors):
        if outcome.error is not None:
            _print_error(outcome.error)
        done_s += outcome.seconds
        bar.update(outcome.seconds)
        bar.set_postfix_str(f"{done_s / 3600:.3f} audio-h, {done_s / (time.perf_counter() - start):.1f}x real time",
                            refresh=False)
        yield outcome.index, outcome.transcript


def _transcribe(recognizer, audios: list, language: str, args: argparse.Namespace, progress) -> list[Transcript]:
    """One recognizer call with the command line's decoding options."""
    return recognizer.transcribe(audios, language=language, progress=progress, **_transcribe_options(args))


def _transcribe_options(args: argparse.Namespace) -> dict:
    """Recognizer.transcribe's decoding options from the command line (the same here and on a cluster)."""
    return {"latency_ms": args.latency, "mode": args.mode, "decoder": args.decoder,
            "keep_lang_tags": args.keep_lang_tags, "batch_size": args.batch_size, "boost": args.boost,
            "beam_size": args.beam_size}


def _collect_inputs(arguments: list[str], lang: str | None) -> tuple[list[_Input], int]:
    """Expand manifest arguments into their entries; returns the inputs and the number of bad manifests."""
    inputs: list[_Input] = []
    failures = 0
    for argument in arguments:
        if not argument.lower().endswith(MANIFEST_SUFFIXES):
            inputs.append(_Input(argument, Path(argument), lang or "auto", "--lang"))
            continue
        try:
            entries = read_manifest(argument)
        except ManifestError as e:
            _print_error(str(e))
            failures += 1
            continue
        if not entries:
            _print_error(f"{argument}: manifest has no entries")
            failures += 1
        for entry in entries:
            language, origin = (lang, "--lang") if lang else (entry.language or "auto", f"{argument}:{entry.line}")
            inputs.append(
                _Input(
                    str(entry.audio_path),
                    entry.audio_path,
                    language,
                    origin,
                    offset_s=entry.offset_s,
                    duration_s=entry.duration_s,
                    reference=entry.text,
                )
            )
    return inputs, failures


def _check_languages(inputs: list[_Input], recognizer) -> None:
    """Check every requested language up front, so a bad one fails before any audio is decoded; warn once per
    locale the model was not trained on (it would transcribe in a language it knows, silently)."""
    warned: set[str] = set()
    for item in {i.language: i for i in inputs if i.language != "auto"}.values():
        try:
            note = recognizer.language_note(item.language)
        except UnsupportedLanguage as e:
            raise CliError(f"{item.language_origin}: {e}") from None
        if note and note not in warned:  # the note names the canonical locale: once per locale
            warned.add(note)
            tqdm.write(f"warning: {note}. Use a trained locale or auto", file=sys.stderr)


def _group_by_language(inputs: list[_Input], indices: list[int]) -> dict[str, list[int]]:
    """The indices of `inputs` per language, languages in order of first appearance (one recognizer call each)."""
    groups: dict[str, list[int]] = {}
    for i, item in zip(indices, inputs):
        groups.setdefault(item.language, []).append(i)
    return groups


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    """Consecutive slices of at most `size` indices, to bound the audio held in memory."""
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _progress_bar(args: argparse.Namespace, seconds: list[float]) -> tqdm:
    """The bar in audio seconds (its postfix on a cluster: audio-hours done and the speed in real time)."""
    return tqdm(total=round(sum(seconds), 1), unit="audio-s", file=sys.stderr,
                disable=not _show_progress(args, seconds), bar_format=PROGRESS_FORMAT)


def _show_progress(args: argparse.Namespace, seconds: list[float]) -> bool:
    """A bar for long jobs only, and only on a terminal unless --progress asks for it."""
    if not (args.progress or sys.stderr.isatty()):
        return False
    return len(seconds) >= PROGRESS_MIN_INPUTS or sum(seconds) > PROGRESS_MIN_AUDIO_S


def _input_seconds(inputs: list[_Input]) -> list[float]:
    """Audio length of each input from its manifest duration or file header (unreadable files count 0)."""
    return [_audio_seconds(item) for item in inputs]


def _audio_seconds(item: _Input) -> float:
    """One input's audio length in seconds, without decoding it."""
    if item.duration_s is not None:
        return item.duration_s
    try:
        return max(0.0, sf.info(str(item.path)).duration - item.offset_s)
    except (sf.LibsndfileError, OSError):
        return 0.0


class _ChunkProgress:
    """Advances the bar by the audio seconds the recognizer reports transcribed (block by block within a
    long file), then settles the chunk at its inputs' header durations, which the bar's total counts."""

    def __init__(self, bar: tqdm, seconds: list[float]):
        self.bar, self.total_s = bar, sum(seconds)
        self.shown_s = 0.0  # what this chunk has added to the bar

    def advance(self, done_s: float) -> None:
        """The recognizer's progress callback: done_s audio seconds of this chunk are transcribed."""
        self._show(min(done_s, self.total_s))

    def finish(self) -> None:
        """The chunk is done: count whatever the reports left out."""
        self._show(self.total_s)

    def _show(self, done_s: float) -> None:
        step_s = round(done_s - self.shown_s, 1)
        if step_s > 0:
            self.bar.update(step_s)
            self.shown_s += step_s


class _OutputWriter:
    """Sends each transcript where --output and --output-dir say: stdout, or one file per input."""

    def __init__(self, output_format: str, output_dir: Path | None, several: bool):
        self.output_format = output_format
        self.output_dir = output_dir
        self.several = several
        self.to_files = output_dir is not None or (several and output_format in ("srt", "vtt"))
        self._written: set[Path] = set()

    def done(self, item: _Input) -> bool:
        """Nothing is done before a run that writes to stdout or to files of its own."""
        return False

    def write(self, item: _Input, transcript: Transcript) -> bool:
        """Render and emit one result; False (after printing why) when its file cannot be written."""
        if not self.to_files:
            _print_line(self._render_line(item, transcript))
            return True
        path = self._file_for(item)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._render_file(item, transcript), encoding="utf-8")
        except OSError as e:
            _print_error(f"{path}: cannot write output ({e.strerror or e})")
            return False
        _print_line(f"{item.source} → {path}")  # files appear where the user did not look: say where
        return True

    def _render_line(self, item: _Input, transcript: Transcript) -> str:
        """What stdout gets for one input (no trailing newline)."""
        if self.output_format == "text":
            text = to_text(transcript)
            return f"{item.source}: {text}" if self.several else text
        if self.output_format == "json":
            return _json_line(item, transcript)
        return self._render_file(item, transcript).rstrip("\n")

    def _render_file(self, item: _Input, transcript: Transcript) -> str:
        """The content of the output file for one input."""
        if self.output_format == "text":
            return to_text(transcript) + "\n"
        if self.output_format == "json":
            return json.dumps(_json_record(item, transcript), ensure_ascii=False, indent=2) + "\n"
        return to_srt(transcript) if self.output_format == "srt" else to_vtt(transcript)

    def _file_for(self, item: _Input) -> Path:
        """<stem>.<ext> in --output-dir (else next to the audio), suffixed -2, -3... if already used this run."""
        folder = self.output_dir if self.output_dir is not None else item.path.parent
        extension = OUTPUT_EXTENSIONS[self.output_format]
        path = folder / f"{item.path.stem}{extension}"
        count = 1
        while path in self._written:
            count += 1
            path = folder / f"{item.path.stem}-{count}{extension}"
        self._written.add(path)
        return path


class _ResultFile:
    """--out FILE: one JSON line per input, appended and flushed as each is done; the inputs whose lines a
    previous run finished are skipped, so an interrupted run continues where it stopped."""

    def __init__(self, path: Path):
        self.finished = _finished_sources(path)
        try:
            self.file = path.open("a", encoding="utf-8")
        except OSError as e:
            raise CliError(f"{path}: cannot write output ({e.strerror or e})", EXIT_FAILED) from None

    def done(self, item: _Input) -> bool:
        """Whether a previous run finished this input (each finished line accounts for one input)."""
        key = (item.source, item.offset_s)
        if self.finished.get(key, 0) == 0:
            return False
        self.finished[key] -= 1
        return True

    def write(self, item: _Input, transcript: Transcript) -> bool:
        """Append one result line and flush it, so a kill loses at most the line being written."""
        self.file.write(_json_line(item, transcript) + "\n")
        self.file.flush()
        return True


def _finished_sources(path: Path) -> dict[tuple[str, float], int]:
    """How many finished lines each (source, offset) has in a results file; a last line cut short by a kill is
    removed from the file."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text, encoding="utf-8")
    counts: dict[tuple[str, float], int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
            key = (record["source"], float(record.get("offset_s", 0.0)))
        except (ValueError, KeyError, TypeError):
            raise CliError(f"{path}:{n}: not a results line of babelcast transcribe --out; use another file",
                           EXIT_FAILED) from None
        counts[key] = counts.get(key, 0) + 1
    return counts


def _json_line(item: _Input, transcript: Transcript) -> str:
    """One input's JSON object on one line (stdout with --output json, and --out files)."""
    return json.dumps(_json_record(item, transcript), ensure_ascii=False)


def _json_record(item: _Input, transcript: Transcript) -> dict:
    """The JSON object for one input: the transcript plus the manifest's span and reference text."""
    record = to_json_dict(transcript, item.source)
    if item.offset_s:
        record["offset_s"] = item.offset_s
    if item.reference is not None:
        record["reference"] = item.reference
    return record


# ---------------------------------------------------------------- helpers shared by subcommands


def _print_line(line: str) -> None:
    """Print a result line to stdout without breaking a progress bar on stderr; flushed, so a pipe gets each
    line as it is ready (and a closed pipe is noticed here, not at exit)."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _print_error(message: str) -> None:
    """Print `error: <message>` to stderr without breaking a progress bar."""
    tqdm.write(f"error: {message}", file=sys.stderr)


from babelcast.data.cli import add_data_arguments, run_data  # noqa: E402  (light: no torch at import)
from babelcast.eval.cli import add_eval_arguments, run_eval  # noqa: E402
from babelcast.server.client import add_stream_arguments, run_stream  # noqa: E402
from babelcast.cli_serve import add_serve_arguments, run_serve  # noqa: E402
from babelcast.train.commands import add_finetune_arguments, add_train_arguments, run_finetune, run_train  # noqa: E402

def _add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("benchmark", choices=["streams"], help="streams: concurrent real-time streams per latency")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options (see --help)")


def _run_bench(args: argparse.Namespace) -> int:
    """`babelcast bench streams ...` is bench/streams.py (imported lazily: it loads torch)."""
    from babelcast.bench.streams import main as streams_main

    return streams_main(args.options)


COMMANDS: tuple[Command, ...] = (
    Command("transcribe", "transcribe audio files or NeMo manifests", _add_transcribe_arguments, _cmd_transcribe),
    Command("train", "train a model from scratch from a YAML config", add_train_arguments, run_train),
    Command("finetune", "fine-tune a .nemo model on NeMo manifests", add_finetune_arguments, run_finetune),
    Command("eval", "WER tables per language and latency, and streaming metrics, on NeMo manifests",
            add_eval_arguments, run_eval),
    Command("data", "make evaluation/training sets: synthesize with espeak-ng, or index a local FLEURS copy",
            add_data_arguments, run_data),
    Command("serve", "run the speech service: streaming WebSocket, OpenAI-compatible API, live captions",
            add_serve_arguments, run_serve),
    Command("stream", "stream a file in real time (or the microphone) to a server and print captions",
            add_stream_arguments, run_stream),
    Command("bench", "benchmarks: concurrent real-time streams per latency, against NeMo and buffered streaming",
            _add_bench_arguments, _run_bench),
)
