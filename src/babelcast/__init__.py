"""babelcast: real-time multilingual speech recognition (Nemotron 3.5 ASR) in plain PyTorch."""
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decoding.result import Transcript, Word
    from .recognizer import Recognizer, load_model
    from .streaming.session import Partial, Session

# The public names, imported on first use (PEP 562): `import babelcast` and the CLI's --help stay
# quick, and the light commands (data, stream) never load torch.
_LAZY = {"Transcript": ".decoding.result", "Word": ".decoding.result", "Recognizer": ".recognizer",
         "load_model": ".recognizer", "Partial": ".streaming.session", "Session": ".streaming.session",
         "to_model_audio": ".audio.io"}

__version__ = "0.1.0"
# The small multilingual demo model babelcast trains itself (configs/demo.yaml, README "Demo model"):
# what `babelcast transcribe / serve / eval` use when no --model is given, once the file ships.
DEFAULT_MODEL = str(Path(__file__).parent / "assets" / "babelcast-demo.nemo")
__all__ = ["Recognizer", "Session", "Partial", "Transcript", "Word", "load_model", "default_model", "DEFAULT_MODEL",
           "to_model_audio", "__version__"]


def default_model() -> str | None:
    """The model to use when none is given: DEFAULT_MODEL, or None when it is unset or its file is
    absent (a copy of the package made without the bundled model)."""
    model = globals().get("DEFAULT_MODEL")
    if model and model.endswith(".nemo") and not Path(model).is_file():
        return None
    return model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'babelcast' has no attribute {name!r}")
