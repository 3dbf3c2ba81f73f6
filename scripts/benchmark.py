"""Speed and memory of training and prediction for one or more tricks, on a given data file.

Prints, per trick: training titles/s, prediction titles/s, peak resident memory (and peak
CUDA memory on a GPU), parameter count, and each speed relative to the first trick. Each
trick runs in its own process so peak memory is its own; all run in one invocation so
the ratios compare like with like.

    python scripts/benchmark.py --train-file ../shared/data/jd/train.txt \
        --predict-file ../shared/data/jd/sample_per_line_preliminary_A.txt \
        --tricks baseline --train-titles 640 --predict-titles 2000 --refs a5dc2ea --profile

``--refs`` measures other git refs (each with its own code and script) in the same run, so
old and new code paths are compared like with like; ``--profile`` prints where the time goes.
``--models`` times trained models instead (saved model or ensemble folders, nothing trained):
prediction titles/s and peak memory of each, on the same titles.

    python scripts/benchmark.py --predict-file ../shared/data/jd/sample_per_line_preliminary_A.txt \
        --models data/06_models/ner_model/<version>/ner_model,<another> --predict-titles 10000

Settings come from ``conf/base`` exactly as ``kedro run --params=trick:<name>`` resolves
them; ``--set key=value`` overrides a training setting (e.g. ``--set optim.batch_size=16``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_parameters(conf: Path) -> dict:
    import warnings

    from kedro.config import OmegaConfigLoader

    # Kedro 1.7 calls OmegaConf's deprecated resolver API; not ours to fix, not worth printing.
    warnings.filterwarnings("ignore", message="register_new_resolver", category=UserWarning)

    loader = OmegaConfigLoader(str(conf), base_env="base", default_run_env="local")
    return loader["parameters"]


def _override(config: dict, assignments: list[str]) -> None:
    import yaml

    for item in assignments:
        key, _, value = item.partition("=")
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[last] = yaml.safe_load(value)


def measure_one(args: argparse.Namespace) -> dict:
    """Train one epoch on ``--train-titles`` titles and predict
    ``--predict-titles`` titles; report speeds and this process's peak memory."""
    import torch

    from jd_ner.config import resolve_trick
    from jd_ner.encoder_files import SavedEncoder
    from jd_ner.encoding import examples_for_model
    from jd_ner.modeling.adversarial import AdversarialConfig
    from jd_ner.modeling.averaging import AveragingConfig
    from jd_ner.modeling.ensemble import EnsembleModel, ensemble_members
    from jd_ner.modeling.training import TrainConfig, fit, resolve_device
    from jd_ner.modeling.tricks import build_objective
    from jd_ner.pipelines.features import nodes as features
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles
    from jd_ner.pipelines.train.nodes import build_model
    from jd_ner.text.bio import RawFile

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_parameters(args.conf)
    config = resolve_trick(args.trick, params["train"])
    _override(config, args.set or [])
    if config["model"]["encoder"]["init"] == "pretrained" and not args.char_encoder:
        sys.exit(f"{args.trick} starts from a pretrained character encoder (the default): give "
                 "--char-encoder data/06_models/char_encoder/<version>/char_encoder, or "
                 "measure `scratch`")
    raw = RawFile(str(args.train_file), Path(args.train_file).read_bytes())
    titles, _ = parse_labelled_titles(raw, params["ingest"])
    train = titles.iloc[: args.train_titles].reset_index(drop=True)
    # Vocabularies and lexicon from the whole file, as the features pipeline would build them
    # from a train split; only the model's inputs below are timed.
    # Tables the model does not read are left empty (build_model ignores them).
    fparams, pretrained, uses = params["features"], params["pretrained_encoder"], config["model"]
    torch.manual_seed(0)
    model = build_model(
        config, features.build_char_vocabulary(titles, pretrained, fparams),
        features.build_bigram_vocabulary(titles, fparams),
        features.build_pinyin_vocabulary(titles) if uses["pinyin"]["enabled"] else {},
        features.build_glyph_vocabulary(titles, fparams) if uses["glyph"]["enabled"] else {},
        features.build_entity_lexicon(titles, fparams) if uses["lexicon"]["enabled"] else {},
        features.build_label_schema(titles, titles.iloc[:0], titles.iloc[:0]), fparams, pretrained,
        SavedEncoder(args.char_encoder) if args.char_encoder else None,
        features.build_word_vocabulary(titles, fparams) if uses["words"]["enabled"] else None)
    optim = TrainConfig(**{**config["optim"], "epochs": 1, "progress": False})
    device = resolve_device(optim.device)
    examples = examples_for_model(model, train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # One epoch through the real training loop; the no-op evaluation keeps it to training.
    record = fit(model, examples, optim, build_objective(config["objective"], model),
                 lambda m: {"dev_f1": 0.0},
                 adversarial=AdversarialConfig(**config.get("adversarial", {})),
                 averaging=AveragingConfig(**config.get("averaging", {}))).history[0]
    model.to(device)
    # the default predicts with an ensemble: the members' forward passes are what it costs
    # (copies of the trained model stand in for the other members; training is per member)
    members = ensemble_members(config)
    predictor = model if members == 1 else EnsembleModel(
        [model, *(copy.deepcopy(model) for _ in range(members - 1))])

    test = titles_to_predict(args, titles)
    predict_seconds = time_prediction(predictor, test, optim.eval_batch_size, device, optim.amp,
                                      params["decode"])
    result = {
        "trick": config["trick"],
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_titles": len(train),
        "members": members,  # train titles/s is per member: an ensemble's training takes
        "train_titles_per_s": record["train_titles_per_s"],  # `members` times as long
        "train_seconds_per_step": record["train_seconds"] / -(-len(train) // optim.batch_size),
        "predict_titles": len(test),
        "predict_titles_per_s": len(test) / predict_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.profile:
        result["profile"] = profile(model, examples, test, config, params, optim, device)
    return result


def titles_to_predict(args: argparse.Namespace, titles=None):
    """The first ``--predict-titles`` titles of ``--predict-file`` (default: ``titles``)."""
    from jd_ner.pipelines.ingest.nodes import parse_test_titles
    from jd_ner.text.bio import RawFile

    if args.predict_file:
        titles = parse_test_titles(RawFile(str(args.predict_file),
                                           Path(args.predict_file).read_bytes()))
    return titles.iloc[: args.predict_titles].reset_index(drop=True)


def time_prediction(model, test, batch_size: int, device, amp: bool, decode: dict) -> float:
    """Seconds from raw titles to the validated submission text: encoding, the model's own
    feature extraction, the model (at its own decision threshold), decoding and writing."""
    import torch

    from jd_ner.pipelines.evaluate.nodes import predict_titles
    from jd_ner.pipelines.submit.nodes import write_submission

    start = time.perf_counter()
    pred = predict_titles(model, test.assign(spans="[]"),
                          {"batch_size": batch_size, "device": str(device), "amp": amp},
                          progress=False)
    write_submission(test, pred, model, decode)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_model(args: argparse.Namespace) -> dict:
    """Predict ``--predict-titles`` titles with a saved model or ensemble (``--model``), with
    the evaluate parameters' batch size, device and precision; speed and peak memory. The
    time includes the first call's start-up (thread pools, a CUDA context): small beside
    thousands of titles."""
    import torch

    from jd_ner.datasets import load_model
    from jd_ner.modeling.training import resolve_device
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles
    from jd_ner.text.bio import RawFile

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_parameters(args.conf)
    titles = None
    if not args.predict_file:
        raw = RawFile(str(args.train_file), Path(args.train_file).read_bytes())
        titles = parse_labelled_titles(raw, params["ingest"])[0]
    test = titles_to_predict(args, titles)
    model = load_model(args.model)
    evaluate = params["evaluate"]
    device = resolve_device(evaluate["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_prediction(model, test, int(evaluate["batch_size"]), device,
                              bool(evaluate["amp"]), params["decode"])
    result = {"model": str(args.model), "members": len(getattr(model, "members", [model])),
              "parameters": sum(p.numel() for p in model.parameters()),
              "threshold": model.spec.threshold, "predict_titles": len(test),
              "predict_titles_per_s": len(test) / seconds,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "device": str(device) + (f" ({torch.cuda.get_device_name()})"
                                       if device.type == "cuda" else
                                       f" ({torch.get_num_threads()} threads)")}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def compare_models(args: argparse.Namespace, models: list[str]) -> list[dict]:
    """``measure_model`` of each model, each in its own process, printed as one table."""
    results = []
    for model in models:
        cmd = [sys.executable, __file__, "--model", model, "--conf", str(args.conf),
               "--predict-titles", str(args.predict_titles), "--threads", str(args.threads),
               *(["--predict-file", str(args.predict_file)] if args.predict_file else
                 ["--train-file", str(args.train_file)])]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        if out.returncode != 0:
            sys.exit(f"benchmark of {model} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = results[0]
    print(f"device: {base['device']}; predict titles: {base['predict_titles']}")
    print(f"{'model':<60}{'members':>8}{'params':>12}{'predict t/s':>13}{'×':>6}"
          f"{'peak RSS MiB':>14}")
    for r in results:
        print(f"{r['model'][-60:]:<60}{r['members']:>8}{r['parameters']:>12,}"
              f"{r['predict_titles_per_s']:>13.1f}"
              f"{r['predict_titles_per_s'] / base['predict_titles_per_s']:>6.2f}"
              f"{r['peak_rss_mib']:>14.0f}"
              + (f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""))
    return results


def profile(model, examples, test, config, params, optim, device) -> dict:
    """Shares of a training step and of prediction, timed part by part (one thread's wall
    clock; backward is one part because autograd runs it as one)."""
    import random

    import torch

    from jd_ner.encoding import examples_for_model
    from jd_ner.modeling.batching import length_bucketed_batches, sequential_batches
    from jd_ner.modeling.decode import merge_windows, spans_from_scores
    from jd_ner.modeling.heads import valid_cells
    from jd_ner.modeling.predict import collator_for
    from jd_ner.modeling.tricks import build_objective
    from jd_ner.pipelines.submit.nodes import write_submission
    from jd_ner.text.lexicon import LexiconMatcher  # noqa: F401  (imported before timing)

    objective = build_objective(config["objective"], model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cpu", "cuda"))
    collate = collator_for(model)
    train_parts = dict.fromkeys(["collation", "embeddings", "encoder", "head projection",
                                 "span scores", "loss", "backward", "optimizer"], 0.0)
    model.to(device).train()
    head = model.head
    clock = time.perf_counter

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def lap(marks):
        sync()
        marks.append(clock())

    batches = length_bucketed_batches(examples, optim.batch_size, random.Random(0))
    warmup = min(2, len(batches) - 1)  # first batches left out (allocator, caches)
    for n, idx in enumerate(batches):
        marks = [clock()]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx]).items()}
        lap(marks)
        embeds = model.encoder.embed(batch["input_ids"], batch.get("bigram_ids"))
        lap(marks)
        h, _ = model.encoder.encode(embeds, batch["attention_mask"])
        if model.lexicon is not None:
            h = h + model.lexicon(batch["lexicon_ids"])
        if model.char_features is not None:
            h = model.char_features(h, model.char_features.vectors(batch))
        lap(marks)
        projected = head.dense(h)
        lap(marks)
        scores = head.scores(projected)
        lap(marks)
        loss = objective.span_loss(scores, batch["labels"], valid_cells(batch["char_mask"]))
        lap(marks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lap(marks)
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
        optimizer.step()
        lap(marks)
        if n >= warmup:
            for part, a, b in zip(train_parts, marks, marks[1:], strict=False):
                train_parts[part] += b - a
    model.eval()
    titles = test.assign(spans="[]")
    predict_parts = dict.fromkeys(["encoding", "model", "decoding", "writing"], 0.0)
    start = clock()
    encoded = examples_for_model(model, titles)
    predict_parts["encoding"] = clock() - start
    windows = {}
    with torch.inference_mode():
        for idx in sequential_batches(encoded, optim.eval_batch_size):
            chunk = [encoded[i] for i in idx]
            start = clock()
            batch = {k: v.to(device) for k, v in collate(chunk, with_labels=False).items()}
            scores = model(batch)
            sync()
            middle = clock()
            for ex, spans in zip(chunk, spans_from_scores(scores.float(), batch["char_mask"]),
                                 strict=True):
                windows.setdefault(ex.title_id, []).append(
                    (ex.char_start, len(ex), ex.title_length, spans))
            predict_parts["model"] += middle - start
            predict_parts["decoding"] += clock() - middle
    start = clock()
    merged = {tid: merge_windows(w) for tid, w in windows.items()}
    predict_parts["decoding"] += clock() - start
    import pandas as pd

    from jd_ner.encoding import spans_cell

    rows = pd.DataFrame({"title_id": titles["title_id"],
                         "spans": [spans_cell([(s, e, model.labels[t]) for s, e, t, _ in
                                               merged.get(int(tid), [])]) for tid in titles["title_id"]],
                         "scores": [[v for *_, v in merged.get(int(tid), [])]
                                    for tid in titles["title_id"]]})
    start = clock()
    write_submission(titles, rows, model, params["decode"])
    predict_parts["writing"] = clock() - start
    return {"train": train_parts, "predict": predict_parts}


def measure_features(args: argparse.Namespace) -> dict:
    """Seconds to build pinyin, glyph and lexicon-match ids for the prediction titles,
    with vocabularies and lexicon from the train file (as the features pipeline does)."""
    from jd_ner.encoding import encode_titles, lexicon_ids, sequence_table
    from jd_ner.pipelines.features import nodes as features
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, parse_test_titles
    from jd_ner.text.bio import RawFile
    from jd_ner.text.lexicon import LexiconMatcher, select_entries
    from jd_ner.text.vocab import Vocab

    params = load_parameters(args.conf)
    fparams = params["features"]
    titles, _ = parse_labelled_titles(
        RawFile(str(args.train_file), Path(args.train_file).read_bytes()), params["ingest"])
    source = args.predict_file or args.train_file
    test = parse_test_titles(RawFile(str(source), Path(source).read_bytes())) \
        if args.predict_file else titles
    test = test.iloc[: args.feature_titles]
    start = time.perf_counter()
    pinyin_vocab = features.build_pinyin_vocabulary(titles)
    glyph_vocab = features.build_glyph_vocabulary(titles, fparams)
    lexicon = features.build_entity_lexicon(titles, fparams)
    vocab_seconds = time.perf_counter() - start
    char_vocab = Vocab.from_dict(features.build_char_vocabulary(titles, None, fparams))
    encoded = encode_titles(test.assign(spans="[]"), char_vocab, None, ["x"],
                            fparams["max_chars"], fparams["window_stride"])
    timings = {}
    start = time.perf_counter()
    features.encode_pinyin(encoded, pinyin_vocab, fparams)
    timings["pinyin"] = time.perf_counter() - start
    start = time.perf_counter()
    features.encode_glyphs(encoded, glyph_vocab, fparams)
    timings["glyph"] = time.perf_counter() - start
    labels = sorted({t for types in lexicon.values() for t in types})
    start = time.perf_counter()
    matcher = LexiconMatcher(select_entries(lexicon, "all"), labels)
    sequence_table(encoded, "lexicon_ids", lexicon_ids(matcher, 4))
    timings["lexicon"] = time.perf_counter() - start
    return {"titles": len(test), "vocab_and_lexicon_seconds": vocab_seconds,
            **{f"{k}_seconds": v for k, v in timings.items()},
            "total_seconds": sum(timings.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-file", type=Path,
                        help="BIO file to train on (with --models: titles to predict when there "
                             "is no --predict-file)")
    parser.add_argument("--predict-file", type=Path,
                        help="one-title-per-line file to predict (default: the train titles)")
    parser.add_argument("--tricks", default="baseline",
                        help="comma-separated tricks to compare; ratios are relative to the first")
    parser.add_argument("--train-titles", type=int, default=640)
    parser.add_argument("--predict-titles", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a resolved training setting, e.g. optim.batch_size=16")
    parser.add_argument("--char-encoder", type=Path,
                        help="a pretrained character encoder folder, for tricks that start from it")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--features", action="store_true",
                        help="also time pinyin/glyph/lexicon feature extraction")
    parser.add_argument("--feature-titles", type=int, default=10000)
    parser.add_argument("--refs", default="",
                        help="comma-separated git refs to measure too, each with its own code, "
                             "configuration and benchmark script (from a temporary worktree), "
                             "e.g. --refs a5dc2ea: old and new code paths in one run")
    parser.add_argument("--profile", action="store_true",
                        help="also print where a training step and prediction spend their time")
    parser.add_argument("--models", default="",
                        help="comma-separated saved model (or ensemble) folders: time their "
                             "prediction instead of training tricks")
    parser.add_argument("--trick", help=argparse.SUPPRESS)  # internal: measure one trick
    parser.add_argument("--model", help=argparse.SUPPRESS)  # internal: measure one model
    args = parser.parse_args()

    if not (args.train_file or ((args.models or args.model) and args.predict_file)):
        parser.error("--train-file is required (with --models, --predict-file will do)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.models and not models:
        parser.error("--models names no model folder")
    training = {"--tricks": args.tricks != parser.get_default("tricks"), "--refs": args.refs,
                "--set": args.set, "--profile": args.profile, "--features": args.features,
                "--char-encoder": args.char_encoder}
    if models and any(training.values()):
        parser.error(f"--models times saved models: {', '.join(k for k, v in training.items() if v)}"
                     " would be ignored")
    if args.trick:
        print(json.dumps(measure_one(args)))
        return
    if args.model:
        print(json.dumps(measure_model(args)))
        return
    if models:
        results = compare_models(args, models)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
        return
    common = ["--train-file", str(args.train_file.resolve()),
              "--train-titles", str(args.train_titles), "--predict-titles", str(args.predict_titles),
              "--threads", str(args.threads),
              *(["--predict-file", str(args.predict_file.resolve())] if args.predict_file else []),
              *[f"--set={item}" for item in args.set or []]]
    tricks = [t.strip() for t in args.tricks.split(",") if t.strip()]
    refs = [r.strip() for r in args.refs.split(",") if r.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = [("", ROOT)]
        for ref in refs:
            tree = Path(tmp) / ref.replace("/", "_")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
                           check=True, capture_output=True)
            sources.append((ref, tree))
        try:
            for ref, tree in sources:
                for trick in tricks:
                    extra = ["--conf", str(args.conf)] if not ref else []
                    if args.char_encoder and not ref:
                        extra += ["--char-encoder", str(args.char_encoder.resolve())]
                    if args.profile and not ref:
                        extra.append("--profile")
                    cmd = [sys.executable, str(tree / "scripts" / "benchmark.py"), "--trick", trick,
                           *common, *extra]
                    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
                    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
                    if out.returncode != 0:
                        sys.exit(f"benchmark of {trick}{'@' + ref if ref else ''} failed:\n"
                                 f"{out.stderr[-3000:]}")
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    result["trick"] = trick + (f"@{ref}" if ref else "")
                    results.append(result)
        finally:
            for _, tree in sources[1:]:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    base = results[0]
    header = (f"{'trick':<28}{'params':>11}{'train t/s':>11}{'step ×':>8}"
              f"{'predict t/s':>13}{'peak RSS MiB':>14}")
    print(f"device: {base['device']}; train titles: {base['train_titles']}; "
          f"predict titles: {base['predict_titles']}")
    print(header)
    for r in results:
        print(f"{r['trick']:<28}{r['parameters']:>11,}{r['train_titles_per_s']:>11.1f}"
              f"{r['train_seconds_per_step'] / base['train_seconds_per_step']:>8.2f}"
              f"{r['predict_titles_per_s']:>13.1f}{r['peak_rss_mib']:>14.0f}"
              + (f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else "")
              + (f"  ({r['members']} members: params and train t/s per member, predict t/s "
                 "the ensemble's)" if r.get("members", 1) > 1 else ""))
    for r in results:
        if "profile" in r:
            for phase, parts in r["profile"].items():
                total = sum(parts.values())
                print(f"{r['trick']} {phase}: " + ", ".join(
                    f"{name} {seconds / total:.0%}" for name, seconds in parts.items()))
    if args.features:
        f = measure_features(args)
        print(f"feature extraction of {f['titles']} titles: pinyin {f['pinyin_seconds']:.1f} s, "
              f"glyph {f['glyph_seconds']:.1f} s, lexicon matching {f['lexicon_seconds']:.1f} s "
              f"(total {f['total_seconds']:.1f} s, {f['titles'] / f['total_seconds']:.0f} titles/s);"
              f" vocabularies and lexicon from the train file {f['vocab_and_lexicon_seconds']:.1f} s")
        results.append({"features": f})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
