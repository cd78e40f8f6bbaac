"""`babelcast eval MANIFEST...`: the model card's WER tables and streaming metrics on your data."""
from __future__ import annotations

import argparse
import bisect
import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from babelcast.argtypes import positive_int as _positive_int

if TYPE_CHECKING:
    from .report import Grouping

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_LATENCIES = "all"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `babelcast eval`."""
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST",
                        help="NeMo manifests (audio_filepath, text, target_lang or lang; relative paths resolve "
                             "against the manifest's folder)")
    parser.add_argument("--model", help="checkpoint path or Hugging Face id (default: babelcast.DEFAULT_MODEL)")
    parser.add_argument("--latency", default=DEFAULT_LATENCIES, metavar="MS[,MS...]|all",
                        help="latencies to evaluate, e.g. 80,320,1120; all (default) = every latency the model offers "
                             "(untrained ones are marked † in the tables)")
    parser.add_argument("--lang-mode", choices=("given", "auto", "both"), default="both",
                        help="prompt with the manifest's language, auto-detect, or both blocks (default)")
    parser.add_argument("--mode", choices=("streaming", "offline"), default="streaming",
                        help="streaming (default): chunk by chunk in simulated real time, with latency and "
                             "stability metrics; offline: batched, same tokens, faster, error rates only")
    parser.add_argument("--out-dir", type=Path, metavar="DIR",
                        help="run folder: results.jsonl (resumable), summary.md/.csv/.json "
                             "(default: ./babelcast-eval/<manifest>-<model>)")
    parser.add_argument("--cer-langs", default="zh,ja,ko,th", metavar="LANGS",
                        help="languages scored by characters (default zh,ja,ko,th)")
    parser.add_argument("--group-by", metavar="FIELD[:EDGE,...]", action="append", default=[],
                        help="also break the error rates down by this manifest key (e.g. voice, source, speaker), "
                             "pooled over languages; with edges, numbers are binned (rate_wpm:150,200); "
                             "repeatable; needs no new decoding")
    parser.add_argument("--max-per-lang", type=_positive_int, metavar="N", help="first N utterances per language")
    parser.add_argument("--batch-size", type=_positive_int, default=8, metavar="N")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=_positive_int, metavar="N",
                        help="torch CPU threads (default: torch's choice; 1 gives steadier timings on a busy machine)")
    parser.add_argument("--fresh", action="store_true", help="discard the results already in the run folder")
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a TTY")
    cluster = parser.add_argument_group("on a Ray cluster (the ray extra; docs/scaling.md)")
    cluster.add_argument("--ray", metavar="ADDRESS",
                         help="decode on the Ray cluster at HOST:PORT (auto: RAY_ADDRESS, local: start one); "
                              "with --mode offline")
    cluster.add_argument("--actors", type=_positive_int, metavar="N",
                         help="model copies on the cluster (default: one per CPU, or per GPU with --device cuda)")


def run_eval(args: argparse.Namespace) -> int:
    """Load the model named by --model and evaluate."""
    missing = [name for name in ("jiwer", "whisper_normalizer") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: babelcast eval needs {' and '.join(missing)}: pip install 'babelcast[eval]'", file=sys.stderr)
        return EXIT_USAGE
    from babelcast.cli_errors import load_recognizer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import babelcast

    model = args.model or babelcast.default_model()
    recognizer = load_recognizer(model, args.device)
    return evaluate_with(args, recognizer, model)


def evaluate_with(args: argparse.Namespace, recognizer, model_name: str) -> int:
    """Evaluate the manifests with a loaded recognizer; print the report and write the run folder."""
    from babelcast.manifest import ManifestError

    from . import report
    from .runner import EvalConfig, EvalError, ResultStore, evaluate, evaluate_on_ray, load_items, resolve_language

    if args.ray and args.mode != "offline":
        print("error: eval --ray decodes offline (streaming metrics need one process's clock); add --mode offline",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        latencies = parse_latencies(args.latency, list(recognizer.latencies_ms))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for latency in latencies:
            recognizer.context(latency, args.mode)  # raises ValueError for a latency the model cannot run
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        items = load_items(args.manifests, args.max_per_lang)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not items:
        print("error: the manifests have no entry with a reference text", file=sys.stderr)
        return EXIT_USAGE
    group_by = []
    for spec in args.group_by:
        try:
            group_by.append(grouping(spec, items))
        except ValueError as e:
            print(f"error: --group-by {spec}: {e}", file=sys.stderr)
            return EXIT_USAGE
    lang_modes = ("given", "auto") if args.lang_mode == "both" else (args.lang_mode,)
    languages = sorted({it.language or "unknown" for it in items})
    unsupported = sorted({it.language or "unknown" for it in items if resolve_language(recognizer, it.language) is None})
    has_prompt = not set(recognizer.supported_languages) <= {"auto"}
    if "given" in lang_modes and not has_prompt:
        print("warning: the model has no language prompt: the language-given block is n/a", file=sys.stderr)
    elif "given" in lang_modes and unsupported:
        print(f"warning: language given: n/a for {', '.join(unsupported)} (not in the model's languages)",
              file=sys.stderr)
    cer_langs = tuple(s.strip() for s in args.cer_langs.split(",") if s.strip())
    cfg = EvalConfig(model=model_name, latencies=tuple(latencies), lang_modes=lang_modes, mode=args.mode,
                     batch_size=args.batch_size, cer_langs=cer_langs, device=args.device)
    out_dir = args.out_dir or default_out_dir(args.manifests[0], model_name)
    try:
        store = ResultStore(out_dir, model_name, fresh=args.fresh)
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    done_before = set(store.records)
    show = args.progress or sys.stderr.isatty()
    start = time.perf_counter()
    try:
        try:
            if args.ray:
                records, failures = evaluate_on_ray(args.ray, recognizer, items, cfg, store, args.actors, show)
            else:
                records, failures = evaluate(recognizer, items, cfg, store, progress=show)
        except ValueError as e:  # the recognizer rejects an option
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
    finally:
        store.close()
    info = {
        "manifest": ", ".join(str(m) for m in args.manifests),
        "model": model_name,
        "utterances": len(items),
        "audio_hours": round(sum(it.entry.duration_s or 0.0 for it in items) / 3600, 4),
        "unsupported_given": unsupported if "given" in lang_modes else [],
        "seconds": round(time.perf_counter() - start, 2),
        "results_reused": sum(1 for r in records if r["key"] in done_before),
    }
    summary = report.summarize(records, languages, latencies, list(lang_modes), args.mode, cer_langs, info,
                               language_id=has_prompt, group_by=tuple(group_by))
    markdown = report.to_markdown(summary)
    (out_dir / "summary.md").write_text(markdown, encoding="utf-8")
    (out_dir / "summary.csv").write_text(report.to_csv(summary), encoding="utf-8")
    (out_dir / "summary.json").write_text(report.to_json(summary), encoding="utf-8")
    sys.stdout.write(markdown)
    print(f"\nresults: {store.path} ({len(records)} results, {info['results_reused']} from an earlier run); "
          f"summary: {out_dir}/summary.{{md,csv,json}}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def grouping(spec: str, items) -> Grouping:
    """'voice' → each utterance's voice; 'rate_wpm:150,200' → its rate binned as '< 150', '150-200', '≥ 200'."""
    from .report import Grouping

    field, _, edges_text = spec.partition(":")
    values = {it.uid: it.entry.field(field) for it in items}
    if not field or not any(values.values()):
        raise ValueError(f"no manifest line has a {field!r} key with a text or number value")
    if not edges_text:
        return Grouping(field, values)
    try:
        edges = sorted({float(e) for e in edges_text.split(",") if e.strip()})
    except ValueError:
        edges = []
    if not edges:
        raise ValueError("edges must be numbers, e.g. rate_wpm:150,200")
    names = [f"{e:g}" for e in edges]
    labels = [f"< {names[0]}", *(f"{a}-{b}" for a, b in zip(names, names[1:])), f"≥ {names[-1]}"]
    return Grouping(field, {uid: _bin(v, edges, labels) for uid, v in values.items()}, tuple(labels))


def _bin(value: str | None, edges: list[float], labels: list[str]) -> str | None:
    """The label of the bin a numeric value falls in (lower edge inclusive); None for a missing or non-numeric one."""
    try:
        return labels[bisect.bisect_right(edges, float(value))] if value is not None else None
    except ValueError:
        return None


def parse_latencies(text: str, available: list[int]) -> list[int]:
    """'80,320,1120' or 'all' (the model's trained latencies) → sorted unique ints."""
    if text.strip().lower() == "all":
        if not available:
            raise ValueError("the model lists no latency; pass --latency MS")
        return sorted(set(available))
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--latency expects MS[,MS...] or all, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"--latency expects positive milliseconds, got {text!r}")
    return values


def default_out_dir(manifest: str | Path, model: str) -> Path:
    """./babelcast-eval/<manifest folder or stem>-<model stem>."""
    manifest = Path(manifest)
    name = manifest.stem if manifest.stem not in ("manifest", "test", "dev", "train") else (
        f"{manifest.parent.name}-{manifest.stem}")
    model_name = Path(model).stem if Path(model).suffix else model.replace("/", "_")
    return Path("babelcast-eval") / re.sub(r"[^\w.-]+", "_", f"{name}-{model_name}")


