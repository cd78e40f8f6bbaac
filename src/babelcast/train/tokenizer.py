"""Train the SentencePiece tokenizer of a new model (spec §6): unigram over the training transcripts,
every language tag the data uses as one user-defined piece, and the three files a `.nemo` carries."""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

SPECIAL_PIECES = ("<s>", "</s>", "<pad>", "<unk>")
TAG = re.compile(r"<[a-z]{2,3}-[A-Za-z]{2,3}>")
FILE_NAMES = {"model": "tokenizer.model", "vocab": "tokenizer.vocab", "vocab_txt": "vocab.txt"}


@dataclass(frozen=True)
class TokenizerFiles:
    """What NeMo stores for a SentencePiece tokenizer (tokenizer.model_path / spe_tokenizer_vocab / vocab_path)."""

    model: bytes  # the SentencePiece model proto
    vocab: bytes  # SentencePiece's `piece<TAB>score` list
    vocab_txt: bytes  # NeMo's vocab.txt: word-start pieces without '▁', the others as '##piece'

    @classmethod
    def from_model(cls, model: bytes) -> "TokenizerFiles":
        """Derive both vocabulary listings from the model proto."""
        sp = spm.SentencePieceProcessor(model_proto=model)
        # A unigram model scores user-defined pieces exactly 0, learned pieces below 0.
        pieces = [(sp.id_to_piece(i), sp.get_score(i), sp.get_score(i) == 0 and not sp.is_unknown(i))
                  for i in range(sp.get_piece_size())]
        vocab = "".join(f"{p}\t{s:g}\n" for p, s, _ in pieces)
        listed = [p for p, _, user in pieces if p not in SPECIAL_PIECES and not user]
        vocab_txt = "".join(f"{_nemo_vocab_entry(p)}\n" for p in listed)
        return cls(model, vocab.encode(), vocab_txt.encode())

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for field, name in FILE_NAMES.items():
            (folder / name).write_bytes(getattr(self, field))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TokenizerFiles":
        return cls.from_model((Path(folder) / FILE_NAMES["model"]).read_bytes())


def _nemo_vocab_entry(piece: str) -> str:
    if piece.startswith("▁"):
        return piece[1:] or piece
    return f"##{piece}"


def tags_in(texts: Iterable[str]) -> list[str]:
    """Every distinct language tag (`<xx-XX>`) in the texts, sorted."""
    return sorted({m for t in texts for m in TAG.findall(t)})


def train_tokenizer(texts: list[str], vocab_size: int, user_symbols: Iterable[str] = (),
                    character_coverage: float = 1.0, seed: int = 0) -> TokenizerFiles:
    """Unigram SentencePiece on `texts` (nmt_nfkc, no byte fallback, <unk> = 0, no bos/eos).

    `vocab_size` is an upper bound (a small corpus may give fewer pieces, as with NeMo's
    hard_vocab_limit=false); the model's vocabulary follows the tokenizer.
    """
    out = io.BytesIO()
    spm.set_random_generator_seed(seed)  # the trainer's sentence shuffling
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=out, vocab_size=vocab_size, model_type="unigram",
        user_defined_symbols=list(user_symbols), character_coverage=character_coverage,
        bos_id=-1, eos_id=-1, unk_id=0, hard_vocab_limit=False, byte_fallback=False,
        shuffle_input_sentence=True, num_threads=1, minloglevel=2,
    )
    return TokenizerFiles.from_model(out.getvalue())
