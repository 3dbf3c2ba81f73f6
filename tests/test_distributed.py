"""Data-parallel training: two CPU processes (gloo, started by torchrun) against one process
on the same global batches."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from jd_ner.distributed import DistributedSettings, train_distributed
from jd_ner.modeling.adversarial import AdversarialConfig
from jd_ner.modeling.averaging import AveragingConfig
from jd_ner.modeling.batching import Example
from jd_ner.modeling.training import TrainConfig, fit, shard
from jd_ner.modeling.tricks import build_objective
from jd_ner.pipelines.train.nodes import build_model
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab, encode_bigrams, encode_chars

from .conftest import tiny_config, tiny_features


def test_shards_cover_the_batch_once_and_their_factors_restore_the_global_mean():
    batch = list(range(7))
    parts = [shard(batch, r, 3) for r in range(3)]
    assert sorted(i for part, _ in parts for i in part) == batch
    # averaging factor * (mean over the part) over ranks = mean over the batch
    values = torch.arange(7.0) ** 2
    mean = sum(f * values[p].mean() for p, f in parts) / 3
    assert mean.item() == pytest.approx(values.mean().item())
    assert shard([4], 1, 2) == ([4], 0.0)  # an empty part: one stand-in title, no weight


TEXTS = ["小米手机壳硅胶", "华为充电器快充", "苹果数据线", "小米充电器", "华为手机壳",
         "苹果手机膜钢化", "充电宝小米", "数据线华为快充", "硅胶壳苹果", "钢化膜华为"]


def tiny_examples() -> tuple[list[Example], dict, dict]:
    chars, bigrams = build_char_vocab(TEXTS), build_bigram_vocab(TEXTS, 1)
    examples = [Example(i, 0, len(t), tuple(encode_chars(chars, t)),
                        tuple(encode_bigrams(bigrams, t)), ((0, 1, i % 2), (2, 3, 1)))
                for i, t in enumerate(TEXTS)]
    return examples, chars.to_dict(), bigrams.to_dict()


def tiny_model(chars: dict, bigrams: dict, trick: str = "scratch"):
    config = tiny_config(trick)
    # the two runs must compute the same function: no dropout; and no attention layer,
    # whose key bias gets a zero gradient up to rounding, which Adam's update magnifies
    config["model"]["encoder"].update(dropout=0.0, num_layers=0)
    torch.manual_seed(0)
    model = build_model(config, chars, bigrams, None, None, {}, {"labels": ["4", "b"]},
                        tiny_features(), None)
    model.tricks = {"adversarial": AdversarialConfig(**config["adversarial"]),
                    "averaging": AveragingConfig(**config["averaging"])}
    return model, build_objective(config["objective"], model)


CFG = TrainConfig(epochs=2, batch_size=3, learning_rate=1e-2, amp=False, progress=False,
                  device="cpu", warmup_ratio=0.0, patience=0, resume="never")


@pytest.mark.parametrize("trick", ["scratch", "boundary+main_entity", "fgm+ema"])
def test_two_gloo_processes_take_the_same_steps_as_one_process(trick):
    # 10 titles in batches of 3 and 1: parts of 2 and 1 titles (unequal), and of 1 and 0
    # (an empty part)
    train, chars, bigrams = tiny_examples()
    cfg = CFG
    single, objective = tiny_model(chars, bigrams, trick)
    twin = copy.deepcopy(single)
    tricks = single.tricks
    alone = fit(single, train, cfg, objective, None, **tricks)
    together = train_distributed(twin, train, cfg, objective, None, None,
                                 DistributedSettings(nproc_per_node=2, backend="gloo"),
                                 keep_gradients=True, **tricks)
    # the last step's gradients (averaged over the ranks) and every updated weight
    for (name, a), (_, b) in zip(single.named_parameters(), twin.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)
    untrained = tiny_model(chars, bigrams)[0]
    assert not torch.equal(single.head.dense.weight, untrained.head.dense.weight)  # it trained
    # the epoch losses sum over both ranks' titles
    for one, two in zip(alone.history, together.history, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)


def test_random_tricks_train_on_two_processes():
    # R-Drop's and mixup's randomness differs per rank (each its own dropout masks and
    # partners), so only that they run and learn is checked
    train, chars, bigrams = tiny_examples()
    model, objective = tiny_model(chars, bigrams, "rdrop+mixup+simcse+multisample_dropout")
    result = train_distributed(model, train, CFG, objective, None, None,
                               DistributedSettings(nproc_per_node=2, backend="gloo"))
    assert len(result.history) == 2 and all(r["loss_rdrop"] > 0 for r in result.history)


def test_a_kedro_run_on_two_processes_writes_its_outputs_once(project):
    from jd_ner.config import flatten

    from .test_pipeline_run import TINY_RUN, kedro, newest

    # a `kedro run` process of its own, as a user's: MLflow keeps per-process state
    settings = {**flatten(TINY_RUN), "trick": "scratch", "train.optim.epochs": 2,
                "train.distributed.nproc_per_node": 2}
    done = kedro(project, "run", "--pipelines=train",
                 "--params=" + ",".join(f"{k}={v}" for k, v in settings.items()))
    assert done.returncode == 0, done.stderr[-3000:]
    data = project / "data"
    assert len(list((data / "06_models/ner_model").iterdir())) == 1
    history = newest(data / "08_reporting", "training_history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # one record per epoch, not one per process
    config = json.loads(newest(data / "06_models", "training_config.json").read_text())
    assert config["distributed"]["nproc_per_node"] == 2
    assert not list((data / "06_models/checkpoints").rglob("*.pt"))  # rank 0 cleared its own
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("jd_ner").experiment_id])
    assert len(runs) == 1
    steps = client.get_metric_history(runs[0].info.run_id, "epoch/dev_f1")
    assert sorted(m.step for m in steps) == [1, 2]  # rank 0 logged each epoch once


@pytest.mark.parametrize("result_written", [True, False])
def test_a_process_failing_at_shutdown_keeps_rank_0s_result_but_a_failed_run_raises(
        monkeypatch, caplog, result_written):
    import subprocess
    from pathlib import Path

    from jd_ner import distributed

    train, chars, bigrams = tiny_examples()
    model, objective = tiny_model(chars, bigrams)
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.head.dense.weight.add_(1.0)

    def torchrun(command, check):  # rank 0 finished (or not); torchrun reports a failure
        folder = Path(command[command.index("--payload") + 1])
        if result_written:
            torch.save({"state": trained.state_dict(), "result": "fit result", "gradients": {}},
                       folder / distributed.RESULT)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(distributed.subprocess, "run", torchrun)
    run = lambda: train_distributed(model, train, CFG, objective, None, None,  # noqa: E731
                                    DistributedSettings(nproc_per_node=2, backend="gloo"))
    if not result_written:
        with pytest.raises(RuntimeError, match=r"distributed training failed \(torchrun exit status 1\)"):
            run()
        return
    assert run() == "fit result"
    assert torch.equal(model.head.dense.weight, trained.head.dense.weight)
    assert "failed while shutting down" in caplog.text
