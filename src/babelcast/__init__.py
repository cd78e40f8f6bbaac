"""babelcast: real-time multilingual speech recognition (Nemotron 3.5 ASR) in plain PyTorch."""
from pathlib import Path

from .decoding.result import Transcript, Word
from .recognizer import Recognizer, load_model
from .streaming.session import Partial, Session

__version__ = "0.1.0"
# The small multilingual demo model babelcast trains itself (configs/demo.yaml, README "Demo model"):
# what `babelcast transcribe / serve / eval` use when no --model is given, once the file ships.
DEFAULT_MODEL = str(Path(__file__).parent / "assets" / "babelcast-demo.nemo")
__all__ = ["Recognizer", "Session", "Partial", "Transcript", "Word", "load_model", "default_model", "DEFAULT_MODEL",
           "__version__"]


def default_model() -> str | None:
    """The model to use when none is given: DEFAULT_MODEL, or None when it is unset or its file is
    absent (a copy of the package made without the bundled model)."""
    model = globals().get("DEFAULT_MODEL")
    if model and model.endswith(".nemo") and not Path(model).is_file():
        return None
    return model
