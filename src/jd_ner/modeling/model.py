"""The NER model: character encoder + span head, with everything needed to rebuild it.

A model carries its own hyper-parameters and vocabularies (:class:`ModelSpec`), so a
saved model loads with no external configuration (see ``jd_ner.datasets``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from jd_ner.modeling.encoder import CharEncoder, EncoderConfig
from jd_ner.modeling.feature_layers import (
    LexiconEmbedding,
    PinyinGlyphFeatures,
    WordSetEmbedding,
)
from jd_ner.modeling.heads import build_head
from jd_ner.text.lexicon import LexiconMatcher
from jd_ner.text.vocab import Vocab
from jd_ner.text.words import WordMatcher

FORMAT = "jd_ner.model/2"


@dataclass
class HeadConfig:
    kind: str = "gp"  # gp | efficient_gp
    head_size: int = 64
    rope: bool = True


@dataclass
class ModelSpec:
    """Everything that defines a model apart from its weights."""

    labels: list[str]
    char_vocab: dict
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    bigram_vocab: dict | None = None
    max_chars: int = 126  # characters per window; longer titles are predicted in windows
    window_stride: int = 96  # characters between window starts (overlap = max_chars - stride)
    # pinyin / glyph CNN features: their settings and vocabularies (None: off)
    pinyin: dict | None = None
    glyph: dict | None = None
    pinyin_vocab: dict | None = None
    glyph_vocab: dict | None = None
    # lexicon knowledge: {"entries": {string: {type: count}}, "per_char": n, "mode": m}
    # (None: off)
    lexicon: dict | None = None
    # SoftLexicon word sets: {"words": [...], "frequencies": [...], "per_set": k, "dim": d}
    # (None: off)
    words: dict | None = None
    # training-only 1-type heads: name -> the type it finds (None: any entity)
    aux_heads: dict = field(default_factory=dict)
    # "train split" (dev selected the epoch; test held out), or "all labelled titles
    # (final_fit; unevaluated)"
    trained_on: str = "train split"
    train_split: str | None = None  # digest of the train split's titles (which split it learnt)
    # cells scoring above it are entities (0: probability above 1/2); training chooses it on
    # dev (decode.threshold), and whatever predicts with the model uses it (evaluate, submit,
    # pseudo_label, a distill teacher's out-of-fold score)
    threshold: float = 0.0
    # how it was trained: {"trick", "seed", "history": per-epoch records}, so a loaded model
    # shows its own learning curve (None: a model saved before it was recorded)
    training: dict | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["format"] = FORMAT
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        if data.get("format") != FORMAT:
            raise ValueError(f"a saved model of format {data.get('format')!r}; this version of "
                             f"jd_ner reads {FORMAT!r}: re-train it")
        data = {k: v for k, v in data.items() if k != "format"}
        data["encoder"] = EncoderConfig(**data["encoder"])
        data["head"] = HeadConfig(**data["head"])
        return cls(**data)


class NerModel(nn.Module):
    """Encoder features -> span scores (B, T, L, L) over token positions."""

    def __init__(self, spec: ModelSpec, transformer: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.char_vocab = Vocab.from_dict(spec.char_vocab)
        self.bigram_vocab = Vocab.from_dict(spec.bigram_vocab) if spec.bigram_vocab else None
        self.pinyin_vocab = Vocab.from_dict(spec.pinyin_vocab) if spec.pinyin else None
        self.glyph_vocab = Vocab.from_dict(spec.glyph_vocab) if spec.glyph else None
        self.encoder = CharEncoder(
            spec.encoder,
            vocab_size=len(self.char_vocab),
            pad_id=self.char_vocab.id_of("pad"),
            bigram_vocab_size=len(self.bigram_vocab) if self.bigram_vocab else 0,
            transformer=transformer,
        )
        width = self.encoder.output_size
        self.char_features = None
        if spec.pinyin or spec.glyph:
            self.char_features = PinyinGlyphFeatures(
                width, spec.pinyin, spec.glyph,
                len(self.pinyin_vocab) if self.pinyin_vocab else 0,
                len(self.glyph_vocab) if self.glyph_vocab else 0)
        self.lexicon = None
        self.lexicon_matcher = None
        if spec.lexicon:
            self.lexicon = LexiconEmbedding(LexiconMatcher.num_features(len(spec.labels)), width)
            self.lexicon_matcher = LexiconMatcher(spec.lexicon["entries"], spec.labels)
        self.words = None
        self.word_matcher = None
        if spec.words:
            self.words = WordSetEmbedding(spec.words["frequencies"], int(spec.words["dim"]),
                                          self.encoder.width, int(spec.words["per_set"]))
            self.word_matcher = WordMatcher(spec.words["words"])
        self.head = build_head(spec.head.kind, width, len(spec.labels), spec.head.head_size,
                               spec.head.rope)
        self.aux_heads = nn.ModuleDict({
            name: build_head(spec.head.kind, width, 1, spec.head.head_size, spec.head.rope)
            for name in spec.aux_heads})

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    @property
    def sequence_fields(self) -> tuple[str, ...]:
        """The per-character id-sequence inputs this model reads."""
        on = {"pinyin_ids": self.spec.pinyin, "glyph_ids": self.spec.glyph,
              "lexicon_ids": self.spec.lexicon, "word_ids": self.spec.words}
        return tuple(name for name, setting in on.items() if setting)

    def features(self, batch: dict[str, torch.Tensor], mixer=None) -> torch.Tensor:
        """Per-token features (B, L, H) that the heads score.

        ``mixer`` (mixup) blends each row with another row of the batch, at the input
        embeddings (together with the lexicon and pinyin/glyph inputs of the row) or at
        the final features, as its ``layer`` says.
        """
        at_input = mixer is not None and mixer.layer == "embeddings"
        mask = batch["attention_mask"]
        embeds = self.encoder.embed(batch["input_ids"], batch.get("bigram_ids"))
        if self.words is not None:  # into the character channels (LAC's states follow them)
            words = self.words(batch["word_ids"])
            embeds = embeds + nn.functional.pad(words, (0, embeds.shape[-1] - words.shape[-1]))
        if at_input:
            embeds, mask = mixer(embeds), mixer.union(mask)
        h, _ = self.encoder.encode(embeds, mask)
        if self.lexicon is not None:
            knowledge = self.lexicon(batch["lexicon_ids"])
            h = h + (mixer(knowledge) if at_input else knowledge)
        if self.char_features is not None:
            vectors = self.char_features.vectors(batch)
            h = self.char_features(h, mixer(vectors) if at_input else vectors)
        if mixer is not None and mixer.layer == "encoder":
            h = mixer(h)
        return h

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(batch))
