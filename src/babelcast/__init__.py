"""babelcast: real-time multilingual speech recognition (Nemotron 3.5 ASR) in plain PyTorch."""
from .decoding.result import Transcript, Word
from .recognizer import Recognizer, load_model
from .streaming.session import Partial, Session

__version__ = "0.1.0"
__all__ = ["Recognizer", "Session", "Partial", "Transcript", "Word", "load_model", "__version__"]
