"""The loss-side tricks against their formulas, on small random tensors."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jd_ner.config import resolve_trick
from jd_ner.modeling.heads import valid_cells
from jd_ner.modeling.losses import (
    gp_divergence,
    multilabel_gp_loss,
    rdrop_loss,
    simcse_loss,
    soft_label_gp_loss,
)
from jd_ner.modeling.tricks import Mixer, Objective

from .test_model_io import batch_for, tiny_model


def random_case(seed=0, b=3, t=4, n=7):
    torch.manual_seed(seed)
    scores = torch.randn(b, t, n, n) * 3
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, 0] = False
    mask[1, 4:] = False  # padded cells present
    valid = valid_cells(mask)
    labels = (torch.rand(b, t, n, n) < 0.1) & valid
    return scores, labels, valid


def test_label_smoothing_with_zero_epsilon_is_the_hard_loss_exactly():
    scores, labels, valid = random_case()
    assert torch.equal(soft_label_gp_loss(scores, labels, valid, 0.0),
                       multilabel_gp_loss(scores, labels, valid))


def brute_soft(scores, labels, valid, eps):
    total, count = 0.0, 0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            neg, pos = 0.0, 0.0
            for s, y, v in zip(scores[i, j].flatten().tolist(), labels[i, j].flatten().tolist(),
                               valid[i, 0].flatten().tolist(), strict=True):
                if v:
                    p = y * (1 - eps) + eps / 2
                    neg += math.exp(s) * (1 - p)
                    pos += math.exp(-s) * p
            total += math.log(1 + neg) + math.log(1 + pos)
            count += 1
    return total / count


def test_label_smoothing_matches_its_formula_is_finite_and_ignores_invalid_cells():
    scores, labels, valid = random_case(1)
    scores.requires_grad_(True)
    loss = soft_label_gp_loss(scores, labels, valid, 0.2)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(brute_soft(scores.detach(), labels, valid, 0.2), rel=1e-5)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[~valid.expand_as(scores)] == 0).all()
    assert (scores.grad[valid.expand_as(scores)] != 0).all()


def test_divergence_is_zero_on_itself_symmetric_and_non_negative():
    s, _, valid = random_case(2)
    t = s + torch.randn_like(s)
    assert torch.equal(gp_divergence(s, s, valid), torch.zeros(s.shape[:2]))
    assert torch.allclose(gp_divergence(s, t, valid), gp_divergence(t, s, valid))
    assert (gp_divergence(s, t, valid) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_divergence_is_finite_in_half_precision_with_padding_forward_and_backward(dtype):
    s, _, valid = random_case(3)
    s = (s * 10).to(dtype)  # large logits
    t = (s.float() + torch.randn(s.shape) * 5).to(dtype)
    s[~valid.expand_as(s)] = float("inf")  # fp16 overflow in padded cells must not leak
    t[~valid.expand_as(t)] = float("-inf")
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = rdrop_loss(s, t, valid, alpha=4.0)
    assert torch.isfinite(loss)
    loss.backward()
    mask = valid.expand_as(s)
    for grad in (s.grad, t.grad):
        assert torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_divergence_gradient_reaches_every_valid_cell():
    # The write-up clips logits to [eps, 1] first, which zeroes the gradient of every
    # negative score; here every valid cell must get a gradient.
    s, _, valid = random_case(4)
    s = s.clone().requires_grad_(True)
    t = (s.detach() + torch.randn_like(s)).requires_grad_(True)
    rdrop_loss(s, t, valid, alpha=1.0).backward()
    mask = valid.expand_as(s)
    assert (s.grad[mask] != 0).all() and (t.grad[mask] != 0).all()
    assert (s.grad[~mask] == 0).all()
    assert (s.detach()[mask] < 0).any()  # negative logits are among them


def test_simcse_equals_hand_computed_value_on_two_sentences():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    cos = (z @ z.T).tolist()
    # row i's positive is its other view: 0<->2, 1<->3; self-pairs are excluded
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    expected = 0.0
    for i in range(4):
        others = [math.exp(cos[i][j] / tau) for j in range(4) if j != i]
        expected += -math.log(math.exp(cos[i][partner[i]] / tau) / sum(others))
    expected /= 4
    assert simcse_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


def test_simcse_falls_when_views_agree():
    torch.manual_seed(5)
    z1 = torch.randn(6, 8)
    far = simcse_loss(z1, torch.randn(6, 8), 0.1)
    near = simcse_loss(z1, z1 + 0.01 * torch.randn(6, 8), 0.1)
    assert near < far


def test_multisample_dropout_with_p_zero_is_the_plain_loss():
    model = tiny_model(["小米手机壳", "华为 充电器", "ab12"], labels=("1", "4")).eval()
    batch = batch_for(model, ["小米手机壳", "华为 充电器", "ab12"])
    batch["labels"] = torch.zeros(3, 2, *batch["input_ids"].shape[1:] * 2, dtype=torch.bool)
    batch["labels"][0, 0, 1, 2] = True
    plain, _ = Objective({})(model, batch)
    msd, _ = Objective({"multisample_dropout": {"enabled": True, "samples": 3, "p": 0.0}})(
        model, batch)
    assert torch.allclose(plain, msd, atol=1e-6)


def test_mixup_with_lambda_one_is_the_plain_loss(monkeypatch):
    texts = ["小米手机壳", "华为充电器", "ab12c"]  # equal lengths: the union mask is each own
    model = tiny_model(texts).eval()
    batch = batch_for(model, texts)
    batch["labels"] = torch.zeros(3, 2, *batch["input_ids"].shape[1:] * 2, dtype=torch.bool)
    batch["labels"][1, 1, 1, 3] = True
    plain, _ = Objective({})(model, batch)
    for layer in ("encoder", "embeddings"):
        objective = Objective({"mixup": {"enabled": True, "probability": 1.0, "layer": layer}})
        monkeypatch.setattr(objective, "sample_mixer",
                            lambda *a, layer=layer: Mixer(1.0, torch.tensor([2, 0, 1]), layer))
        mixed, _ = objective(model, batch)
        assert torch.allclose(plain, mixed, atol=1e-6), layer


def test_mixup_loss_is_the_lambda_weighted_pair_of_losses(monkeypatch):
    texts = ["小米手机壳", "华为", "ab12c 34"]
    model = tiny_model(texts).eval()
    batch = batch_for(model, texts)
    batch["labels"] = torch.zeros(3, 2, *batch["input_ids"].shape[1:] * 2, dtype=torch.bool)
    batch["labels"][0, 0, 1, 2] = True
    batch["labels"][2, 1, 3, 5] = True
    mixer = Mixer(0.3, torch.tensor([2, 0, 1]), "encoder")
    objective = Objective({"mixup": {"enabled": True}})
    monkeypatch.setattr(objective, "sample_mixer", lambda *a: mixer)
    got, _ = objective(model, batch)
    with torch.no_grad():
        scores = model.head(mixer(model.features(batch)))
    valid = valid_cells(mixer.union(batch["char_mask"]))
    expected = 0.3 * multilabel_gp_loss(scores, batch["labels"], valid) + 0.7 * multilabel_gp_loss(
        scores, batch["labels"][mixer.perm], valid)
    assert torch.allclose(got, expected, atol=1e-6)


def test_rdrop_and_simcse_share_one_duplicated_forward(monkeypatch):
    texts = ["小米手机壳", "华为"]
    model = tiny_model(texts).train()
    batch = batch_for(model, texts)
    batch["labels"] = torch.zeros(2, 2, *batch["input_ids"].shape[1:] * 2, dtype=torch.bool)
    calls = []
    original = model.features
    monkeypatch.setattr(model, "features", lambda b, m=None: calls.append(
        b["input_ids"].shape[0]) or original(b, m))
    loss, parts = Objective({"rdrop": {"enabled": True}, "simcse": {"enabled": True}})(model, batch)
    assert calls == [4]
    assert set(parts) == {"loss_main", "loss_rdrop", "loss_simcse"}
    assert torch.isfinite(loss) and parts["loss_rdrop"] > 0


def test_presets_combine_and_unknown_settings_fail():
    train = {"model": {"encoder": {"dropout": 0.1}}, "optim": {}, "objective": {
        "rdrop": {"enabled": False}, "simcse": {"enabled": False}},
        "presets": {"rdrop": {"objective": {"rdrop": {"enabled": True}}},
                    "simcse": {"objective": {"simcse": {"enabled": True}}},
                    "typo": {"objective": {"rdorp": {"enabled": True}}}}}
    both = resolve_trick("rdrop+simcse", train)
    assert both["objective"]["rdrop"]["enabled"] and both["objective"]["simcse"]["enabled"]
    assert both["trick"] == "rdrop+simcse"
    with pytest.raises(ValueError, match="known tricks: rdrop, simcse, typo"):
        resolve_trick("mixup", train)
    with pytest.raises(ValueError, match="unknown setting 'objective.rdorp'|'rdorp'"):
        resolve_trick("typo", train)


def test_code_defaults_match_the_yaml_defaults():
    """Objectives built without Kedro (tests, notebooks) use the same defaults as a run."""
    import yaml

    from jd_ner.modeling.tricks import DEFAULTS

    conf = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_train.yml"
    assert yaml.safe_load(conf.read_text())["train"]["objective"] == DEFAULTS
