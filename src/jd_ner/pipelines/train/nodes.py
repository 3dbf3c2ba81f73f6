"""Encoded windows + resolved configuration -> a trained model and its learning curve."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from jd_ner.checkpoints import CheckpointStore
from jd_ner.config import resolve_trick, threshold_candidates, threshold_setting
from jd_ner.distributed import DistributedSettings, train_distributed
from jd_ner.encoder_files import SavedEncoder, texts_digest
from jd_ner.encoding import (
    examples_for_model,
    examples_from_frame,
    gold_entities,
    lexicon_table,
    window_titles,
    with_model_vocabularies,
    with_soft_targets,
    word_table,
)
from jd_ner.evaluation import choose_threshold, flat_entities, raw_entities
from jd_ner.lac_files import attach_lac
from jd_ner.metrics import micro_prf
from jd_ner.modeling.adversarial import AdversarialConfig
from jd_ner.modeling.averaging import AveragingConfig
from jd_ner.modeling.encoder import EncoderConfig
from jd_ner.modeling.ensemble import EnsembleModel, ensemble_members
from jd_ner.modeling.model import HeadConfig, ModelSpec, NerModel
from jd_ner.modeling.predict import predict_spans, predict_window_spans
from jd_ner.modeling.training import (
    NOT_IN_RUN_KEY,
    TrainConfig,
    fit,
    resolve_device,
    seed_everything,
)
from jd_ner.modeling.tricks import build_objective
from jd_ner.text.lexicon import LexiconMatcher, select_entries
from jd_ner.tracking import active_run_reference, child_run, log_epoch, log_metrics, log_tags

logger = logging.getLogger(__name__)


def resolve_training_config(trick: str, train: dict) -> dict:
    """The run's complete training settings: base ``train`` parameters plus the presets
    named by ``trick`` (``a+b`` applies ``a`` then ``b``)."""
    config = resolve_trick(trick, train)
    logger.info("trick %s", config["trick"])
    return config


def _load_pretrained(path: str):
    from transformers import AutoModel

    if not Path(path).is_dir():
        raise FileNotFoundError(f"pretrained_encoder: {path} is not a directory")
    return AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)


# EncoderConfig fields that shape the weights: a pretrained encoder must match them
ARCHITECTURE = ("kind", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                "max_positions", "bigram_dim", "lstm_hidden", "lstm_layers", "fusion_layers",
                "fusion", "lac", "lac_layers", "lac_vocab_size")


def build_model(config: dict, char_vocab: dict, bigram_vocab: dict, pinyin_vocab: dict,
                glyph_vocab: dict, entity_lexicon: dict, label_schema: dict, features: dict,
                pretrained_encoder: str | None,
                char_encoder: SavedEncoder | None = None,
                word_vocab: dict | None = None) -> NerModel:
    """A fresh model from the resolved configuration and the features' vocabularies.

    The model keeps what it needs to read new titles: vocabularies, window size, the
    pinyin/glyph settings and, with the lexicon on, the lexicon entries of its mode.
    With ``model.encoder.init: pretrained`` the character encoder (its architecture,
    vocabularies and weights) is the ``pretrain`` pipeline's ``char_encoder``, read only then.
    """
    model_cfg, objective = config["model"], config["objective"]
    encoder = EncoderConfig(**model_cfg["encoder"])
    transformer = None
    if encoder.init not in ("scratch", "pretrained"):
        raise ValueError(f"train.model.encoder.init must be scratch or pretrained, got {encoder.init!r}")
    if encoder.init == "pretrained" and pretrained_encoder:
        # a Hugging Face encoder replaces the character encoder and its pretraining
        encoder = replace(encoder, init="scratch")
    if encoder.init == "pretrained":
        if char_encoder is None:
            raise ValueError("train.model.encoder.init=pretrained needs a pretrained character "
                             "encoder: run `kedro run --pipelines=pretrain` first")
        char_encoder = char_encoder.load()
        built = char_encoder.encoder
        differ = {k: (getattr(encoder, k), getattr(built, k)) for k in ARCHITECTURE
                  if getattr(encoder, k) != getattr(built, k)}
        if differ:
            raise ValueError(
                "the pretrained character encoder has another architecture than this run asks "
                "for (setting: asked, pretrained): " + ", ".join(
                    f"{k}: {a!r}, {b!r}" for k, (a, b) in differ.items())
                + ". Pretrain with the same trick and settings (kedro run --pipelines=pretrain "
                "--params=trick:...), or train from scratch")
        encoder = replace(built, init="pretrained", dropout=encoder.dropout,
                          pretrained_path=f"char_encoder {char_encoder.info.get('weights_sha256')}",
                          pretrained_on=char_encoder.info.get("train_split"))
        char_vocab, bigram_vocab = char_encoder.char_vocab, char_encoder.bigram_vocab
        logger.info("character encoder from pretraining: %s", char_encoder.info.get("summary", ""))
    if pretrained_encoder:
        encoder.kind, encoder.pretrained_path = "pretrained", str(pretrained_encoder)
        transformer = _load_pretrained(str(pretrained_encoder))
    labels = list(label_schema["labels"])
    pinyin = {**_knobs(model_cfg["pinyin"]), "length": int(features["pinyin_length"])} \
        if model_cfg["pinyin"]["enabled"] else None
    glyph = {**_knobs(model_cfg["glyph"]), "length": int(features["glyph_length"]),
             "depth": int(features["glyph_depth"])} if model_cfg["glyph"]["enabled"] else None
    lexicon = None
    if model_cfg["lexicon"]["enabled"]:
        lex = model_cfg["lexicon"]
        lexicon = {"mode": lex["mode"], "per_char": int(lex["per_char"]),
                   "rare_max_count": int(lex["rare_max_count"]),
                   "entries": select_entries(entity_lexicon, lex["mode"], int(lex["rare_max_count"]))}
    words = None
    if model_cfg.get("words", {}).get("enabled"):
        if not word_vocab:
            raise ValueError("train.model.words needs the features pipeline's word_vocab")
        words = {"words": list(word_vocab["words"]), "frequencies": list(word_vocab["frequencies"]),
                 "per_set": int(model_cfg["words"]["per_set"]), "dim": int(model_cfg["words"]["dim"])}
    aux = {}
    if objective["boundary"]["enabled"]:
        aux["boundary"] = None
    if objective["main_entity"]["enabled"]:
        main = str(objective["main_entity"]["type"])
        if main not in labels:
            raise ValueError(f"objective.main_entity.type {main!r} is not an entity type of the "
                             f"data; known: {labels}")
        aux["main_entity"] = main
    spec = ModelSpec(
        labels=labels,
        char_vocab=char_vocab,
        encoder=encoder,
        head=HeadConfig(**model_cfg["head"]),
        bigram_vocab=bigram_vocab if encoder.bigram_dim > 0 else None,
        max_chars=int(features["max_chars"]),
        window_stride=int(features["window_stride"]),
        pinyin=pinyin, glyph=glyph,
        pinyin_vocab=pinyin_vocab if pinyin else None,
        glyph_vocab=glyph_vocab if glyph else None,
        lexicon=lexicon, words=words, aux_heads=aux,
    )
    limit = transformer.config.max_position_embeddings if transformer is not None \
        else encoder.max_positions
    if spec.max_chars + 2 > limit:
        raise ValueError(f"features.max_chars={spec.max_chars} (+[CLS]/[SEP]) exceeds the "
                         f"encoder's {limit} positions")
    seed_everything(int(config["optim"]["seed"]))  # weight initialisation depends on the seed
    model = NerModel(spec, transformer=transformer)
    if encoder.init == "pretrained":
        model.encoder.load_state_dict(char_encoder.state)
    elif encoder.lac != "off":
        report = attach_lac(model.encoder, model.char_vocab)
        logger.info("LAC-small (%s): %d of %d vocabulary characters unknown to it (e.g. %s)",
                    encoder.lac, report["unknown_to_lac"], report["vocabulary"],
                    "".join(report["unknown_examples"][:10]))
        log_tags({"lac_unknown_characters": report["unknown_to_lac"]})
    n_params = sum(p.numel() for p in model.parameters())
    head_params = sum(p.numel() for p in model.head.parameters())
    logger.info("model: %d parameters (%d in the %s head)", n_params, head_params, spec.head.kind)
    log_tags({"n_parameters": n_params, "n_head_parameters": head_params})
    return model


def _knobs(section: dict) -> dict:
    return {k: v for k, v in section.items() if k != "enabled"}




def run_key(config: dict, frames: list[pd.DataFrame], *parts) -> str:
    """A digest of everything a training run's result depends on: settings, vocabularies,
    label schema, decoding settings (they decide the selected epoch) and the encoded data.
    Checkpoints are resumed only under the same key."""
    digest = hashlib.sha256()
    optim = {k: v for k, v in config["optim"].items() if k not in NOT_IN_RUN_KEY}
    settings = {**config, "optim": optim}
    digest.update(json.dumps([settings, *parts], sort_keys=True, default=str).encode())
    for frame in frames:
        digest.update(frame.to_json(orient="values").encode())
    return digest.hexdigest()[:16]


def selecting(decode: dict) -> dict:
    """The decoding settings that decide a run's selected epoch (for :func:`run_key`): dev
    selects at 0 when the threshold is chosen afterwards (`dev`), and the candidates only
    matter once training is over."""
    fixed = threshold_setting(decode)
    return {**{k: v for k, v in decode.items() if k not in ("threshold", "threshold_candidates")},
            "threshold": 0.0 if fixed is None else fixed}


def train_lexicon_table(model: NerModel, train_input: pd.DataFrame, folds: dict) -> pd.DataFrame:
    """Lexicon feature ids of the train windows, each title matched against the lexicon of
    the folds it is not in (the model's own, full lexicon encodes every other title)."""
    spec = model.spec.lexicon
    fold_of = {tid: k for k, fold in enumerate(folds["folds"]) for tid in fold["title_ids"]}
    missing = set(train_input["title_id"].astype(int)) - fold_of.keys()
    if missing:
        raise ValueError(f"{len(missing)} train titles are in no lexicon fold (e.g. title "
                         f"{min(missing)}): re-run the features pipeline")
    matchers = [LexiconMatcher(select_entries(fold["lexicon"], spec["mode"], spec["rare_max_count"]),
                               model.labels) for fold in folds["folds"]]
    values = [matchers[fold_of[int(tid)]].features(text, spec["per_char"])
              for tid, text in zip(train_input["title_id"], train_input["text"], strict=True)]
    return pd.DataFrame({"title_id": train_input["title_id"].to_numpy(),
                         "char_start": train_input["char_start"].to_numpy(), "lexicon_ids": values})


def pseudo_examples(model: NerModel, titles: pd.DataFrame, weight: float,
                    first_id: int) -> list:
    """Pseudo-labelled titles as training examples of the given loss weight, numbered
    after the train split's titles."""
    if not 0.0 < weight:
        raise ValueError(f"train.pseudo_labels.weight must be positive, got {weight}")
    titles = titles.assign(title_id=range(first_id, first_id + len(titles)))
    return [replace(example, weight=weight) for example in examples_for_model(model, titles)]


class DevEvaluator:
    """Flat-BIO entity F1 (and P, R, raw-span F1, speed) of a model on the dev windows,
    after each epoch. A class rather than a closure: it travels to a distributed run's
    rank 0."""

    def __init__(self, dev: list, dev_titles: pd.DataFrame, labels: list[str], decode: dict,
                 optim: TrainConfig):
        self.dev, self.labels, self.decode, self.optim = dev, list(labels), decode, optim
        self.gold = gold_entities(dev_titles)
        self.texts = dict(zip(dev_titles["title_id"].astype(int), dev_titles["text"], strict=True))

    def __call__(self, model: NerModel) -> dict[str, float]:
        start = time.perf_counter()
        pred = predict_spans(model, self.dev, self.optim.eval_batch_size,
                             resolve_device(self.optim.device), amp=self.optim.amp)
        seconds = time.perf_counter() - start
        flat = micro_prf(flat_entities(pred, self.texts, self.labels, self.decode), self.gold)
        raw = micro_prf(raw_entities(pred, self.labels), self.gold)
        return {**flat.as_dict("dev_"), "dev_raw_f1": raw.f1,
                "dev_titles_per_s": len(self.texts) / seconds}


def train_model(model: NerModel, train_input: pd.DataFrame, dev_input: pd.DataFrame,
                lexicon_folds: dict, dev_titles: pd.DataFrame, config: dict, decode: dict,
                checkpoints: CheckpointStore,
                pseudo_titles: pd.DataFrame | None = None, *,
                soft_targets: pd.DataFrame | None = None,
                split: str | None = None) -> tuple[NerModel, pd.DataFrame]:
    """Train, evaluating flat-BIO entity F1 on dev after each epoch; keep the best epoch.

    Per-epoch metrics go to MLflow as they come, so a long run can be watched. With
    ``train.distributed`` (more than one process) it trains under torchrun and
    DistributedDataParallel (``jd_ner.distributed``); rank 0's weights come back here. The run
    checkpoints itself and, if interrupted, resumes when started again with the same
    settings and data (``train.optim.resume``). With an empty dev split (``final_fit``)
    nothing is selected: the model of the last epoch is kept and marked unevaluated.

    With ``train.ensemble.members`` above 1 it trains that many models and returns them as
    one :class:`~jd_ner.modeling.ensemble.EnsembleModel` (see :func:`train_ensemble`).

    ``soft_targets`` (the distill pipeline's student): teacher probabilities for every train
    title, plus unlabelled titles that learn from them alone. ``split``: the digest of the
    train split the model belongs to, when ``train_input`` is only part of it (a k-fold
    teacher); by default the split is these windows' titles.
    """
    members = ensemble_members(config)
    if members > 1:
        return train_ensemble(model, train_input, dev_input, lexicon_folds, dev_titles, config,
                              decode, checkpoints, pseudo_titles, soft_targets=soft_targets,
                              split=split)
    if members < 1:
        raise ValueError(f"train.ensemble.members must be at least 1, got {members}")
    optim = TrainConfig(**config["optim"])
    fixed = threshold_setting(decode)  # None: chosen on dev once trained; epochs select at 0
    if fixed is None:
        threshold_candidates(decode)  # a bad setting fails now, not after the training
        if dev_titles.empty:
            raise ValueError("final_fit has no dev split to choose decode.threshold on: give the "
                             "threshold an evaluated run chose (its MLflow decode_threshold), "
                             "e.g. --params=final_fit=true,train.optim.epochs=12,"
                             "decode.threshold=-1")
    model.spec.threshold = 0.0 if fixed is None else fixed
    train_input, dev_input = (with_model_vocabularies(frame, model.char_vocab, model.bigram_vocab)
                              for frame in (train_input, dev_input))

    def sequences(frame: pd.DataFrame, lexicon) -> dict[str, pd.DataFrame]:
        # pinyin and glyph ids are columns of the model input; the lexicon and word matches
        # depend on the model's own lexicon and words, so they are matched here
        out = {name: frame for name in model.sequence_fields
               if name not in ("lexicon_ids", "word_ids")}
        if model.spec.lexicon:
            out["lexicon_ids"] = lexicon(frame)
        if model.spec.words:
            out["word_ids"] = word_table(model, frame)
        return out

    train = examples_from_frame(train_input, **sequences(
        train_input, lambda frame: train_lexicon_table(model, frame, lexicon_folds)))
    texts = window_titles(train_input)
    split = split or texts_digest(texts.values())
    model.spec.train_split = split
    made_for = model.spec.encoder.pretrained_on
    if model.spec.encoder.init == "pretrained" and made_for != split:
        raise ValueError("the pretrained character encoder was made for another train split "
                         f"(digest {made_for}, this one {split}): its pretraining titles may "
                         "include this split's dev or test titles. Re-run `kedro run "
                         "--pipelines=pretrain` with this run's train_file and ingest settings")
    pseudo = config.get("pseudo_labels") or {}
    if pseudo.get("enabled"):
        if pseudo_titles is None or pseudo_titles.empty:
            raise ValueError("train.pseudo_labels is on but there are no pseudo-labelled titles: "
                             "run `kedro run --pipelines=pseudo_label` first")
        made_for = set(pseudo_titles["train_split"]) if "train_split" in pseudo_titles else {None}
        if made_for != {split}:
            raise ValueError("the pseudo-labelled titles were made for another train split (their "
                             "teacher may have trained on this split's dev or test titles): "
                             "re-run `kedro run --pipelines=pseudo_label` after training on this "
                             "split")
        train += pseudo_examples(model, pseudo_titles, float(pseudo["weight"]),
                                 first_id=int(train_input["title_id"].max()) + 1)
        logger.info("self-training: %d gold + %d pseudo-labelled titles (weight %.2f)",
                    train_input["title_id"].nunique(), len(pseudo_titles), float(pseudo["weight"]))
    else:
        pseudo_titles = None
    if soft_targets is not None:
        made_for = set(soft_targets["train_split"]) if len(soft_targets) else {split}
        if made_for != {split}:
            raise ValueError("the soft targets were made for another train split (their teachers "
                             "may have trained on this split's dev or test titles): run the "
                             "distill pipeline on this split")
        first = len(train)
        train = with_soft_targets(model, train, texts, soft_targets,
                                  first_id=int(train_input["title_id"].max()) + 1 + len(
                                      pseudo_titles if pseudo_titles is not None else []))
        logger.info("distillation: %d train titles and %d unlabelled titles (%d windows) with "
                    "soft targets", len(texts), int((soft_targets["source"] == "unlabelled").sum()),
                    len(train) - first)
    final_fit = dev_titles.empty
    evaluate = None
    if not final_fit:
        dev = examples_from_frame(dev_input, **sequences(
            dev_input, lambda frame: lexicon_table(model, frame)))
        evaluate = DevEvaluator(dev, dev_titles, model.labels, decode, optim)
    else:
        model.spec.trained_on = "all labelled titles (final_fit; unevaluated)"
        logger.warning("final_fit: no dev split, so no epoch is selected: training %s epochs "
                       "on all labelled titles and keeping the last (set train.optim.epochs to "
                       "an evaluated run's best_epoch)", optim.epochs)

    objective = build_objective(config["objective"], model)
    key = run_key(config, [train_input, dev_input, *(
        frame for frame in (pseudo_titles, soft_targets) if frame is not None)],
        model.spec.to_dict(), selecting(decode))
    store = checkpoints.for_run(key, optim.checkpoint_every, optim.resume)
    started = time.perf_counter()
    distributed = DistributedSettings(**config.get("distributed", {}))
    tricks = {"adversarial": AdversarialConfig(**config.get("adversarial", {})),
              "averaging": AveragingConfig(**config.get("averaging", {}))}
    if distributed.world_size > 1:
        result = train_distributed(model, train, optim, objective, evaluate, store, distributed,
                                   tracking=active_run_reference(), **tricks)
    else:
        result = fit(model, train, optim, objective, evaluate, on_epoch_end=log_epoch,
                     checkpoints=store, **tricks)
    minutes = (time.perf_counter() - started) / 60
    model.spec.training = {"trick": config["trick"], "seed": optim.seed,
                           "history": result.history, "averaged_epochs": result.averaged_epochs,
                           "averaged_metrics": result.averaged_metrics}
    if result.best_epoch and not final_fit:  # the saved model's dev numbers, plain names
        best = result.averaged_metrics or result.history[
            [r["epoch"] for r in result.history].index(result.best_epoch)]
        log_metrics({k: best[k] for k in ("dev_f1", "dev_precision", "dev_recall") if k in best})
    if fixed is None:
        choose_decode_threshold(model, evaluate.dev if evaluate else [], dev_titles, decode, optim)
    log_tags({"best_epoch": result.best_epoch, "planned_epochs": result.planned_epochs,
              "stopped_early": result.stopped_early, "train_minutes": round(minutes, 2)})
    selected = (f"epoch {result.best_epoch}" if result.averaged_epochs is None else
                "the SWA of epochs {}-{}".format(*result.averaged_epochs))
    logger.info("%s (%.1f min%s)", f"best dev F1 {result.best_score:.4f} with {selected}"
                f" of {len(result.history)} (planned {result.planned_epochs})"
                if not final_fit else f"final fit: kept epoch {result.best_epoch}", minutes,
                f", resumed from {result.resumed_from}" if result.resumed_from else "")
    return model, pd.DataFrame(result.history)


def choose_decode_threshold(model: NerModel | EnsembleModel, dev: list, dev_titles: pd.DataFrame,
                            decode: dict, optim: TrainConfig) -> None:
    """``decode.threshold: dev``: the model's threshold becomes the candidate with the best
    flat F1 on the dev windows ``dev`` (logged as ``decode_threshold``; every candidate's F1
    kept in ``spec.training``)."""
    candidates = threshold_candidates(decode)
    windows = predict_window_spans(model, dev, optim.eval_batch_size,
                                   resolve_device(optim.device), threshold=candidates[0],
                                   amp=optim.amp)
    texts = dict(zip(dev_titles["title_id"].astype(int), dev_titles["text"], strict=True))
    best, f1 = choose_threshold(windows, texts, model.labels, gold_entities(dev_titles), decode,
                                candidates)
    model.spec.threshold = best
    model.spec.training = {**(model.spec.training or {}), "decode_threshold": {
        "chosen": best, "dev_f1": [[t, f1[t]] for t in candidates]}}
    log_metrics({"decode_threshold": best, "dev_f1_at_threshold": f1[best]})
    logger.info("decision threshold %+.2f chosen on dev: dev F1 %.4f (%s at 0)", best, f1[best],
                f"{f1[0.0]:.4f}" if 0.0 in f1 else "not tried")


ENSEMBLE_SEED_STRIDE = 1000  # member i trains with seed + 1000 * (i - 1)


def train_ensemble(model: NerModel, train_input: pd.DataFrame, dev_input: pd.DataFrame,
                   lexicon_folds: dict, dev_titles: pd.DataFrame, config: dict, decode: dict,
                   checkpoints: CheckpointStore, pseudo_titles: pd.DataFrame | None = None, *,
                   soft_targets: pd.DataFrame | None = None,
                   split: str | None = None) -> tuple[EnsembleModel, pd.DataFrame]:
    """``train.ensemble.members`` models trained as :func:`train_model` trains one, each
    from the same initial weights (the untrained ``model``: its pretrained encoder, and the
    other layers as the run's seed initialised them), member i with seed + 1000 (i - 1),
    which sets its batch order and dropout masks (so member 1 is the model a single run of
    that seed gives), each an MLflow run nested in this one, and returned as one ensemble
    (their span probabilities averaged). Dev F1 still selects each member's epoch; the
    ensemble's own dev F1 is logged. The history has a ``member`` column. Interrupted, it
    resumes: finished members are kept in the checkpoint folder until the ensemble is done,
    and ``resume: required`` asks for a checkpoint of the ensemble (a finished member, or
    the first unfinished member's own)."""
    members = int(config["ensemble"]["members"])
    seed = int(config["optim"]["seed"])
    optim = TrainConfig(**config["optim"])
    pseudo = pseudo_titles if (config.get("pseudo_labels") or {}).get("enabled") else None
    frames = [train_input, dev_input, *(f for f in (pseudo, soft_targets) if f is not None)]
    keep = "never" if optim.resume == "never" else "auto"
    required = optim.resume == "required"
    trained, histories, records, finished = [], [], [], []
    for i in range(1, members + 1):
        cfg = copy.deepcopy(config)
        cfg["ensemble"]["members"] = 1
        cfg["optim"]["seed"] = seed + ENSEMBLE_SEED_STRIDE * (i - 1)
        # a finished member is kept until the ensemble is, so an interrupted run resumes
        # at the member it was training (which resumes from its own checkpoint)
        done = checkpoints.for_run("member-" + run_key(cfg, frames, model.spec.to_dict(),
                                                       selecting(decode), split), 0, keep)
        finished.append(done)
        saved = done.load()
        if saved is not None:
            required = False  # the ensemble did resume
            logger.info("ensemble member %d of %d (seed %d): trained before this run was "
                        "interrupted; reused", i, members, cfg["optim"]["seed"])
            member = NerModel(ModelSpec.from_dict(saved["spec"]))
            member.load_state_dict(saved["model"])
            history, run_id = pd.DataFrame(saved["history"]), saved["mlflow_run_id"]
        else:
            if optim.resume == "required":
                cfg["optim"]["resume"] = "required" if required else "auto"
                required = False
            with child_run(f"member {i}/{members} · {config['trick']}",
                           {"ensemble.member": i, "ensemble.members": members,
                            "trick": config["trick"], "seed": cfg["optim"]["seed"]}) as run_id:
                logger.info("ensemble member %d of %d (seed %d)", i, members,
                            cfg["optim"]["seed"])
                member, history = train_model(copy.deepcopy(model), train_input, dev_input,
                                              lexicon_folds, dev_titles, cfg, decode,
                                              checkpoints, pseudo_titles,
                                              soft_targets=soft_targets, split=split)
            if keep != "never":
                done.save({"model": member.state_dict(), "spec": member.spec.to_dict(),
                           "history": history.to_dict(orient="records"),
                           "mlflow_run_id": run_id})
        trained.append(member)
        histories.append(history.assign(member=i))
        scored = "dev_f1" in history and history["dev_f1"].notna().any()
        best = history.loc[history["dev_f1"].idxmax()] if scored else None
        records.append({"member": i, "seed": cfg["optim"]["seed"], "mlflow_run_id": run_id,
                        "best_dev_f1": float(best["dev_f1"]) if scored else float("nan"),
                        "best_epoch": int(best["epoch"]) if scored else None,
                        "threshold": member.spec.threshold})
    # member 1's threshold record is its own; the ensemble chooses one for its averaged scores
    first = {k: v for k, v in trained[0].spec.training.items() if k != "decode_threshold"}
    fixed = threshold_setting(decode)
    ensemble = EnsembleModel(trained, {**first, "ensemble": {"members": records}},
                             0.0 if fixed is None else fixed).eval()
    dev = examples_for_model(ensemble, dev_titles) if not dev_titles.empty else []
    if dev:
        scores = DevEvaluator(dev, dev_titles, ensemble.labels, decode, optim)(ensemble)
        ensemble.spec.training["ensemble"]["dev_f1"] = scores["dev_f1"]
        log_metrics({k: scores[k] for k in ("dev_f1", "dev_precision", "dev_recall")})
        logger.info("ensemble of %d: dev F1 %.4f (members %s)", members, scores["dev_f1"],
                    ", ".join(f"{r['best_dev_f1']:.4f}" for r in records))
    if fixed is None:
        choose_decode_threshold(ensemble, dev, dev_titles, decode, optim)
    log_tags({"ensemble.members": members,
              "best_epoch": ",".join(str(r["best_epoch"] or "-") for r in records)})
    for done in finished:
        done.clear()
    return ensemble, pd.concat(histories, ignore_index=True)
