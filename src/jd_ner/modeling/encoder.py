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

from jd_ner.modeling.feature_layers import LayerFusion
from jd_ner.modeling.lac import LacBiGRU


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
    # scratch: random initial weights | pretrained: start from the `pretrain` pipeline's
    # encoder (its architecture and vocabularies replace these settings)
    init: str = "scratch"
    pretrained_on: str | None = None  # init=pretrained: digest of the train split it was made for
    # LAC-small (Baidu's lexical analyser in jieba): its pretrained character embeddings
    # and BiGRU states, concatenated to ours before the BiLSTM (TagLM-style).
    # off | frozen (fixed weights, no gradient) | finetune (trained, train.optim.lac_learning_rate)
    lac: str = "off"
    lac_layers: int = 1  # 1: the last BiGRU layer's states (256); 2: both layers' (512)
    lac_vocab_size: int = 20941
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


class BiLSTM(nn.Module):
    """A bidirectional LSTM over right-padded batches: per layer, one forward and one
    backward one-directional LSTM, outputs concatenated.

    The backward LSTM reads each sequence reversed within its own length, so padding never
    enters a real position's state, as with packed sequences; but both directions run the
    fused kernels for padded input, which on a CPU are about twice as fast as packed
    sequences (forward and backward pass). Outputs at padded positions are zero.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict({direction: nn.LSTM(input_size if i == 0 else 2 * hidden_size,
                                              hidden_size, batch_first=True)
                           for direction in ("ltr", "rtl")})  # left to right, right to left
            for i in range(num_layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        real = positions[None, :] < lengths[:, None]
        # position i of a sequence of length n reads position n - 1 - i; padding stays put
        reverse = torch.where(real, lengths[:, None] - 1 - positions[None, :], positions[None, :])
        for layer in self.layers:
            index = reverse[..., None].expand(-1, -1, x.shape[-1])
            forward = layer["ltr"](x)[0]
            backward = layer["rtl"](x.gather(1, index))[0]
            backward = backward.gather(1, reverse[..., None].expand(-1, -1, backward.shape[-1]))
            x = torch.cat([forward, backward], dim=-1) * real[..., None]
        return x


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
        self.width = width
        self.lac = None
        features = width
        if cfg.lac != "off":
            if cfg.lac not in ("frozen", "finetune"):
                raise ValueError(f"model.encoder.lac must be off, frozen or finetune, got {cfg.lac!r}")
            if not 1 <= cfg.lac_layers <= 2:
                raise ValueError(f"model.encoder.lac_layers must be 1 or 2, got {cfg.lac_layers}")
            self.lac = LacBiGRU(cfg.lac_vocab_size)
            self.lac.requires_grad_(cfg.lac == "finetune")
            # our character id -> LAC's (filled by the builder; saved with the weights)
            self.register_buffer("lac_index", torch.zeros(vocab_size, dtype=torch.long))
            self.pad_id = pad_id
            features += cfg.lac_layers * self.lac.output_size
        self.lstm = None
        if cfg.lstm_hidden > 0:
            self.lstm = BiLSTM(features, cfg.lstm_hidden, cfg.lstm_layers)
            self.lstm_dropout = nn.Dropout(cfg.dropout)
        self.output_size = 2 * cfg.lstm_hidden if self.lstm is not None else features

    @property
    def num_hidden_layers(self) -> int:
        return self.transformer.config.num_hidden_layers

    def embed(self, input_ids: torch.Tensor, bigram_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings (characters plus bigrams), before position embeddings; with LAC,
        its states follow in the last channels (so mixup blends both alike)."""
        embeds = self.transformer.get_input_embeddings()(input_ids)
        if self.bigram is not None:
            embeds = embeds + self.bigram(bigram_ids)
        if self.lac is not None:
            embeds = torch.cat([embeds, self.lac_states(input_ids).to(embeds.dtype)], dim=-1)
        return embeds

    def lac_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """LAC's BiGRU states (B, L, 256 * lac_layers) at each character; zeros at [CLS],
        [SEP] and padding. LAC reads the characters alone, as it was trained to."""
        lengths = (input_ids != self.pad_id).sum(dim=1) - 2  # [CLS] chars [SEP]
        ids = self.lac_index[input_ids[:, 1:]]
        train_it = self.cfg.lac == "finetune" and torch.is_grad_enabled()
        # fp32: a recurrence over ~100 steps is where bf16 rounding would add up
        with torch.set_grad_enabled(train_it), torch.autocast(input_ids.device.type, enabled=False):
            layers = self.lac(ids, lengths, all_layers=True)
        states = torch.cat(layers[-self.cfg.lac_layers:], dim=-1)
        return nn.functional.pad(states, (0, 0, 1, 0))  # position 0 is [CLS]

    def encode(self, embeds: torch.Tensor, attention_mask: torch.Tensor, all_layers: bool = False):
        """Transformer (layer fusion, BiLSTM) over input embeddings -> (features, hidden states)."""
        lac = None
        if self.lac is not None:
            embeds, lac = embeds[..., : self.width], embeds[..., self.width :]
        out = self.transformer(inputs_embeds=embeds, attention_mask=attention_mask,
                               output_hidden_states=all_layers or self.fusion is not None)
        h = out.last_hidden_state if self.fusion is None else self.fusion(out.hidden_states)
        if lac is not None:
            h = torch.cat([h, lac.to(h.dtype)], dim=-1)
        if self.lstm is not None:
            h = self.lstm_dropout(self.lstm(h, attention_mask.sum(-1)))
        return h, (out.hidden_states if all_layers else None)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                bigram_ids: torch.Tensor | None = None, all_layers: bool = False):
        return self.encode(self.embed(input_ids, bigram_ids), attention_mask, all_layers)
