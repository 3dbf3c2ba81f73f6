"""A torch port of Baidu LAC-small (the BiGRU-CRF lexical analyser inside jieba).

Weights come from :func:`jd_ner.lac_files.read_lac` as named numpy arrays; this module
does no I/O. The net is embedding -> 2 bidirectional GRU layers -> fc (emissions) ->
CRF decoding, with Paddle's GRU, which differs from ``torch.nn.GRU`` in two ways: the
reset gate scales the previous state *before* the candidate matmul, and the update gate
weights the new candidate (``h = u * c + (1 - u) * h_prev``, ``origin_mode=False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn


def _reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) index that reverses each row's first ``length`` positions and leaves its
    padding in place. It is its own inverse, so the same index maps outputs back."""
    pos = torch.arange(steps, device=lengths.device).expand(lengths.shape[0], steps)
    lengths = lengths[:, None]
    return torch.where(pos < lengths, lengths - 1 - pos, pos)


class PaddleBiGRULayer(nn.Module):
    """One LAC BiGRU layer: per direction an fc to 3H, then Paddle's dynamic_gru.

    Parameters are stacked over the two directions (index 0 forward, 1 reverse) so a
    single recurrence advances both: each step is two batched matmuls.
    Gate order in the 3H axis is [update | reset | candidate].
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        h = hidden_size
        self.proj_weight = nn.Parameter(torch.zeros(2, input_size, 3 * h))
        # Paddle adds the fc bias and the GRU bias to the same pre-activation; they are
        # kept summed in one parameter since they are indistinguishable.
        self.bias = nn.Parameter(torch.zeros(2, 3 * h))
        self.gate_weight = nn.Parameter(torch.zeros(2, h, 2 * h))
        self.cand_weight = nn.Parameter(torch.zeros(2, h, h))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, input) -> (B, T, 2H): [forward state | reverse state], zeros past each length."""
        batch, steps, _ = x.shape
        h = self.hidden_size
        # All input projections up front: (2, B, T, 3H).
        proj = torch.einsum("bti,dio->dbto", x, self.proj_weight) + self.bias[:, None, None, :]
        rev = _reverse_index(lengths, steps)
        gather = rev[:, :, None].expand(batch, steps, 3 * h)
        proj = torch.stack((proj[0], proj[1].gather(1, gather)))
        # Real steps come first in both directions, so the recurrence can stop at the
        # longest sequence, and padding only ever follows a sequence's real positions.
        run = int(lengths.max()) if batch else 0
        proj = proj[:, :, :run].permute(2, 0, 1, 3)  # (T, 2, B, 3H): one contiguous slice per step

        state = x.new_zeros(2, batch, h)
        outputs = []
        for t in range(run):
            gx = proj[t]
            gates = torch.sigmoid(torch.baddbmm(gx[..., : 2 * h], state, self.gate_weight))
            update, reset = gates[..., :h], gates[..., h:]
            cand = torch.tanh(torch.baddbmm(gx[..., 2 * h :], reset * state, self.cand_weight))
            state = state + update * (cand - state)
            outputs.append(state)

        if run == 0:
            return x.new_zeros(batch, steps, 2 * h)
        out = torch.stack(outputs, dim=2)  # (2, B, run, H)
        if run < steps:
            out = torch.cat((out, out.new_zeros(2, batch, steps - run, h)), dim=2)
        back = rev[:, :, None].expand(batch, steps, h)
        out = torch.cat((out[0], out[1].gather(1, back)), dim=-1)
        mask = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]
        return out * mask[:, :, None].to(out.dtype)


