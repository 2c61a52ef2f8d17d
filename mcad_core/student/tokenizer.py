"""Word-level tokenizer of the student, built from the training captions.

Kept free of torch so the on-device search process (and a phone app) can load
it with the ``tokenizers`` library alone: the single ``tokenizer.json`` holds
the vocabulary, the normaliser, the pre-tokeniser and the fixed padding length.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mcad_core.errors import McadError
from mcad_core.io import atomic_path

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID = 0
ENCODE_CHUNK = 4096  # captions per encode_batch call


class StudentTokenizer:
    """Lowercased words and punctuation -> int32 ids, padded/truncated to ``context_length``."""

    def __init__(self, tokenizer: object) -> None:
        from tokenizers import Tokenizer

        if not isinstance(tokenizer, Tokenizer):
            raise McadError(f"StudentTokenizer: expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        if tokenizer.token_to_id(PAD) != PAD_ID or tokenizer.padding is None:
            raise McadError(f"StudentTokenizer: needs {PAD} at id {PAD_ID} and fixed-length padding")
        self._tok = tokenizer

    @classmethod
    def train(cls, captions: Iterable[str], context_length: int = 32, min_frequency: int = 1,
              max_vocab: int = 30000) -> StudentTokenizer:
        """Build the vocabulary from training captions (rare words beyond ``max_vocab`` become [UNK])."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        if context_length < 2:
            raise McadError(f"StudentTokenizer: context_length must be >= 2 (got {context_length})")
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+: words and punctuation
        trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, min_frequency=min_frequency,
                                            special_tokens=[PAD, UNK])
        tok.train_from_iterator(captions, trainer=trainer)
        tok.enable_padding(pad_id=PAD_ID, pad_token=PAD, length=context_length)
        tok.enable_truncation(max_length=context_length)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def context_length(self) -> int:
        return int(self._tok.padding["length"])

    def encode(self, captions: list[str] | str) -> np.ndarray:
        """Token ids, np.int32 [B, context_length], pad id 0 (int32: TFLite has no int64 argmax path)."""
        if isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        # Chunk by chunk into one array: a whole split's Encoding objects and id lists at once cost
        # ~8 kB per caption (1.2 GB for Flickr30K's 145k), the array 4 bytes per token.
        out = np.empty((len(captions), self.context_length), np.int32)
        for start in range(0, len(captions), ENCODE_CHUNK):
            encs = self._tok.encode_batch(captions[start : start + ENCODE_CHUNK])
            out[start : start + len(encs)] = [e.ids for e in encs]
        return out

    @property
    def unk_id(self) -> int:
        """Id of [UNK]: what a word outside the vocabulary becomes (-1 if the vocabulary has none)."""
        unk = self._tok.token_to_id(UNK)
        return -1 if unk is None else int(unk)

    def encode_query(self, text: str) -> tuple[np.ndarray, int, list[str]]:
        """One search query: its ids as ``encode`` gives them ([1, context_length]), how many of its
        tokens the vocabulary knows, and the pieces of ``text`` (as typed) that became [UNK].
        Special tokens ([CLS], [SEP] of a WordPiece tokenizer) and padding count as neither, so a
        query of unknown words only knows 0 and can be refused instead of matching on padding."""
        enc = self._tok.encode(text)
        known, unknown = 0, []
        for token, special, (a, b) in zip(enc.ids, enc.special_tokens_mask, enc.offsets):
            if special or token == PAD_ID:
                continue
            if token == self.unk_id:
                unknown.append(text[a:b])
            else:
                known += 1
        return np.asarray([enc.ids], dtype=np.int32), known, unknown

    def save(self, path: str | Path) -> None:
        """Write the single ``tokenizer.json`` that ships next to the text model."""
        with atomic_path(path) as tmp:
            self._tok.save(str(tmp))

    @classmethod
    def load(cls, path: str | Path) -> StudentTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise McadError(f"{path}: tokenizer file not found")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad JSON
            raise McadError(f"{path}: not a valid tokenizer.json ({str(err).splitlines()[0]})") from None
        return cls(tok)
