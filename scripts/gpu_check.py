"""A short CUDA check: the default model and a pretrained-encoder model train in bf16 and in
fp16 with loss scaling, the loss falls and stays finite; training and prediction speed and
peak GPU memory are printed.

Needs only torch, transformers, numpy, safetensors, tqdm and PyYAML with the project's own
modelling code (no Kedro, MLflow, pandas or pypinyin): copy the repository and the contest
file to a GPU box and run

    PYTHONPATH=src python scripts/gpu_check.py --train-file train.txt

The "pretrained" encoder is a local Hugging Face folder (``--pretrained DIR``); without one,
a randomly initialised 4-layer BERT is saved to a temporary folder and loaded back through
the same code path (``AutoModel.from_pretrained`` on a local directory), so the check needs
no download. The tests run it on the CPU: ``--device cpu --steps 3``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_titles(path: Path, max_chars: int, stride: int):
    """Examples (one per window) with their label index, straight from the BIO file."""
    from jd_ner.modeling.batching import Example, window_starts
    from jd_ner.text.bio import decode, parse_bio
    from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab, encode_bigrams, encode_chars

    titles, _ = parse_bio(decode(path.read_bytes(), str(path)), str(path))
    texts = [t.text for t in titles]
    labels = sorted({s[2] for t in titles for s in t.spans}, key=lambda n: (not n.isdigit(), n.zfill(9)))
    index = {name: i for i, name in enumerate(labels)}
    chars, bigrams = build_char_vocab(texts), build_bigram_vocab(texts, 2)
    examples = []
    for tid, title in enumerate(titles):
        ids, bg = encode_chars(chars, title.text), encode_bigrams(bigrams, title.text)
        for start in window_starts(len(title.text), max_chars, stride):
            end = min(start + max_chars, len(title.text))
            spans = tuple((s - start, e - start, index[t]) for s, e, t in title.spans
                          if start <= s and e < end)
            examples.append(Example(tid, start, len(title.text), tuple(ids[start:end]),
                                    tuple(bg[start:end]), spans))
    return examples, labels, chars, bigrams


def build(kind: str, params: dict, labels, chars, bigrams, pretrained: Path | None):
    from jd_ner.modeling.encoder import EncoderConfig
    from jd_ner.modeling.model import HeadConfig, ModelSpec, NerModel

    model_cfg = params["train"]["model"]
    # the default's architecture; its masked-character pretraining (a pipeline of its own)
    # is not what this checks
    encoder = EncoderConfig(**{**model_cfg["encoder"], "init": "scratch"})
    transformer = None
    if kind == "pretrained":
        from transformers import AutoModel

        encoder.kind, encoder.pretrained_path = "pretrained", str(pretrained)
        transformer = AutoModel.from_pretrained(str(pretrained), local_files_only=True,
                                                add_pooling_layer=False)
    spec = ModelSpec(labels=list(labels), char_vocab=chars.to_dict(), encoder=encoder,
                     head=HeadConfig(**model_cfg["head"]), bigram_vocab=bigrams.to_dict(),
                     max_chars=int(params["features"]["max_chars"]),
                     window_stride=int(params["features"]["window_stride"]))
    return NerModel(spec, transformer=transformer)


def random_bert(folder: Path, vocab_size: int, layers: int, hidden: int) -> Path:
    """A randomly initialised BERT saved as a local Hugging Face folder (no download)."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                        max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def check(kind: str, precision: str, args, params, data, pretrained) -> dict:
    import torch

    from jd_ner.modeling.predict import predict_spans
    from jd_ner.modeling.training import TrainConfig, fit
    from jd_ner.modeling.tricks import build_objective

    examples, labels, chars, bigrams = data
    torch.manual_seed(0)
    model = build(kind, params, labels, chars, bigrams, pretrained)
    optim = {**params["train"]["optim"], "epochs": 1, "batch_size": args.batch_size,
             "device": args.device, "progress": False, "amp": precision != "fp32",
             "amp_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(precision, "auto"),
             "warmup_ratio": 0.05}
    if kind == "pretrained":
        optim["encoder_learning_rate"] = 5e-5
    cfg = TrainConfig(**optim)
    train = examples[: args.steps * args.batch_size]
    losses: list[float] = []
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fit(model, train, cfg, build_objective(params["train"]["objective"], model), None,
        on_step=lambda step, loss: losses.append(loss))
    train_seconds = time.perf_counter() - start
    window = max(1, min(20, len(losses) // 3))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    test = examples[-args.predict_titles:]
    start = time.perf_counter()
    predict_spans(model, test, 32, device, amp=precision != "fp32")
    if device.type == "cuda":
        torch.cuda.synchronize()
    predict_seconds = time.perf_counter() - start
    return {"model": kind, "precision": precision, "steps": len(losses),
            "loss_first": first, "loss_last": last,
            "finite": all(math.isfinite(v) for v in losses),
            # a trend needs a few dozen steps; a dry run (--steps 3) only checks the mechanics
            "falls": last < first if len(losses) >= 30 else None,
            "train_titles_per_s": len(train) / train_seconds,
            "predict_titles_per_s": len(test) / predict_seconds,
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else float("nan")}


def ddp_check(args, params, data) -> dict:
    """The default model for the same steps in one plain process and in one torchrun process
    (DDP; the backend picked as a run picks it: nccl on CUDA): the epoch losses agree and the
    weights end close (CUDA's embedding backward adds in no fixed order, so not bitwise)."""
    import copy

    import torch

    from jd_ner.distributed import DistributedSettings, train_distributed
    from jd_ner.modeling.training import TrainConfig, fit
    from jd_ner.modeling.tricks import build_objective

    examples, labels, chars, bigrams = data
    torch.manual_seed(0)
    model = build("default", params, labels, chars, bigrams, None)
    twin = copy.deepcopy(model)
    optim = {**params["train"]["optim"], "epochs": 1, "batch_size": args.batch_size,
             "device": args.device, "progress": False, "amp": False, "warmup_ratio": 0.05,
             "patience": 0, "resume": "never"}
    cfg = TrainConfig(**optim)
    train = examples[: args.steps * args.batch_size]
    objective = build_objective(params["train"]["objective"], model)
    start = time.perf_counter()
    alone = fit(model, train, cfg, objective, None)
    alone_s = time.perf_counter() - start
    start = time.perf_counter()
    together = train_distributed(twin, train, cfg, objective, None, None,
                                 DistributedSettings(nproc_per_node=1))
    together_s = time.perf_counter() - start  # includes torchrun's start and the payload
    gap = max((a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()
              for a, b in zip(model.parameters(), twin.parameters(), strict=True))
    one, two = alone.history[-1]["train_loss"], together.history[-1]["train_loss"]
    return {"loss_one": one, "loss_ddp": two, "max_weight_gap": gap,
            "agree": math.isfinite(two) and abs(one - two) <= 1e-2 * abs(one) and gap < 1e-2,
            "seconds_one": alone_s, "seconds_ddp": together_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-file", type=Path, default=ROOT.parent / "shared/data/jd/train.txt")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per check")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--predict-titles", type=int, default=2000)
    parser.add_argument("--pretrained", type=Path, help="a local Hugging Face encoder folder")
    parser.add_argument("--precisions", default="bf16,fp16", help="bf16, fp16 and/or fp32")
    parser.add_argument("--ddp", action="store_true",
                        help="also train under torchrun (one process, DDP) against plain fit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. train.model.encoder.hidden_size=32")
    args = parser.parse_args()

    import torch
    from compare_tricks import assign, load_parameters  # the same parameters as a run, no Kedro

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --device cpu for a dry run)")
        return 2
    params = load_parameters(ROOT / "conf")
    for item in args.set:
        assign(params, item)
    data = load_titles(args.train_file, int(params["features"]["max_chars"]),
                       int(params["features"]["window_stride"]))
    print(f"device: {args.device}" + (f" ({torch.cuda.get_device_name()})"
                                      if args.device.startswith("cuda") else "")
          + f"; torch {torch.__version__}; {len(data[0])} windows, {len(data[1])} types")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        hidden = int(params["train"]["model"]["encoder"]["hidden_size"])
        pretrained = args.pretrained or random_bert(Path(tmp) / "bert", len(data[2]), 4, hidden)
        for kind in ("default", "pretrained"):
            for precision in [p.strip() for p in args.precisions.split(",") if p.strip()]:
                r = check(kind, precision, args, params, data, pretrained)
                results.append(r)
                print(f"{r['model']:<11}{r['precision']:<6}{r['steps']:>5} steps  loss "
                      f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}  "
                      f"{'finite' if r['finite'] else 'NOT FINITE'}, "
                      f"{ {True: 'falls', False: 'DOES NOT FALL', None: 'too few steps'}[r['falls']]}  "
                      f"train {r['train_titles_per_s']:.0f} titles/s  "
                      f"predict {r['predict_titles_per_s']:.0f} titles/s  "
                      f"peak GPU {r['peak_gpu_mib']:.0f} MiB", flush=True)
    failed = [f"{r['model']}/{r['precision']}" for r in results
              if not r["finite"] or r["falls"] is False]
    if args.ddp:
        d = ddp_check(args, params, data)
        print(f"ddp (1 process, torchrun) fp32  epoch loss {d['loss_one']:.4f} alone, "
              f"{d['loss_ddp']:.4f} under DDP; largest weight gap {d['max_weight_gap']:.2e}; "
              f"{d['seconds_one']:.1f} s alone, {d['seconds_ddp']:.1f} s with torchrun's start "
              f"-> {'agree' if d['agree'] else 'DISAGREE'}", flush=True)
        if not d["agree"]:
            failed.append("ddp")
    print("GPU check " + ("FAILED: " + ", ".join(failed) if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
