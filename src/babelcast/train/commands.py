"""`babelcast train CONFIG.yaml` and `babelcast finetune --model BASE …` (argparse side; the heavy
imports happen when a command runs, so `babelcast --help` stays fast)."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..cli_errors import EXIT_FAILED, CliError

NO_DATA_HINT = ("make the training data first: scripts/train_demo.sh data (for configs/demo.yaml), "
                "or babelcast data synth ... --out DIR and point the config's data: at DIR/manifest.jsonl")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training YAML: model (NeMo model_config format), tokenizer, data, "
                                       "augment, optim, trainer")
    parser.add_argument("--out-dir", help="override trainer.out_dir (checkpoints, tokenizer, model.nemo, log.jsonl)")
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="override trainer.precision")
    parser.add_argument("--threads", type=int, help="override trainer.threads (1 is faster on a busy machine)")
    parser.add_argument("--processes", type=int, help="override trainer.processes (data parallel on this machine)")
    parser.add_argument("--init-from", help="override trainer.init_from: start from this .nemo's weights")
    parser.add_argument("--no-resume", action="store_true",
                        help="start from scratch even if OUT_DIR/last.pt exists (it is overwritten)")


def run_train(args: argparse.Namespace) -> int:
    """Train from scratch, or continue OUT_DIR/last.pt; exports OUT_DIR/model.nemo."""
    from .config import load_train_config
    from .parallel import fit, train_in_processes
    from .run import trainer_from_scratch

    try:
        cfg = load_train_config(args.config)
    except OSError as e:
        raise CliError(f"{args.config}: cannot read the config ({e.strerror or e}); pass a training YAML such as "
                       f"configs/demo.yaml") from None
    except ValueError as e:
        raise CliError(f"{e}; see configs/demo.yaml for a working config") from None
    overrides = {k: v for k, v in (("out_dir", args.out_dir), ("max_steps", args.max_steps),
                                   ("precision", args.precision), ("threads", args.threads),
                                   ("processes", args.processes), ("init_from", args.init_from)) if v is not None}
    if overrides:
        cfg = replace(cfg, trainer=replace(cfg.trainer, **overrides))
    _check_manifests(cfg.data.train + cfg.data.val)
    if cfg.trainer.processes > 1:
        _fit(lambda: train_in_processes(cfg, resume=not args.no_resume))
    else:
        _fit(lambda: fit(trainer_from_scratch(cfg), resume=not args.no_resume))
    return 0


def _fit(run: Callable[[], None]) -> None:
    """A run that cannot start (init_from or init_layers that do not fit it) or resume (last.pt of another
    model or config) fails in one line naming the fix."""
    from .loop import ResumeError
    from .run import StartError

    try:
        run()
    except (ResumeError, StartError) as e:
        raise CliError(str(e)) from None


def _check_manifests(sources) -> None:
    """Missing training data fails here, in one line with the fix, not later inside a worker process."""
    missing = [s.path for s in sources if not Path(s.path).is_file()]
    if missing:
        raise CliError(f"no such manifest: {', '.join(missing)}; {NO_DATA_HINT}", EXIT_FAILED)


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base model: a .nemo path or a hub id")
    parser.add_argument("--train", required=True, action="append", help="training manifest (repeatable)")
    parser.add_argument("--val", action="append", default=[], help="validation manifest (repeatable)")
    parser.add_argument("--out", required=True, help="the fine-tuned .nemo to write (checkpoints go to OUT.train/)")
    parser.add_argument("--lang", help="locale of manifest lines without target_lang, e.g. de-DE")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate, cosine schedule (default 1e-4)")
    parser.add_argument("--batch-duration", type=float, default=120.0, help="padded seconds of audio per batch")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--prompt-mode", choices=("langID", "auto", "unified"), default="unified",
                        help="prompt of training utterances: their language, auto, or auto half of the time")
    parser.add_argument("--val-latency", type=int, help="validation latency in ms (default: the largest trained)")
    parser.add_argument("--no-augment", action="store_true", help="no SpecAugment, speed perturbation or noise")
    parser.add_argument("--joint-chunk", type=int, default=2,
                        help="utterances per joint + loss sub-batch, recomputed in backward to bound memory with a "
                             "large vocabulary (default 2); 0 = the whole batch at once (small vocabularies, faster)")
    parser.add_argument("--no-resume", action="store_true", help="ignore OUT.train/last.pt")


def run_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a .nemo on manifests and write OUT (same config and tokenizer as the base)."""
    from .parallel import fit
    from .run import FinetuneOptions, trainer_for_finetune

    opts = FinetuneOptions(model=args.model, train=tuple(args.train), val=tuple(args.val), out=args.out,
                           lang=args.lang, steps=args.steps, lr=args.lr, batch_duration_s=args.batch_duration,
                           precision=args.precision, prompt_mode=args.prompt_mode, val_latency_ms=args.val_latency,
                           augment=not args.no_augment, joint_chunk=args.joint_chunk)
    _fit(lambda: fit(trainer_for_finetune(opts), resume=not args.no_resume))
    return 0
