"""The shared, read-only recognizer: weights + tokenizer; offline batches and streaming sessions."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import chunking
from .audio.io import to_model_audio
from .checkpoint.load import load_checkpoint
from .checkpoint.tokenizer import Tokenizer
from .config import AUTO, DEFAULT_BEAM, MAX_BEAM
from .decoding.beam import BeamHistory, row_traces
from .decoding.boost import BoostTrie, Phrase, compile_boost
from .decoding.heads import DECODERS, DecodeState, decode_rows
from .decoding.result import Transcript
from .decoding.text import TextOptions, to_transcript
from .errors import UnsupportedDecoder, UnsupportedLanguage
from .model.asr import AsrModel
from .model.prompt import prompt_index
from .streaming.session import SESSION_CONFIG, Session
from .streaming.stream import StreamOptions


def load_model(model: str | Path | None = None, device: str | torch.device = "cpu") -> "Recognizer":
    """A `.nemo` path or hub id (default: the bundled demo model) → Recognizer (fp32)."""
    if model is None:
        from . import default_model

        model = default_model()
        if model is None:
            raise FileNotFoundError("this copy of babelcast has no bundled model; pass a .nemo path or hub id")
    net, tok = load_checkpoint(model)
    return Recognizer(net.to(device), tok)


class Recognizer:
    def __init__(self, model: AsrModel, tokenizer: Tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.cfg = model.cfg
        enc = self.cfg.encoder
        self.frame_s = chunking.enc_frame_ms(enc.subsampling_factor, self.cfg.features.frame_ms) / 1000

    # ---- options --------------------------------------------------------------------------
    @property
    def supported_languages(self) -> list[str]:
        return sorted(self.cfg.prompt.dictionary) if self.cfg.prompt else [AUTO]

    @property
    def latencies_ms(self) -> list[int]:
        enc = self.cfg.encoder
        return [chunking.latency_ms(r, enc.subsampling_factor, self.cfg.features.frame_ms)
                for _, r, _ in chunking.supported_contexts(enc.att_contexts)]

    def context(self, latency_ms: int | None, mode: str) -> tuple[int, int, bool]:
        """(left, right, trained); offline defaults to the largest trained lookahead, streaming to the first."""
        enc = self.cfg.encoder
        return chunking.resolve_context(latency_ms, enc.att_contexts, enc.subsampling_factor,
                                        self.cfg.features.frame_ms, "largest" if mode == "offline" else "first")

    def prompt_id(self, language: str | None) -> int | None:
        """Prompt index for a language; a non-prompt model accepts only auto/None (UnsupportedLanguage)."""
        if self.cfg.prompt is None:
            if language not in (None, "", AUTO):
                raise UnsupportedLanguage(f"this model has no language prompt; it accepts only 'auto', "
                                          f"not {language!r}")
            return None
        try:
            return prompt_index(self.cfg.prompt, language)
        except ValueError as e:
            raise UnsupportedLanguage(str(e)) from None

    def language_note(self, language: str | None) -> str | None:
        """Check a language before any audio is decoded: UnsupportedLanguage for a name the model does not
        accept; for an accepted locale it was not trained on, the warning to give (else None)."""
        self.prompt_id(language)
        prompt = self.cfg.prompt
        return prompt.untrained_note(language) if prompt and language else None  # auto: None (not a locale)

    def canonical_language(self, language: str | None) -> str | None:
        """'es' → 'es-US' (the locale that shares its prompt id); None for auto."""
        if language in (None, "", AUTO) or self.cfg.prompt is None:
            return None
        idx = self.prompt_id(language)
        locales = [k for k, v in self.cfg.prompt.dictionary.items() if v == idx and "-" in k]
        return locales[0] if locales else language

    @property
    def decoders(self) -> list[str]:
        """The heads this checkpoint decodes with: rnnt, and ctc for a hybrid RNNT+CTC one."""
        return list(DECODERS) if self.model.ctc_decoder is not None else ["rnnt"]

    def check_decoder(self, decoder: str, boost: "Sequence[str | Phrase] | None" = None) -> None:
        """UnsupportedDecoder for an unknown decoder, "ctc" on a checkpoint without a CTC head, or "ctc"
        with phrases to boost (boosting biases the RNNT joint)."""
        if decoder not in DECODERS:
            raise UnsupportedDecoder(f"unknown decoder {decoder!r}; use 'rnnt' or 'ctc'")
        if decoder not in self.decoders:
            raise UnsupportedDecoder("this checkpoint has no CTC head (not a hybrid RNNT+CTC model); "
                                     "use the rnnt decoder")
        if decoder == "ctc" and boost:
            raise UnsupportedDecoder("phrase boosting decodes with the RNNT head; use the rnnt decoder")

    def beam_width(self, beam_size: int | None, decoder: str = "rnnt",
                   boost: "Sequence[str | Phrase] | None" = None) -> int:
        """Hypotheses to search: beam_size, or by default DEFAULT_BEAM with phrases to boost (a greedy search
        cannot take back a label: bench/boost.py) and 1 (greedy) without; ValueError for a bad size,
        UnsupportedDecoder for a beam on the CTC head."""
        width = beam_size if beam_size is not None else (DEFAULT_BEAM if boost and decoder == "rnnt" else 1)
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_BEAM:
            raise ValueError(f"bad beam size {beam_size!r}: use a whole number from 1 (greedy) to {MAX_BEAM}")
        if width > 1 and decoder == "ctc":
            raise UnsupportedDecoder("beam search decodes with the RNNT head; use the rnnt decoder or beam size 1")
        return width

    def uses_beam(self, beam: bool | None, decoder: str = "rnnt",
                  boost: "Sequence[str | Phrase] | None" = None) -> bool:
        """Whether a stream searches with a beam: as asked, or by default when it boosts phrases (RNNT);
        UnsupportedDecoder for a beam on the CTC head."""
        return self.beam_width(None if beam is None else (2 if beam else 1), decoder, boost) > 1

    def _text_options(self, language: str | None, keep_lang_tags: bool) -> TextOptions:
        return TextOptions(self.frame_s, keep_lang_tags, self.canonical_language(language))

    def compile_boost(self, boost: "Sequence[str | Phrase] | None", beam: bool) -> BoostTrie | None:
        """Phrases PHRASE[:WEIGHT] → this model's boosting trie for a beam search or greedy decoding (None for
        none); ValueError for a bad list."""
        return compile_boost(self.tokenizer, boost, self.cfg.transducer.blank_id, beam)

    # ---- streaming ------------------------------------------------------------------------
    def stream_options(self, language: str | None = AUTO, latency_ms: int | None = None,
                       keep_lang_tags: bool = False, mode: str = "streaming",
                       lock_language: bool = False, decoder: str = "rnnt",
                       boost: "Sequence[str | Phrase] | None" = None, beam: bool | None = None) -> StreamOptions:
        """Validated per-stream options (context, prompt, text handling, head, boosted phrases, beam search:
        None = with phrases to boost, at the engine's width) for a Session or the Engine; mode="offline"
        picks the offline default latency (a file streamed through the engine); lock_language: in auto
        mode the first detected language becomes the prompt (no-op otherwise)."""
        self.check_decoder(decoder, boost)
        beam = self.uses_beam(beam, decoder, boost)
        left, right, trained = self.context(latency_ms, mode)
        return StreamOptions(left, right, self.prompt_id(language), self._text_options(language, keep_lang_tags),
                             trained, lock_language=lock_language, decoder=decoder, boost=self.compile_boost(boost, beam),
                             beam=beam)

    def stream(self, language: str | None = AUTO, latency_ms: int | None = None,
               keep_lang_tags: bool = False, lock_language: bool = False, decoder: str = "rnnt",
               boost: "Sequence[str | Phrase] | None" = None, beam_size: int | None = None) -> Session:
        """A new live session (its own caches); the recognizer itself holds no stream state."""
        width = self.beam_width(beam_size, decoder, boost)
        opts = self.stream_options(language, latency_ms, keep_lang_tags, lock_language=lock_language,
                                   decoder=decoder, boost=boost, beam=width > 1)

        def options_for(lang: str | None) -> StreamOptions:  # a language switch keeps the compiled phrases
            return replace(self.stream_options(lang, latency_ms, keep_lang_tags, lock_language=lock_language,
                                               decoder=decoder), boost=opts.boost, beam=opts.beam)

        return Session(self.model, self.tokenizer, opts, replace(SESSION_CONFIG, beam_size=width),
                       options_for=options_for)

    def engine(self, cfg: "EngineConfig | None" = None) -> "Engine":
        """A multi-stream engine sharing this recognizer's weights (a runtime copy for bf16/int8)."""
        from .streaming.engine import Engine, EngineConfig

        return Engine(self.model, self.tokenizer, cfg or EngineConfig())

    # ---- offline --------------------------------------------------------------------------
    def transcribe(self, audios: Sequence, language: str | None = AUTO,
                   latency_ms: int | None = None, mode: str = "offline", decoder: str = "rnnt",
                   keep_lang_tags: bool = False, batch_size: int = 8,
                   on_batch_done: Callable[[int], None] | None = None,
                   progress: Callable[[float], None] | None = None,
                   sample_rate: int | None = None,
                   boost: "Sequence[str | Phrase] | None" = None, beam_size: int | None = None) -> list[Transcript]:
        """Transcribe paths or arrays (mono [n] or [n, channels], any dtype soundfile gives, at
        `sample_rate`, default 16000; ValueError naming a wrong shape or rate); results in input order.
        boost: phrases PHRASE[:WEIGHT] to favour (RNNT only; ValueError naming a bad one). beam_size:
        hypotheses of an RNNT beam search (1: greedy; default: DEFAULT_BEAM with boost, else greedy).

        on_batch_done(n): n more inputs are transcribed. progress(seconds): the audio seconds of these
        inputs transcribed so far, never decreasing, the last call giving their total; called after each batch
        and, offline, after each encoder block of a batch encoded in blocks (audio over 60 s), so one long
        file reports as it goes."""
        audios = [to_model_audio(a, sample_rate) for a in audios]
        if mode not in ("offline", "streaming"):
            raise ValueError(f"unknown mode {mode!r}; use 'offline' or 'streaming'")
        self.check_decoder(decoder, boost)
        width = self.beam_width(beam_size, decoder, boost)
        self.prompt_id(language)  # validate before any work
        trie = self.compile_boost(boost, width > 1)
        if mode == "streaming":
            return self._transcribe_streaming(audios, language, latency_ms, keep_lang_tags, on_batch_done, batch_size,
                                              progress, decoder, trie, width)
        left, right, trained = self.context(latency_ms, "offline")
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))  # similar lengths batch together
        results: dict[int, Transcript] = {}
        done_s = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            lengths = [len(audios[i]) for i in idx]
            on_block = None if progress is None else self._block_progress(progress, done_s, lengths)
            batch = self._offline_batch([audios[i] for i in idx], language, left, right, decoder, keep_lang_tags,
                                        on_block, trie, width)
            for i, t in zip(idx, batch):
                results[i] = _with(t, latency_ms=chunking.latency_ms(right, self.cfg.encoder.subsampling_factor,
                                                                     self.cfg.features.frame_ms),
                                   trained_latency=trained, duration_s=len(audios[i]) / self.cfg.features.sample_rate_hz)
            done_s += sum(lengths) / self.cfg.features.sample_rate_hz
            if on_batch_done:
                on_batch_done(len(idx))
            if progress:
                progress(done_s)
        return [results[i] for i in range(len(audios))]

    def _block_progress(self, progress: Callable[[float], None], done_s: float,
                        lengths: list[int]) -> Callable[[int], None]:
        """The encoder's per-block callback (mel frames encoded) for one batch as `progress` calls: done_s
        plus the batch's audio seconds encoded. The batch's end is left to the call after decoding."""
        hop, rate = self.cfg.features.hop_samples, self.cfg.features.sample_rate_hz
        total = sum(lengths)

        def on_block(mel_done: int) -> None:
            samples = sum(min(n, mel_done * hop) for n in lengths)
            if samples < total:
                progress(done_s + samples / rate)

        return on_block

    @torch.no_grad()
    def _offline_batch(self, audios: list[np.ndarray], language: str | None, left: int, right: int,
                       decoder: str, keep_lang_tags: bool,
                       on_block: Callable[[int], None] | None = None,
                       boost: BoostTrie | None = None, beam_width: int = 1) -> list[Transcript]:
        device = self.model.encoder.device
        lengths = torch.tensor([len(a) for a in audios], device=device)
        batch = torch.zeros(len(audios), max(1, int(lengths.max())), device=device)
        for i, a in enumerate(audios):
            batch[i, : len(a)] = torch.as_tensor(np.asarray(a, dtype=np.float32))
        pid = self.prompt_id(language)
        prompt = None if pid is None else torch.full((len(audios),), pid, device=device)
        frames, enc_len = self.model.encode(batch, lengths, left, right, prompt, on_block)
        n, beam = len(audios), beam_width > 1
        em, _ = decode_rows(self.model, frames, enc_len, DecodeState.start(self.model, n, device, beam_width),
                            [decoder == "ctc"] * n, [boost] * n if boost else None, [beam] * n)
        opts = self._text_options(language, keep_lang_tags)
        rows = em.to_lists()
        if beam:  # the whole utterance in one call: its best hypothesis
            traces = row_traces(em.beam, [0] * n)
            rows = [_best_labels(BeamHistory(beam_width), traces[i]) for i in range(n)]
        return [to_transcript(self.tokenizer, ids, at, p, opts) for ids, at, p in rows]

    def _transcribe_streaming(self, audios, language, latency_ms, keep_lang_tags, on_batch_done,
                              batch_size: int, progress: Callable[[float], None] | None = None,
                              decoder: str = "rnnt", boost: BoostTrie | None = None,
                              beam_width: int = 1) -> list[Transcript]:
        """Files as fast-forward streams through one engine, up to batch_size at a time (fp32)."""
        from .streaming.engine import Engine, EngineConfig

        opts = replace(self.stream_options(language, latency_ms, keep_lang_tags, decoder=decoder), boost=boost,
                       beam=beam_width > 1)
        cfg = EngineConfig(max_sessions=max(1, batch_size), precision="fp32", endpoint_ms=0, max_lag_ms=float("inf"),
                           max_segment_ms=0, phase_align=False, beam_size=beam_width)  # one final per file, offline's tokens
        engine = Engine(self.model, self.tokenizer, cfg)
        n, out, done_s = max(1, batch_size), [], 0.0
        for start in range(0, len(audios), n):
            sids = [engine.open(opts, interim=False) for _ in audios[start:start + n]]
            for sid, audio in zip(sids, audios[start:start + n]):
                engine.feed(sid, audio)
                engine.finish(sid, close=True)
            finals = {e.session_id: e.transcript for e in engine.drain() if e.kind == "final"}
            out += [finals[sid] for sid in sids]
            done_s += sum(len(a) for a in audios[start:start + n]) / self.cfg.features.sample_rate_hz
            if on_batch_done:
                on_batch_done(len(sids))
            if progress:
                progress(done_s)
        return out


def _best_labels(history: BeamHistory, trace) -> tuple[list[int], list[int], list[float]]:
    """All labels of a beam row decoded in one call: the committed ones, then the best's tentative ones."""
    done, rest = history.update(trace)
    return tuple(a + b for a, b in zip(done, rest))


def _with(t: Transcript, **changes) -> Transcript:
    return replace(t, **changes)
