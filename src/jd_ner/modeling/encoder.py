"""Character encoders: a BERT built from a config (trained from scratch) or a local
Hugging Face encoder, with optional char-bigram embeddings at the input and an
optional BiLSTM on top.

The from-scratch default needs the two additions: a small transformer alone learns
entity boundaries slowly from ~9k titles, while bigram embeddings give each position
its word-piece context and a BiLSTM gives it a strong locality bias.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from jd_ner.modeling.feature_layers import LayerFusion


@dataclass
class EncoderConfig:
    """Architecture of the character encoder; saved with the model."""

    kind: str = "bert"  # bert: from config, random init | pretrained: local HF directory
    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.1
    max_positions: int = 512
    bigram_dim: int = 0  # > 0: add char-bigram embeddings (projected) to the input
    lstm_hidden: int = 0  # > 0: a BiLSTM of this size per direction on top
    lstm_layers: int = 1
    fusion_layers: int = 0  # > 0: mix the last k hidden layers (embeddings count as one)
    fusion: str = "softmax"  # softmax: learned per-token weights; mean: plain average
    pretrained_path: str | None = None  # kind=pretrained: where the weights came from
    hf_config: dict = field(default_factory=dict)  # the HF config the encoder was built from

    def to_dict(self) -> dict:
        return asdict(self)


def _bert_config(cfg: EncoderConfig, vocab_size: int, pad_id: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=pad_id,
        type_vocab_size=2,
    )


class CharEncoder(nn.Module):
    """(input_ids, attention_mask, bigram_ids) -> per-token features and all layers."""

    def __init__(self, cfg: EncoderConfig, vocab_size: int, pad_id: int,
                 bigram_vocab_size: int = 0, transformer: nn.Module | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.cfg = cfg
        if transformer is not None:  # a pretrained encoder, weights already loaded
            self.transformer = transformer
            cfg.hf_config = transformer.config.to_dict()
        elif cfg.kind == "pretrained":  # rebuilt from a saved model's config, weights follow
            hf = AutoConfig.for_model(**cfg.hf_config)
            self.transformer = AutoModel.from_config(hf, add_pooling_layer=False)
        elif cfg.kind == "bert":
            hf = _bert_config(cfg, vocab_size, pad_id)
            self.transformer = AutoModel.from_config(hf, add_pooling_layer=False)
            cfg.hf_config = hf.to_dict()
        else:
            raise ValueError(f"unknown encoder kind {cfg.kind!r}; known: bert, pretrained")
        width = self.transformer.config.hidden_size
        self.bigram = None
        if cfg.bigram_dim > 0:
            if bigram_vocab_size <= 0:
                raise ValueError("bigram_dim > 0 needs a bigram vocabulary")
            self.bigram = nn.Sequential(
                nn.Embedding(bigram_vocab_size, cfg.bigram_dim, padding_idx=0),
                nn.Linear(cfg.bigram_dim, width, bias=False),
            )
        self.fusion = LayerFusion(width, cfg.fusion_layers, cfg.fusion) \
            if cfg.fusion_layers > 0 else None
        self.lstm = None
        if cfg.lstm_hidden > 0:
            self.lstm = nn.LSTM(width, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
                                batch_first=True, bidirectional=True)
            self.lstm_dropout = nn.Dropout(cfg.dropout)
        self.output_size = 2 * cfg.lstm_hidden if self.lstm is not None else width

    @property
    def num_hidden_layers(self) -> int:
        return self.transformer.config.num_hidden_layers

    def embed(self, input_ids: torch.Tensor, bigram_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (characters plus bigrams), before position embeddings."""
        embeds = self.transformer.get_input_embeddings()(input_ids)
        if self.bigram is not None:
            embeds = embeds + self.bigram(bigram_ids)
        return embeds

    def encode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, all_layers: bool = False):
        """Transformer (layer fusion, BiLSTM) over input embeddings -> (features, hidden states)."""
        out = self.transformer(inputs_embeds=embeds, attention_mask=attention_mask,
                               output_hidden_states=all_layers or self.fusion is not None)
        h = out.last_hidden_state if self.fusion is None else self.fusion(out.hidden_states)
        if self.lstm is not None:
            lengths = attention_mask.sum(-1).cpu()
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                       total_length=h.shape[1])
            h = self.lstm_dropout(h)
        return h, (out.hidden_states if all_layers else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                bigram_ids: torch.Tensor | None = None, all_layers: bool = False):
        return self.encode(self.embed(input_ids, bigram_ids), attention_mask, all_layers)
