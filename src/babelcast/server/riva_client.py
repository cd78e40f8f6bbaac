"""`babelcast stream --riva HOST:PORT`: play a file in real time (or the microphone) to a Riva ASR gRPC
service (babelcast's `serve --grpc-port`, or NVIDIA's own) and print partials and finals as `--url` does."""
from __future__ import annotations

import argparse
import asyncio
import queue
import sys

from ..audio.io import SAMPLE_RATE_HZ
from .client import EXIT_FAILED, EXIT_OK, _Printer


def streaming_config(args: argparse.Namespace):
    """The StreamingRecognitionConfig for the stream command's options (16 kHz 16-bit PCM, punctuation on)."""
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_audio_pb2 as raudio

    from ..decoding.boost import parse_phrases

    config = rasr.RecognitionConfig(encoding=raudio.LINEAR_PCM, sample_rate_hertz=SAMPLE_RATE_HZ,
                                    language_code=args.lang, max_alternatives=1, enable_automatic_punctuation=True,
                                    enable_word_time_offsets=args.json)
    if args.latency is not None:
        config.custom_configuration["latency_ms"] = str(args.latency)
    if args.endpoint_ms is not None:
        config.endpointing_config.stop_history = args.endpoint_ms
    for phrase in parse_phrases(args.boost):
        config.speech_contexts.append(rasr.SpeechContext(phrases=[phrase.text], boost=phrase.weight or 0.0))
    return rasr.StreamingRecognitionConfig(config=config, interim_results=not args.no_interim)


async def stream_riva(args: argparse.Namespace, source) -> int:
    """One StreamingRecognize call: the config, then the source's PCM; the end of the file ends the call.
    The call runs on grpc's blocking API in a worker thread (as NVIDIA's samples use it), fed from the
    paced source through a queue."""
    import grpc

    if args.keep_lang_tags:
        print("error: --keep-lang-tags is not part of Riva's API; use --url", file=sys.stderr)
        return EXIT_FAILED
    pieces: queue.Queue[bytes | None] = queue.Queue()

    async def pump() -> None:
        try:
            async for pcm in source:
                pieces.put(pcm)
        finally:
            pieces.put(None)

    pumping = asyncio.create_task(pump())
    try:
        await asyncio.to_thread(_call, args, pieces)
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        pumping.cancel()
        pieces.put(None)  # a call that ended early leaves grpc's request thread waiting for a piece
    return EXIT_OK


def _call(args: argparse.Namespace, pieces: "queue.Queue[bytes | None]") -> None:
    """Worker thread: the call, printing each result (grpc.RpcError when it ends with an error)."""
    import grpc
    from google.protobuf.json_format import MessageToDict
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc

    def requests():
        yield rasr.StreamingRecognizeRequest(streaming_config=streaming_config(args))
        while (pcm := pieces.get()) is not None:
            yield rasr.StreamingRecognizeRequest(audio_content=pcm)

    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    printer = _Printer(args.json)
    try:
        with grpc.insecure_channel(args.riva) as channel:
            for response in rasr_grpc.RivaSpeechRecognitionStub(channel).StreamingRecognize(requests(),
                                                                                            metadata=metadata):
                for result in response.results:
                    printer.show(MessageToDict(result) if args.json else _event(result))
    finally:
        printer.done()


def _event(result) -> dict:
    """A result as the printer's partial or final."""
    alt = result.alternatives[0] if result.alternatives else None
    return {"type": "final" if result.is_final else "partial", "text": alt.transcript if alt else "",
            "language": alt.language_code[0] if alt and alt.language_code else None}
