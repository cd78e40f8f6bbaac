"""Phoneme timings straight from the synthesizer: espeak-ng reports every phoneme as it speaks it
(its library's phoneme events), so each synthetic utterance can carry where its sounds are.

The demo model trains on them as frame-level targets of an auxiliary head (train/phones.py), which
teaches the encoder acoustics long before the transducer alone would find its alignments. The
library's samples are the command line's (`espeak-ng --stdout`) sample for sample, so the times
hold for the files `synth.py` makes, shifted by their leading silence.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

LIBRARY = "libespeak-ng.so.1"
_SYNCHRONOUS = 2  # AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when the text is spoken
_PHONEME_EVENTS, _PHONEME_IPA = 0x1, 0x2  # espeak_Initialize options
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_EVENT_END_OF_LIST, _EVENT_PHONEME = 0, 7
_STRESS = str.maketrans("", "", "ˈˌ")


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT (speak_lib.h)
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _Id)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class _Espeak:
    """The process's one espeak-ng library instance (its state is global), used under a lock."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or LIBRARY)
        except OSError as e:
            raise RuntimeError(f"cannot load {LIBRARY} ({e}); install with: apt-get install -y espeak-ng") from e
        self.rate_hz = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _PHONEME_IPA)
        if self.rate_hz <= 0:
            raise RuntimeError("espeak-ng could not be initialized")
        self.lock = threading.Lock()
        self.samples = 0
        self.events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]

    def _on_audio(self, wav, n_samples: int, events) -> int:
        self.samples += max(0, n_samples)
        i = 0
        while events[i].type != _EVENT_END_OF_LIST:
            if events[i].type == _EVENT_PHONEME:
                name = events[i].id.string.decode("utf-8", "replace").translate(_STRESS)
                self.events.append((events[i].audio_position, name))
            i += 1
        return 0

    def timeline(self, text: str, voice: str, rate_wpm: int, pitch: int) -> list[tuple[int, str]]:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            self.lib.espeak_SetParameter(_RATE, rate_wpm, 0)
            self.lib.espeak_SetParameter(_PITCH, pitch, 0)
            self.samples, self.events = 0, []
            data = text.encode("utf-8")
            self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            end_ms = round(1000 * self.samples / self.rate_hz)
            # MBROLA voices' audio does not pass through the callback's sample count (which then ends
            # early); their phoneme events still follow the audio, so the timeline ends at the last one.
            end_ms = max([end_ms] + [position for position, _ in self.events])
            return [*self.events, (end_ms, "")]


_instance: _Espeak | None = None


def phone_timeline(text: str, voice: str, rate_wpm: int, pitch: int, offset_ms: int = 0) -> list[list]:
    """[[start_ms, phone], …, [end_ms, ""]]: each phoneme (IPA, stress marks removed; "" for a pause)
    from its start to the next entry's, as espeak-ng speaks `text` with `voice` (e.g. "de+m3"),
    shifted by offset_ms (the file's leading silence)."""
    global _instance
    if _instance is None:
        _instance = _Espeak()
    return [[start_ms + offset_ms, name] for start_ms, name in _instance.timeline(text, voice, rate_wpm, pitch)]