class LacBiGRU(nn.Module):
    """LAC-small's encoder: character embedding and stacked Paddle BiGRU layers."""

    def __init__(self, vocab_size: int = 20941, embed_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        sizes = [embed_dim] + [2 * hidden_size] * (num_layers - 1)
        self.layers = nn.ModuleList(PaddleBiGRULayer(size, hidden_size) for size in sizes)
        self.output_size = 2 * hidden_size

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor,
                all_layers: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """ids (B, T) right-padded, lengths (B,) -> (B, T, 2H) from the last layer, or every
        layer's output as a list when ``all_layers``. Padded positions are zero."""
        lengths = lengths.to(ids.device)
        hidden = self.embedding(ids)
        outs = []
        for layer in self.layers:
            hidden = layer(hidden, lengths)
            outs.append(hidden)
        return outs if all_layers else hidden

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LacBiGRU:
        """Build and fill from :attr:`jd_ner.lac_files.LacWeights.arrays`."""
        vocab_size, embed_dim = arrays["embedding"].shape
        hidden = arrays["layers.0.fwd.gru.weight"].shape[0]
        num_layers = len({key.split(".")[1] for key in arrays if key.startswith("layers.")})
        module = cls(vocab_size, embed_dim, hidden, num_layers)
        load_lac_arrays(module, arrays)
        return module


def _gru_weight_blocks(flat: np.ndarray, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a Paddle GRU weight into its [H, 2H] update/reset block and [H, H] candidate
    block. Paddle stores them one after the other in the buffer, so they are NOT column
    slices of the [H, 3H] shape the file declares."""
    buf = np.ascontiguousarray(flat).reshape(-1)
    split = hidden * 2 * hidden
    return buf[:split].reshape(hidden, 2 * hidden), buf[split:].reshape(hidden, hidden)


def load_lac_arrays(module: LacBiGRU, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy LAC's numpy parameters into ``module`` (shapes must match)."""

    def put(target: torch.Tensor, value: np.ndarray) -> None:
        value_t = torch.as_tensor(np.ascontiguousarray(value), dtype=target.dtype)
        if value_t.shape != target.shape:
            raise ValueError(f"shape mismatch: {tuple(value_t.shape)} into {tuple(target.shape)}")
        target.copy_(value_t)

    with torch.no_grad():
        put(module.embedding.weight, arrays["embedding"])
        for k, layer in enumerate(module.layers):
            for d, direction in enumerate(("fwd", "bwd")):
                prefix = f"layers.{k}.{direction}"
                gates, cand = _gru_weight_blocks(arrays[f"{prefix}.gru.weight"], layer.hidden_size)
                put(layer.proj_weight[d], arrays[f"{prefix}.proj.weight"])
                put(layer.bias[d], arrays[f"{prefix}.proj.bias"].reshape(-1)
                    + arrays[f"{prefix}.gru.bias"].reshape(-1))
                put(layer.gate_weight[d], gates)
                put(layer.cand_weight[d], cand)


class LacTagger(nn.Module):
    """The full LAC-small tagger: BiGRU encoder, emission fc and CRF parameters."""

    def __init__(self, encoder: LacBiGRU, num_tags: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.emission = nn.Linear(encoder.output_size, num_tags)
        self.crf_start = nn.Parameter(torch.zeros(num_tags))
        self.crf_end = nn.Parameter(torch.zeros(num_tags))
        self.crf_transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # from -> to

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LacTagger:
        """Build and fill from :attr:`jd_ner.lac_files.LacWeights.arrays`."""
        tagger = cls(LacBiGRU.from_arrays(arrays), arrays["emission.weight"].shape[1])
        with torch.no_grad():
            # Paddle's fc weight is [in, out]; nn.Linear's is [out, in].
            tagger.emission.weight.copy_(torch.as_tensor(arrays["emission.weight"]).T)
            tagger.emission.bias.copy_(torch.as_tensor(arrays["emission.bias"]).reshape(-1))
            tagger.crf_start.copy_(torch.as_tensor(arrays["crf.start"]))
            tagger.crf_end.copy_(torch.as_tensor(arrays["crf.end"]))
            tagger.crf_transitions.copy_(torch.as_tensor(arrays["crf.transitions"]))
        return tagger

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Emission scores (B, T, K)."""
        return self.emission(self.encoder(ids, lengths))

    @torch.no_grad()
    def decode(self, ids: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Best tag-id path per sequence (CRF Viterbi, as Paddle's crf_decoding)."""
        emissions = self(ids, lengths).float().cpu().numpy()
        start = self.crf_start.detach().float().cpu().numpy()
        end = self.crf_end.detach().float().cpu().numpy()
        trans = self.crf_transitions.detach().float().cpu().numpy()
        return [crf_viterbi(emissions[b, : int(n)], start, end, trans)
                for b, n in enumerate(lengths.tolist())]


def crf_viterbi(emissions: np.ndarray, start: np.ndarray, end: np.ndarray,
                transitions: np.ndarray) -> list[int]:
    """Highest-scoring tag path of a linear-chain CRF.

    score(y) = start[y0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last].
    """
    emissions = np.asarray(emissions, dtype=np.float64)
    steps = emissions.shape[0]
    if steps == 0:
        return []
    transitions = np.asarray(transitions, dtype=np.float64)
    score = np.asarray(start, dtype=np.float64) + emissions[0]
    backpointers = []
    for t in range(1, steps):
        total = score[:, None] + transitions  # (from, to)
        best_from = total.argmax(axis=0)
        backpointers.append(best_from)
        score = total[best_from, np.arange(total.shape[1])] + emissions[t]
    score = score + np.asarray(end, dtype=np.float64)
    path = [int(score.argmax())]
    for best_from in reversed(backpointers):
        path.append(int(best_from[path[-1]]))
    return path[::-1]


def tags_to_words(chars: Sequence[str], tags: Sequence[str]) -> tuple[list[str], list[str]]:
    """Group characters into words the way LAC's ``utils.parse_result`` does.

    A word starts at the first character, at any ``*-B`` tag, and at an ``O`` that
    follows a non-``O`` tag; its label is the tag without the ``-B``/``-I`` suffix.
    (Unlike LAC, characters are kept as given; LAC prints OOV characters as spaces.)
    """
    words: list[str] = []
    labels: list[str] = []
    for i, (char, tag) in enumerate(zip(chars, tags, strict=True)):
        starts = i == 0 or tag.endswith("-B") or (tag == "O" and tags[i - 1] != "O")
        if starts:
            words.append(char)
            labels.append(tag.split("-")[0])
        else:
            words[-1] += char
    return words, labels
