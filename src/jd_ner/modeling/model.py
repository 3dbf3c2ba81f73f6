"""The NER model: character encoder + span head, with everything needed to rebuild it.

A model carries its own hyper-parameters and vocabularies (:class:`ModelSpec`), so a
saved model loads with no external configuration (see ``jd_ner.modeling.storage``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from jd_ner.modeling.encoder import CharEncoder, EncoderConfig
from jd_ner.modeling.heads import build_head
from jd_ner.text.vocab import Vocab


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

    def to_dict(self) -> dict:
        data = asdict(self)
        data["format"] = "jd_ner.model/1"
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        data = {k: v for k, v in data.items() if k != "format"}
        return cls(
            labels=list(data["labels"]),
            char_vocab=data["char_vocab"],
            encoder=EncoderConfig(**data["encoder"]),
            head=HeadConfig(**data["head"]),
            bigram_vocab=data.get("bigram_vocab"),
            max_chars=int(data["max_chars"]),
            window_stride=int(data["window_stride"]),
        )


class NerModel(nn.Module):
    """Encoder features -> span scores (B, T, L, L) over token positions."""

    def __init__(self, spec: ModelSpec, transformer: nn.Module | None = None):
        super().__init__()
        self.spec = spec
        self.char_vocab = Vocab.from_dict(spec.char_vocab)
        self.bigram_vocab = Vocab.from_dict(spec.bigram_vocab) if spec.bigram_vocab else None
        self.encoder = CharEncoder(
            spec.encoder,
            vocab_size=len(self.char_vocab),
            pad_id=self.char_vocab.id_of("pad"),
            bigram_vocab_size=len(self.bigram_vocab) if self.bigram_vocab else 0,
            transformer=transformer,
        )
        self.head = build_head(spec.head.kind, self.encoder.output_size, len(spec.labels),
                               spec.head.head_size, spec.head.rope)

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    def features(self, batch: dict[str, torch.Tensor], mixer=None) -> torch.Tensor:
        """Per-token features (B, L, H) that the head scores.

        ``mixer`` (mixup) blends each row with another row of the batch, at the input
        embeddings or at the encoder output, as its ``layer`` says.
        """
        mask = batch["attention_mask"]
        embeds = self.encoder.embed(batch["input_ids"], batch.get("bigram_ids"))
        if mixer is not None and mixer.layer == "embeddings":
            embeds, mask = mixer(embeds), mixer.union(mask)
        h, _ = self.encoder.encode(embeds, mask)
        if mixer is not None and mixer.layer == "encoder":
            h = mixer(h)
        return h

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(batch))
