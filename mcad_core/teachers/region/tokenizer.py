"""A word-level caption tokenizer built from the training captions and stored with the model.

The embedded captions come from a closed vocabulary, so whole words are the right unit:
the comparator can then find each attribute word (shape, colour, size, relation) by id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mcad_core.data.vocabulary import COLOURS, SHAPES, SIZES
from mcad_core.errors import McadError

SPECIALS = ("[PAD]", "[UNK]")
PAD, UNK = 0, 1
# The word in each relation surface form that carries its meaning ("to the left of" -> "left").
RELATION_KEYS: tuple[str, ...] = ("left", "right", "above", "below")
_WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-case words and punctuation marks."""
    return _WORD.findall(text.lower())


class WordTokenizer:
    """Word -> id with a fixed length; knows which ids are attribute and relation words."""

    def __init__(self, words: list[str], max_len: int) -> None:
        self.words = list(words)
        self.max_len = max_len
        self.index = {w: i for i, w in enumerate(self.words)}
        missing = [w for w in (*SHAPES, *COLOURS, *SIZES, *RELATION_KEYS) if w not in self.index]
        if missing:
            raise McadError(f"caption vocabulary lacks the attribute words {missing} (too few training captions?)")
        self.shape_ids = [self.index[w] for w in SHAPES]
        self.colour_ids = [self.index[w] for w in COLOURS]
        self.size_ids = [self.index[w] for w in SIZES]
        self.relation_ids = [self.index[w] for w in RELATION_KEYS]

    @classmethod
    def build(cls, captions: list[str], max_len: int) -> WordTokenizer:
        """Vocabulary = specials + every word of the captions, sorted (deterministic)."""
        words = sorted({w for c in captions for w in split_words(c)})
        return cls([*SPECIALS, *words], max_len)

    def encode(self, captions: list[str]) -> list[list[int]]:
        """Ids padded with [PAD] / truncated to ``max_len``."""
        out = []
        for c in captions:
            ids = [self.index.get(w, UNK) for w in split_words(c)][: self.max_len]
            out.append(ids + [PAD] * (self.max_len - len(ids)))
        return out

    def to_json(self) -> str:
        return json.dumps({"words": self.words, "max_len": self.max_len})

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        data = json.loads(path.read_text())
        return cls(data["words"], data["max_len"])
