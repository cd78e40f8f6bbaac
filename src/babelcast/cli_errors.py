"""How every subcommand reports an ordinary mistake: one line `error: <problem>; <fix>` on stderr and an
exit code (2 bad options, 1 failed work), never a traceback. `cli.main` is the one place that prints."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# babelcast's named errors (module, class, exit code): their messages already name the file or option and the
# problem. Looked up in sys.modules only, so the CLI imports no torch to recognize them.
NAMED_ERRORS = (
    ("babelcast.checkpoint.nemo_archive", "CheckpointError", EXIT_USAGE),
    ("babelcast.config", "ConfigError", EXIT_USAGE),
    ("babelcast.errors", "UnsupportedLanguage", EXIT_USAGE),
    ("babelcast.errors", "UnsupportedLatency", EXIT_USAGE),
    ("babelcast.manifest", "ManifestError", EXIT_FAILED),
    ("babelcast.audio.io", "AudioError", EXIT_FAILED),
    ("babelcast.eval.runner", "EvalError", EXIT_FAILED),
    ("babelcast.data.fleurs", "FleursError", EXIT_FAILED),
    ("babelcast.data.synth", "SynthError", EXIT_FAILED),
    ("babelcast.scale.cluster", "ClusterError", EXIT_FAILED),
)


# Packages of the optional extras, and the extra that brings each.
EXTRA_OF_PACKAGE = {"uvicorn": "server", "starlette": "server", "websockets": "server", "multipart": "server",
                    "prometheus_client": "server", "jiwer": "eval", "whisper_normalizer": "eval",
                    "matplotlib": "bench", "ray": "ray"}


class CliError(Exception):
    """An ordinary mistake or failure, reported as one line with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_of(error: BaseException) -> int | None:
    """The exit code of a CliError or a named babelcast error; None for anything else (a bug: let it show)."""
    if isinstance(error, CliError):
        return error.exit_code
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in EXTRA_OF_PACKAGE:
        return EXIT_FAILED
    for module, name, code in NAMED_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(error, cls):
            return code
    return None


def describe(error: BaseException) -> str:
    """The one line for an ordinary mistake: its message, or for a missing optional package how to install it."""
    if isinstance(error, ModuleNotFoundError):
        package = (error.name or "").split(".")[0]
        return (f"this command needs the {package} package: run scripts/setup.sh, or pip install "
                f"'babelcast[{EXTRA_OF_PACKAGE[package]}]'")
    return str(error)


def check_device(device: str) -> None:
    """Refuse --device cuda on a torch without CUDA before anything loads."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        reason = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise CliError(f"--device cuda: {reason}; use --device cpu (or install a CUDA build of torch)")


def load_recognizer(model: str | None, device: str = "cpu"):
    """--model (default: the bundled demo model) → a Recognizer on `device`; CliError naming the problem."""
    import babelcast

    model = model or babelcast.default_model()
    if model is None:
        raise CliError("no default model is configured; pass --model PATH_OR_HUB_ID")
    check_device(device)
    from babelcast.recognizer import load_model  # deferred: importing torch is slow

    try:
        return load_model(model, device=device)
    except ValueError as e:
        raise CliError(f"cannot load model {model}: {e}") from None
    except (OSError, RuntimeError) as e:
        raise CliError(f"cannot load model {model}: {e}", EXIT_FAILED) from None
