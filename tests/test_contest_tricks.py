"""Adversarial training (FGM, PGD, AWP) and weight averaging (EMA, SWA), each against a
computation of its formula written here."""

from __future__ import annotations

import copy

import pytest
import torch

from jd_ner.modeling.adversarial import AdversarialConfig, Adversary, embedding_parameters
from jd_ner.modeling.averaging import EMA, SWA, AveragingConfig
from jd_ner.modeling.batching import Collator
from jd_ner.modeling.predict import collator_for
from jd_ner.modeling.training import TrainConfig, fit
from jd_ner.modeling.tricks import build_objective
from jd_ner.pipelines.train.nodes import build_model

from .test_distributed import tiny_examples

CFG = TrainConfig(epochs=3, batch_size=4, learning_rate=1e-2, amp=False, progress=False,
                  device="cpu", warmup_ratio=0.0, patience=0, resume="never")


def tiny(trick: str = "scratch"):
    from .conftest import tiny_config, tiny_features

    train, chars, bigrams = tiny_examples()
    config = tiny_config(trick)
    config["model"]["encoder"].update(dropout=0.0, num_layers=0)
    torch.manual_seed(0)
    model = build_model(config, chars, bigrams, None, None, {}, {"labels": ["4", "b"]},
                        tiny_features(), None)
    return model, build_objective(config["objective"], model), train


def batch_of(model, train):
    collate: Collator = collator_for(model)
    return collate(train[:4])


def test_the_embedding_tables_are_attacked_not_positions():
    model, _, _ = tiny()
    names = set(embedding_parameters(model))
    assert names == {"encoder.transformer.embeddings.word_embeddings.weight",
                     "encoder.bigram.0.weight"}


