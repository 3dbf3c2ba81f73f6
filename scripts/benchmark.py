"""Speed and memory of training and prediction for one or more tricks, on a given data file.

Prints, per trick: training titles/s, prediction titles/s, peak resident memory (and peak
CUDA memory on a GPU), parameter count, and each speed relative to the first trick. Each
trick runs in its own process so peak memory is its own; all run in one invocation so
the ratios compare like with like.

    python scripts/benchmark.py --train-file ../shared/data/jd/train.txt \
        --predict-file ../shared/data/jd/sample_per_line_preliminary_A.txt \
        --tricks baseline --train-titles 640 --predict-titles 2000

Settings come from ``conf/base`` exactly as ``kedro run --params=trick:<name>`` resolves
them; ``--set key=value`` overrides a training setting (e.g. ``--set optim.batch_size=16``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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
    from jd_ner.encoding import examples_for_model
    from jd_ner.modeling.predict import predict_spans
    from jd_ner.modeling.training import TrainConfig, fit, resolve_device
    from jd_ner.modeling.tricks import build_objective
    from jd_ner.pipelines.features import nodes as features
    from jd_ner.pipelines.ingest.nodes import parse_labelled_titles, parse_test_titles
    from jd_ner.pipelines.train.nodes import build_model
    from jd_ner.text.bio import RawFile

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_parameters(args.conf)
    config = resolve_trick(args.trick, params["train"])
    _override(config, args.set or [])
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
        features.build_label_schema(titles, titles.iloc[:0], titles.iloc[:0]), fparams, pretrained)
    optim = TrainConfig(**{**config["optim"], "epochs": 1, "progress": False})
    device = resolve_device(optim.device)
    examples = examples_for_model(model, train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # One epoch through the real training loop; the no-op evaluation keeps it to training.
    record = fit(model, examples, optim, build_objective(config["objective"], model),
                 lambda m: {"dev_f1": 0.0}).history[0]
    model.to(device)

    if args.predict_file:
        test = parse_test_titles(RawFile(str(args.predict_file), Path(args.predict_file).read_bytes()))
    else:
        test = titles
    test = test.iloc[: args.predict_titles].reset_index(drop=True)
    # Timed from raw titles: encoding and the model's own feature extraction included.
    start = time.perf_counter()
    predict_spans(model, examples_for_model(model, test.assign(spans="[]")),
                  optim.eval_batch_size, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    predict_seconds = time.perf_counter() - start
    result = {
        "trick": config["trick"],
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_titles": len(train),
        "train_titles_per_s": record["train_titles_per_s"],
        "train_seconds_per_step": record["train_seconds"] / -(-len(train) // optim.batch_size),
        "predict_titles": len(test),
        "predict_titles_per_s": len(test) / predict_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


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
    parser.add_argument("--train-file", type=Path, required=True, help="BIO file to train on")
    parser.add_argument("--predict-file", type=Path,
                        help="one-title-per-line file to predict (default: the train titles)")
    parser.add_argument("--tricks", default="baseline",
                        help="comma-separated tricks to compare; ratios are relative to the first")
    parser.add_argument("--train-titles", type=int, default=640)
    parser.add_argument("--predict-titles", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a resolved training setting, e.g. optim.batch_size=16")
    parser.add_argument("--conf", type=Path, default=ROOT / "conf")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--features", action="store_true",
                        help="also time pinyin/glyph/lexicon feature extraction")
    parser.add_argument("--feature-titles", type=int, default=10000)
    parser.add_argument("--trick", help=argparse.SUPPRESS)  # internal: measure one trick
    args = parser.parse_args()

    if args.trick:
        print(json.dumps(measure_one(args)))
        return
    results = []
    for trick in [t.strip() for t in args.tricks.split(",") if t.strip()]:
        cmd = [sys.executable, __file__, "--trick", trick, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"benchmark of {trick} failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
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
              + (f"  peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""))
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
