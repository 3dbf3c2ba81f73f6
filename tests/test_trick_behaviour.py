"""What the write-up's tricks promise in behaviour, checked against independent computations."""

import math

import pytest
import torch

from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import multilabel_gp_loss
from jd_ner.modeling.predict import predict_spans
from jd_ner.modeling.tricks import Objective, duplicate, pool
from jd_ner.text.vocab import encode_bigrams, encode_chars

from .test_model_io import batch_for, tiny_model


def labelled_batch(model, texts):
    batch = batch_for(model, texts)
    length = batch["input_ids"].shape[1]
    batch["labels"] = torch.zeros(len(texts), len(model.labels), length, length, dtype=torch.bool)
    batch["labels"][0, 0, 1, 2] = True
    return batch


def test_both_dropout_views_of_a_mixed_batch_share_partner_and_lambda():
    objective = Objective({"mixup": {"enabled": True, "probability": 1.0}, "rdrop": {"enabled": True}})
    for seed in range(5):
        torch.manual_seed(seed)
        mixer = objective.sample_mixer(4, 2, "cpu")
        first, second = mixer.perm[:4], mixer.perm[4:]
        assert torch.equal(second, first + 4)  # copy i of view 2 mixes with copy perm[i] of view 2
        assert sorted(first.tolist()) == [0, 1, 2, 3]
    texts = ["小米手机壳", "华为充电器", "ab12c"]
    model = tiny_model(texts).eval()  # no dropout: the two views must then be identical
    batch = duplicate(batch_for(model, texts))
    torch.manual_seed(0)
    mixer = objective.sample_mixer(3, 2, "cpu")
    h = model.features(batch, mixer)
    assert torch.equal(h[:3], h[3:])
    single = model.features(batch_for(model, texts))
    lam, perm = mixer.lam, mixer.perm[:3]
    assert torch.allclose(h[:3], lam * single + (1 - lam) * single[perm], atol=1e-6)


def test_auxiliary_heads_are_never_used_at_prediction():
    texts = ["小米手机壳", "华为充电器"]
    model = tiny_model(texts)
    from jd_ner.modeling.heads import build_head

    model.aux_heads["boundary"] = build_head("gp", model.encoder.output_size, 1, 8, True)
    from jd_ner.modeling.batching import Example

    examples = [Example(i, 0, len(t), tuple(encode_chars(model.char_vocab, t)),
                        tuple(encode_bigrams(model.bigram_vocab, t))) for i, t in enumerate(texts)]
    before = predict_spans(model, examples, threshold=-1e9)
    with torch.no_grad():
        for p in model.aux_heads.parameters():
            p.fill_(float("nan"))
    after = predict_spans(model, examples, threshold=-1e9)
    assert before == after and all(math.isfinite(v) for spans in after.values() for *_, v in spans)


def test_multisample_dropout_draws_k_masks_and_averages_their_losses():
    texts = ["小米手机壳", "华为充电器"]
    model = tiny_model(texts).train()
    batch = labelled_batch(model, texts)
    seen = []
    head = model.head

    class Recorder(torch.nn.Module):
        def forward(self, h):
            scores = head(h)
            seen.append((h.detach().clone(), scores.detach().clone()))
            return scores

    model.head = Recorder()
    objective = Objective({"multisample_dropout": {"enabled": True, "samples": 3, "p": 0.5}})
    torch.manual_seed(0)
    loss, _ = objective(model, batch)
    assert len(seen) == 3
    inputs = [h for h, _ in seen]
    assert not torch.equal(inputs[0], inputs[1]) and not torch.equal(inputs[1], inputs[2])
    zeros = [(h == 0).float().mean().item() for h in inputs]
    assert all(0.3 < z < 0.7 for z in zeros)  # about p of the features dropped, each time
    valid = valid_cells(batch["char_mask"])
    expected = sum(multilabel_gp_loss(s, batch["labels"], valid) for _, s in seen) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_simcse_pools_over_real_characters_only():
    torch.manual_seed(0)
    h = torch.randn(2, 6, 4)
    mask = torch.tensor([[False, True, True, True, False, False],
                         [False, True, False, False, False, False]])
    expected = torch.stack([h[0, 1:4].mean(0), h[1, 1]])
    assert torch.allclose(pool(h, mask, "mean"), expected, atol=1e-6)
    noisy = h.clone()
    noisy[~mask] = 1e6  # [CLS], [SEP] and padding must not move the pooled vector
    assert torch.allclose(pool(noisy, mask, "mean"), expected, atol=1e-6)
    assert torch.equal(pool(h, mask, "cls"), h[:, 0])


def test_simcse_term_reads_the_character_mask(monkeypatch):
    texts = ["小米手机壳", "华为"]
    model = tiny_model(texts).train()
    batch = labelled_batch(model, texts)
    import jd_ner.modeling.tricks as tricks

    masks = []
    original = tricks.pool
    monkeypatch.setattr(tricks, "pool", lambda h, m, how: masks.append(m) or original(h, m, how))
    Objective({"simcse": {"enabled": True}})(model, batch)
    assert torch.equal(masks[0], torch.cat([batch["char_mask"], batch["char_mask"]]))
