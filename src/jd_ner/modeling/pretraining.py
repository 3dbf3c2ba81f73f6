"""Masked-character pretraining of the character encoder on unlabelled titles.

Task-adaptive pretraining: the encoder the NER model will use (embeddings, bigram
embeddings, BiLSTM) first learns to restore masked characters of in-domain titles, then
starts the NER training from those weights (``train.model.encoder.init: pretrained``).

Masking follows BERT: ``probability`` of the characters are chosen; 80% of them become
[MASK], 10% a random character, 10% stay. A bigram reads its character and the next one,
so the bigrams at a chosen position and at the one before it are replaced by the bigram
[UNK]: otherwise they would give the chosen character away.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from jd_ner.modeling.encoder import CharEncoder, EncoderConfig
from jd_ner.text.vocab import Vocab

FORMAT = "jd_ner.encoder/1"


@dataclass
class PretrainedEncoder:
    """A pretrained character encoder: its settings, vocabularies and weights."""

    encoder: EncoderConfig
    char_vocab: dict
    bigram_vocab: dict | None
    state: dict[str, torch.Tensor]
    info: dict = field(default_factory=dict)  # what it was pretrained on, and how

    def config(self) -> dict:
        return {"format": FORMAT, "encoder": self.encoder.to_dict(), "char_vocab": self.char_vocab,
                "bigram_vocab": self.bigram_vocab, "info": self.info}

    @classmethod
    def from_config(cls, config: dict, state: dict[str, torch.Tensor]) -> PretrainedEncoder:
        if config.get("format") != FORMAT:
            raise ValueError(f"a pretrained encoder of format {config.get('format')!r}; this "
                             f"version of jd_ner reads {FORMAT!r}: pretrain it again")
        return cls(EncoderConfig(**config["encoder"]), config["char_vocab"],
                   config["bigram_vocab"], state, config.get("info", {}))


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A digest of weights: which pretrained encoder a model started from."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                      .tobytes())
    return digest.hexdigest()[:16]


class MaskedCharModel(nn.Module):
    """A :class:`CharEncoder` with a character-prediction layer on top.

    It exposes what the training loop's collator reads (vocabularies, no labels, no
    per-character feature sequences), so ``jd_ner.modeling.training.fit`` trains it.
    """

    labels: list[str] = []
    sequence_fields: tuple[str, ...] = ()

    def __init__(self, cfg: EncoderConfig, char_vocab: dict, bigram_vocab: dict | None):
        super().__init__()
        self.char_vocab = Vocab.from_dict(char_vocab)
        self.bigram_vocab = Vocab.from_dict(bigram_vocab) if bigram_vocab else None
        self.encoder = CharEncoder(cfg, len(self.char_vocab), self.char_vocab.id_of("pad"),
                                   len(self.bigram_vocab) if self.bigram_vocab else 0)
        self.predict = nn.Linear(self.encoder.output_size, len(self.char_vocab))

    def pretrained(self, info: dict) -> PretrainedEncoder:
        state = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return PretrainedEncoder(self.encoder.cfg, self.char_vocab.to_dict(),
                                 self.bigram_vocab.to_dict() if self.bigram_vocab else None,
                                 state, info)


def choose_masks(char_mask: torch.Tensor, probability: float) -> torch.Tensor:
    """Positions to restore: each real character with ``probability``, at least one per row."""
    chosen = (torch.rand(char_mask.shape, device=char_mask.device) < probability) & char_mask
    # rows where nothing was drawn get one random real character, so every title teaches
    none = ~chosen.any(dim=1) & char_mask.any(dim=1)
    if none.any():
        scores = torch.rand(char_mask.shape, device=char_mask.device).masked_fill(~char_mask, -1.0)
        pick = scores.argmax(dim=1)
        chosen[none, pick[none]] = True
    return chosen


def corrupt(batch: dict[str, torch.Tensor], chosen: torch.Tensor, mask_id: int,
            first_char_id: int, vocab_size: int, bigram_unk_id: int) -> dict[str, torch.Tensor]:
    """The batch with chosen characters masked (80/10/10) and their bigrams hidden."""
    draw = torch.rand(chosen.shape, device=chosen.device)
    ids = batch["input_ids"].clone()
    ids[chosen & (draw < 0.8)] = mask_id
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    ids[swap] = torch.randint(first_char_id, vocab_size, (int(swap.sum()),), device=ids.device)
    out = {**batch, "input_ids": ids}
    if "bigram_ids" in batch:
        hidden = chosen.clone()
        hidden[:, :-1] |= chosen[:, 1:]  # the bigram before a chosen character holds it too
        out["bigram_ids"] = batch["bigram_ids"].masked_fill(hidden & batch["char_mask"], bigram_unk_id)
    return out


def masked_char_objective(probability: float):
    """``objective(model, batch) -> (loss, parts)``: cross-entropy of the chosen characters."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"pretrain.mask_probability must be in (0, 1), got {probability}")

    def objective(model: MaskedCharModel, batch: dict[str, torch.Tensor]):
        vocab = model.char_vocab
        chosen = choose_masks(batch["char_mask"], probability)
        specials = max(vocab.index[t] for t in vocab.specials.values())
        inputs = corrupt(batch, chosen, vocab.id_of("mask"), specials + 1, len(vocab),
                         model.bigram_vocab.id_of("unk") if model.bigram_vocab else 0)
        h, _ = model.encoder(inputs["input_ids"], inputs["attention_mask"], inputs.get("bigram_ids"))
        logits = model.predict(h[chosen]).float()
        target = batch["input_ids"][chosen]
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.argmax(-1) == target).float().mean()
        return loss, {"masked_accuracy": accuracy.detach()}

    return objective