def test_fgm_step_gradient_is_the_mean_of_clean_and_attacked_gradients():
    model, objective, train = tiny()
    batch = batch_of(model, train)
    eps = 0.7
    # by hand: g at E, then the loss at E + eps * g_E / |g_E| for each table
    reference = copy.deepcopy(model)
    loss = objective(reference, batch)[0]
    clean = torch.autograd.grad(loss, list(reference.parameters()), allow_unused=True)
    tables = embedding_parameters(reference)
    position = {id(p): i for i, p in enumerate(reference.parameters())}
    with torch.no_grad():
        for param in tables.values():
            g = clean[position[id(param)]]
            param.add_(eps * g / g.norm())
    attacked = torch.autograd.grad(objective(reference, batch)[0], list(reference.parameters()),
                                   allow_unused=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adversary = Adversary(AdversarialConfig(method="fgm", epsilon=eps), model)
    adv = adversary.backward(objective(model, batch)[0], lambda: objective(model, batch)[0],
                             lambda x: x, 1, model)
    assert adv > loss.item()  # the attack raised the loss
    for (name, param), c, a in zip(model.named_parameters(), clean, attacked, strict=True):
        assert torch.equal(param, before[name]), name  # put back exactly
        if c is not None:
            torch.testing.assert_close(param.grad, 0.5 * (c + a), rtol=1e-5, atol=1e-7)


def test_fgm_moves_each_table_by_epsilon_and_pgd_stays_in_its_ball():
    model, objective, train = tiny()
    batch = batch_of(model, train)
    seen = {}

    def probe(method, **knobs):
        adversary = Adversary(AdversarialConfig(method=method, **knobs), model)
        original = {n: p.detach().clone() for n, p in adversary.targets.items()}
        norms = []

        def forward():  # called at each attacked point
            norms.append({n: (p - original[n]).norm().item() for n, p in adversary.targets.items()})
            return objective(model, batch)[0]

        model.zero_grad()
        adversary.backward(objective(model, batch)[0], forward, lambda x: x, 1, model)
        assert all(torch.equal(p, original[n]) for n, p in adversary.targets.items())
        seen[method] = norms

    probe("fgm", epsilon=0.5)
    assert seen["fgm"] == [pytest.approx({n: 0.5 for n in seen["fgm"][0]}, rel=1e-5)]
    probe("pgd", epsilon=0.5, alpha=0.3, steps=4)
    assert len(seen["pgd"]) == 4
    assert seen["pgd"][0] == pytest.approx({n: 0.3 for n in seen["pgd"][0]}, rel=1e-5)
    assert all(v <= 0.5 + 1e-5 for step in seen["pgd"] for v in step.values())
    assert max(seen["pgd"][-1].values()) == pytest.approx(0.5, rel=1e-4)  # projected back


def test_awp_moves_weights_within_their_relative_bound_and_restores_them():
    model, objective, train = tiny()
    batch = batch_of(model, train)
    adversary = Adversary(AdversarialConfig(method="awp", awp_lr=10.0, awp_epsilon=0.01), model)
    original = {n: p.detach().clone() for n, p in adversary.targets.items()}
    moved = {}

    def forward():
        moved.update({n: p.detach().clone() for n, p in adversary.targets.items()})
        return objective(model, batch)[0]

    adversary.backward(objective(model, batch)[0], forward, lambda x: x, 2, model)
    assert adversary.targets and all(".weight" in n for n in adversary.targets)
    for name, w in original.items():
        assert torch.all((moved[name] - w).abs() <= 0.01 * w.abs() + 1e-7), name
        assert torch.equal(adversary.targets[name], w)
    assert any(not torch.equal(moved[n], original[n]) for n in original)
    assert not adversary.active(1)  # before awp_start_epoch (2): plain steps


def grads_of(model, loss_fn):
    params = list(model.parameters())
    return torch.autograd.grad(loss_fn(), params, allow_unused=True)


def test_pgd_step_gradient_is_the_mean_of_clean_and_last_attacked_gradients():
    model, objective, train = tiny()
    batch = batch_of(model, train)
    eps, alpha, steps = 0.5, 0.3, 3
    # by hand: K steps of r <- proj(r + alpha * g / |g|) per table, g taken at the current
    # point (the clean gradient first); the gradient kept is the clean one's and the last's
    reference = copy.deepcopy(model)
    tables = embedding_parameters(reference)
    index = {id(p): i for i, p in enumerate(reference.parameters())}
    start = {n: p.detach().clone() for n, p in tables.items()}
    clean = grads_of(reference, lambda: objective(reference, batch)[0])
    g = clean
    for _ in range(steps):
        with torch.no_grad():
            for name, param in tables.items():
                d = g[index[id(param)]]
                r = param + alpha * d / d.norm() - start[name]
                if r.norm() > eps:
                    r = r * (eps / r.norm())
                param.copy_(start[name] + r)
        g = grads_of(reference, lambda: objective(reference, batch)[0])
    adversary = Adversary(AdversarialConfig(method="pgd", epsilon=eps, alpha=alpha, steps=steps),
                          model)
    adversary.backward(objective(model, batch)[0], lambda: objective(model, batch)[0],
                       lambda x: x, 1, model)
    for param, c, last in zip(model.parameters(), clean, g, strict=True):
        if c is not None:
            torch.testing.assert_close(param.grad, 0.5 * (c + last), rtol=1e-4, atol=1e-6)


def test_awp_raises_the_loss():
    model, objective, train = tiny()
    batch = batch_of(model, train)
    clean = objective(model, batch)[0].item()
    adversary = Adversary(AdversarialConfig(method="awp", awp_lr=1.0, awp_epsilon=0.05), model)
    adv = adversary.backward(objective(model, batch)[0], lambda: objective(model, batch)[0],
                             lambda x: x, 2, model)
    assert adv > clean


@pytest.mark.parametrize("attack", [dict(method="fgm", epsilon=0.0),
                                    dict(method="pgd", epsilon=0.0, alpha=0.0, steps=2),
                                    dict(method="awp", awp_lr=0.0, awp_start_epoch=1)])
def test_an_attack_of_size_zero_leaves_the_gradient_unchanged(attack):
    model, objective, train = tiny()
    batch = batch_of(model, train)
    plain = grads_of(model, lambda: objective(model, batch)[0])
    Adversary(AdversarialConfig(**attack), model).backward(
        objective(model, batch)[0], lambda: objective(model, batch)[0], lambda x: x, 1, model)
    for param, expected in zip(model.parameters(), plain, strict=True):
        if expected is not None:
            assert torch.equal(param.grad, expected)  # not 2x, 1.5x...


@pytest.mark.parametrize("attack", [dict(method="fgm", epsilon=0.0),
                                    dict(method="pgd", epsilon=0.0, alpha=0.0, steps=2),
                                    dict(method="awp", awp_lr=0.0, awp_start_epoch=1)])
def test_an_attack_of_size_zero_is_plain_training(attack):
    plain, objective, train = tiny()
    attacked = copy.deepcopy(plain)
    fit(plain, train, CFG, objective, None)
    history = fit(attacked, train, CFG, objective, None,
                  adversarial=AdversarialConfig(**attack)).history
    for (name, a), b in zip(plain.state_dict().items(), attacked.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
    assert all(r["loss_adversarial"] > 0 for r in history)


def test_ema_is_its_closed_form_on_a_toy_parameter():
    layer = torch.nn.Linear(1, 1, bias=False)
    values = [0.5, 2.0, -1.0, 4.0]
    with torch.no_grad():
        layer.weight.fill_(1000.0)  # the initial weight: no part of the average
    ema, d = EMA(layer, 0.9), 0.9
    seen = []
    for v in values:
        with torch.no_grad():
            layer.weight.fill_(v)
        ema.update(layer)
        seen.append(v)
        # the d-weighted mean of the weights so far: sum d^(t-i) w_i / sum d^(t-i)
        weights = [d ** (len(seen) - 1 - i) for i in range(len(seen))]
        expected = sum(w * x for w, x in zip(weights, seen, strict=True)) / sum(weights)
        assert ema.shadow["weight"].item() == pytest.approx(expected, rel=1e-6)
    assert EMA(layer, 0.9).steps == 0 and ema.steps == 4
    # the decay from a horizon in epochs
    assert AveragingConfig("ema", ema_epochs=4).ema_decay(245) == pytest.approx(1 - 1 / 980)
    assert AveragingConfig("ema", ema_epochs=0.5).ema_decay(1) == 0.0  # each step's own weights
    with ema.applied(layer):
        assert layer.weight.item() == pytest.approx(expected, rel=1e-6)
    assert layer.weight.item() == 4.0  # its own weights back


def test_swa_is_the_mean_of_the_last_snapshots():
    layer = torch.nn.Linear(2, 1)
    swa = SWA(2)
    for epoch, v in enumerate([1.0, 3.0, 8.0], start=1):
        with torch.no_grad():
            layer.weight.fill_(v)
        swa.add(layer, epoch)
    assert list(swa.epochs) == [2, 3]
    assert torch.equal(swa.average()["weight"], torch.full((1, 2), 5.5))


def test_fit_returns_the_ema_of_its_own_trajectory_and_the_swa_of_its_last_epochs():
    plain, objective, train = tiny()
    start = copy.deepcopy(plain)
    steps, epochs = [], []
    floats = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()  # noqa: E731
                        if v.is_floating_point()}
    fit(plain, train, CFG, objective, None, on_step=lambda *_: steps.append(floats(plain)),
        on_epoch_end=lambda r: epochs.append(floats(plain)))
    # EMA by hand over the same weights (averaging does not change the training itself):
    # the d-weighted mean of the steps' weights, d from a horizon of 1.5 epochs
    per_epoch = len(steps) // CFG.epochs
    d = 1 - 1 / (1.5 * per_epoch)
    total = [d ** (len(steps) - 1 - i) for i in range(len(steps))]
    shadow = {k: sum(w * s[k] for w, s in zip(total, steps, strict=True)) / sum(total) for k in steps[0]}
    ema_model = copy.deepcopy(start)
    fit(ema_model, train, CFG, objective, None, averaging=AveragingConfig("ema", ema_epochs=1.5))
    for name, value in shadow.items():
        torch.testing.assert_close(ema_model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    swa_model = copy.deepcopy(start)
    result = fit(swa_model, train, CFG, objective, None,
                 averaging=AveragingConfig("swa", swa_epochs=2))
    assert result.averaged_epochs == (2, 3)
    for name in shadow:
        torch.testing.assert_close(swa_model.state_dict()[name],
                                   (epochs[1][name] + epochs[2][name]) / 2, rtol=1e-5, atol=1e-6)
