"""Batched span prediction over windows of titles."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from jd_ner.modeling.batching import Collator, Example, move, sequential_batches
from jd_ner.modeling.decode import ScoredSpan, Window, merge_windows, spans_from_scores
from jd_ner.modeling.device import autocast_dtype
from jd_ner.modeling.model import NerModel


def collator_for(model: NerModel) -> Collator:
    vocab = model.char_vocab
    return Collator(vocab.id_of("pad"), vocab.id_of("cls"), vocab.id_of("sep"),
                    len(model.labels), with_bigrams=model.bigram_vocab is not None,
                    sequences=model.sequence_fields)


@torch.inference_mode()
def predict_window_spans(model: NerModel, examples: Sequence[Example], batch_size: int = 32,
                         device: torch.device | str = "cpu", progress: bool = False,
                         threshold: float | None = None, amp: bool = False
                         ) -> dict[int, list[Window]]:
    """Every title id's windows ``(char_start, window_length, title_length, spans)``, each
    with its cells scoring above ``threshold`` (None: the model's own, ``spec.threshold``),
    in window character positions: what :func:`merge_windows` turns into a title's spans.

    ``amp`` runs the model under bf16 autocast on CUDA (where supported, else fp16); off, or
    on a CPU, in full precision.
    """
    if threshold is None:
        threshold = model.spec.threshold
    was_training = model.training
    model.eval()
    collate = collator_for(model)
    device = torch.device(device)
    model.to(device)
    amp_dtype = autocast_dtype(device, amp)
    windows: dict[int, list[Window]] = defaultdict(list)
    batches = list(sequential_batches(examples, batch_size))
    for idx in tqdm(batches, desc="predict", unit="batch", disable=not progress, mininterval=5):
        chunk = [examples[i] for i in idx]
        batch = collate(chunk, with_labels=False)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            scores = model(move(batch, device))
        for ex, spans in zip(chunk, spans_from_scores(scores.float(), batch["char_mask"].to(device),
                                                      threshold), strict=True):
            windows[ex.title_id].append((ex.char_start, len(ex), ex.title_length, spans))
    model.train(was_training)
    return dict(windows)


def predict_spans(model: NerModel, examples: Sequence[Example], batch_size: int = 32,
                  device: torch.device | str = "cpu", progress: bool = False,
                  threshold: float | None = None, amp: bool = False
                  ) -> dict[int, list[ScoredSpan]]:
    """Scored spans (character positions in the whole title) for every title id, above
    ``threshold`` (None: the model's own). Every title id present in ``examples`` gets an
    entry, possibly empty."""
    windows = predict_window_spans(model, examples, batch_size, device, progress, threshold, amp)
    return {tid: merge_windows(w) for tid, w in windows.items()}
