"""Unlabelled titles -> a character encoder pretrained on them (masked characters)."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import pandas as pd

from jd_ner.checkpoints import CheckpointStore
from jd_ner.encoder_files import (
    NEWEST_REUSED,
    NOT_PRETRAINED,
    NothingToSave,
    SavedEncoder,
    texts_digest,
)
from jd_ner.encoding import encode_titles, examples_from_frame, titles_frame
from jd_ner.lac_files import attach_lac
from jd_ner.modeling.encoder import EncoderConfig
from jd_ner.modeling.pretraining import (
    MaskedCharModel,
    PretrainedEncoder,
    masked_char_objective,
    weights_digest,
)
from jd_ner.modeling.training import NOT_IN_RUN_KEY, TrainConfig, fit, seed_everything
from jd_ner.pipelines.ingest.nodes import parse_test_titles
from jd_ner.text.bio import RawFile
from jd_ner.text.vocab import build_bigram_vocab, build_char_vocab
from jd_ner.tracking import log_epoch, log_tags

logger = logging.getLogger(__name__)


def collect_unlabelled_titles(raw_files: list[RawFile], train: pd.DataFrame, dev: pd.DataFrame,
                              test: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The titles to pretrain on: every title of the unlabelled files plus the train split's,
    each text once, **without any dev or test title of the split** (they judge the model,
    so it must not have read them, even unlabelled).

    ``line`` is the title's line in its file (0 for a train-split title); the report says
    how many titles each source gave and how many were dropped, and why.
    """
    held_out = set(dev["text"]) | set(test["text"])
    seen: set[str] = set()
    rows, report = [], {"sources": [], "held_out_titles_excluded": 0, "duplicates": 0}
    sources = [(raw.path, parse_test_titles(raw)) for raw in raw_files]
    sources.append(("train split", train.assign(line=0)))
    for name, frame in sources:
        kept = 0
        for text, line in zip(frame["text"], frame["line"], strict=True):
            if text in held_out:
                report["held_out_titles_excluded"] += 1
            elif text in seen:
                report["duplicates"] += 1
            else:
                seen.add(text)
                rows.append({"title_id": len(rows), "text": text, "spans": "[]", "line": int(line)})
                kept += 1
        report["sources"].append({"source": name, "titles": len(frame), "kept": kept})
        logger.info("unlabelled titles from %s: %d read, %d kept", name, len(frame), kept)
    if not rows:
        raise ValueError("no unlabelled titles to pretrain on")
    report["titles"] = len(rows)
    logger.info("pretraining on %d distinct titles (%d dev/test titles of the split excluded, "
                "%d duplicates)", len(rows), report["held_out_titles_excluded"], report["duplicates"])
    return titles_frame(rows), report


def pretraining_key(config: dict, params: dict, features: dict, texts) -> tuple[str, dict]:
    """What a pretrained encoder depends on, and its digest: the encoder's settings, the
    pretraining settings (run control such as resume, threads or device left out), the
    window, and the titles. Two runs with the same key compute the same encoder."""
    # the encoder pretrains with its own dropout: fine-tuning's (model.encoder.dropout) is a
    # training setting, and changing it reuses the same encoder
    cfg = EncoderConfig(**{**config["model"]["encoder"], "init": "scratch",
                           "dropout": float(params["dropout"])})
    settings = {**{k: v for k, v in params.items() if k not in ("reuse", "dropout")},
                "optim": {k: v for k, v in params["optim"].items() if k not in NOT_IN_RUN_KEY}}
    inputs = {"encoder": cfg.to_dict(), "pretrain": settings,
              "window": [features["max_chars"], features["window_stride"]]}
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()
                            + "\n".join(texts).encode()).hexdigest()[:16]
    return digest, inputs


def encoder_key(unlabelled: pd.DataFrame, train_titles: pd.DataFrame, config: dict,
                params: dict, features: dict) -> tuple[str, dict]:
    """:func:`pretraining_key` of the encoder pretrained on ``unlabelled`` for the train
    split ``train_titles``: the split counts too, so an encoder made for another split is
    not reused, even on the same titles."""
    return pretraining_key(config, params, features,
                           [*unlabelled["text"], "", texts_digest(train_titles["text"])])


def _reusable(saved: list[SavedEncoder], key: str,
              inputs: dict) -> tuple[SavedEncoder, PretrainedEncoder] | None:
    """The newest saved encoder pretrained with the same key, and its weights; None (after
    logging what differs from the newest, so a user knows why pretraining runs again)."""
    for candidate in saved:
        try:
            if candidate.info.get("run_key") == key:
                return candidate, candidate.load()
        except Exception as err:  # noqa: BLE001 - a broken folder is not reused, whatever broke it
            logger.info("pretrained encoder %s cannot be read (%s): skipped",
                        candidate.directory.parent.name, err)
    if not saved:
        return None
    newest = saved[0]
    try:
        before = newest.info.get("run_inputs")
    except Exception:  # noqa: BLE001 - reported above
        return None
    if before is None:
        logger.info("no saved pretrained encoder matches, and the newest (%s) records no "
                    "settings (an earlier version made it): pretraining", newest.directory.parent.name)
        return None
    differ = [f"{part}.{name}" for part in ("encoder", "pretrain")
              for name in sorted(set(inputs[part]) | set(before.get(part, {})))
              if inputs[part].get(name) != before.get(part, {}).get(name)]
    differ += ["window"] * (inputs["window"] != before.get("window"))
    logger.info("no saved pretrained encoder matches; the newest (%s) was made %s: pretraining",
                newest.directory.parent.name,
                "with other settings: " + ", ".join(differ) if differ
                else "from other titles or another train split")
    return None


def pretrain_char_encoder(unlabelled: pd.DataFrame, train_titles: pd.DataFrame, config: dict,
                          params: dict, features: dict, checkpoints: CheckpointStore,
                          saved: list[SavedEncoder] | None = None,
                          ) -> tuple[PretrainedEncoder | NothingToSave, pd.DataFrame]:
    """Masked-character pretraining of the encoder the run's training configuration
    describes (``trick`` presets applied, so ``trick=lac`` pretrains over LAC's states).

    Its vocabularies are built from the unlabelled titles (so characters and bigrams that
    the train split lacks get pretrained embeddings too) and travel with it, with a digest
    of the train split it was made for: a training run on another split (whose dev or test
    titles it may have read) refuses it. Checkpointed and resumable like training.

    With ``pretrain.reuse`` (the default), a saved encoder (``saved``, newest first) that was
    pretrained on the same titles and train split with the same settings
    (:func:`pretraining_key`) is reused instead: it would come out the same, and pretraining
    the contest's titles takes minutes. The newest is left as it is; an older one is saved
    again, as the newest, for training to read.
    """
    texts = unlabelled["text"]
    key, inputs = encoder_key(unlabelled, train_titles, config, params, features)
    found = _reusable(saved or [], key, inputs) if params.get("reuse", True) else None
    if found is not None:
        folder, reused = found
        version = folder.directory.parent.name
        logger.info("reusing the pretrained encoder %s (same titles and settings: %s)",
                    version, reused.info.get("summary", ""))
        log_tags({"pretrain_reused": version, "pretrain_titles": len(unlabelled)})
        history = pd.DataFrame(reused.info.get("history", []))
        # the newest is what training reads: saved again only when an older one matched
        return (NEWEST_REUSED if folder is saved[0] else reused), history
    cfg = EncoderConfig(**inputs["encoder"])
    char_vocab = build_char_vocab(texts, int(params["char_min_count"]))
    bigram_vocab = build_bigram_vocab(texts, int(params["bigram_min_count"])) \
        if cfg.bigram_dim > 0 else None
    encoded = encode_titles(unlabelled, char_vocab, bigram_vocab, [], int(features["max_chars"]),
                            int(features["window_stride"]))
    examples = examples_from_frame(encoded)
    optim = TrainConfig(**params["optim"])
    seed_everything(optim.seed)
    model = MaskedCharModel(cfg, char_vocab.to_dict(),
                            bigram_vocab.to_dict() if bigram_vocab else None)
    if cfg.lac != "off":
        report = attach_lac(model.encoder, model.char_vocab)
        logger.info("LAC-small (%s): %d of %d vocabulary characters unknown to it",
                    cfg.lac, report["unknown_to_lac"], report["vocabulary"])
    objective = masked_char_objective(float(params["mask_probability"]))
    store = checkpoints.for_run(f"pretrain-{key}", optim.checkpoint_every, optim.resume)
    started = time.perf_counter()
    result = fit(model, examples, optim, objective, None,
                 on_epoch_end=lambda rec: log_epoch(rec, prefix="pretrain/"),
                 checkpoints=store)
    minutes = (time.perf_counter() - started) / 60
    last = result.history[-1]
    info = {"titles": len(unlabelled), "windows": len(examples), "epochs": len(result.history),
            "minutes": round(minutes, 2), "mask_probability": float(params["mask_probability"]),
            "final_loss": last["train_loss"], "final_masked_accuracy": last["masked_accuracy"],
            "char_vocab_size": len(char_vocab),
            "bigram_vocab_size": len(bigram_vocab) if bigram_vocab else 0}
    info["train_split"] = texts_digest(train_titles["text"])
    info["resumed_from"] = result.resumed_from  # then ``minutes`` are the resumed part's
    info.update(run_key=key, run_inputs=inputs, history=result.history)
    info["summary"] = (f"{info['titles']} titles, {info['epochs']} epochs, masked-character "
                       f"accuracy {info['final_masked_accuracy']:.3f}")
    log_tags({"pretrain_minutes": round(minutes, 2), "pretrain_titles": len(unlabelled)})
    logger.info("pretrained the character encoder: %s (%.1f min)", info["summary"], minutes)
    encoder = model.pretrained(info)
    encoder.info["weights_sha256"] = weights_digest(encoder.state)
    return encoder, pd.DataFrame(result.history)


def char_encoder_for_training(unlabelled: pd.DataFrame, train_titles: pd.DataFrame, config: dict,
                              params: dict, features: dict, checkpoints: CheckpointStore,
                              saved: list[SavedEncoder] | None = None,
                              hugging_face_encoder: str | None = None,
                              ) -> tuple[PretrainedEncoder | NothingToSave, pd.DataFrame]:
    """The train pipeline's pretraining step: what :func:`pretrain_char_encoder` gives when
    the run starts from a pretrained encoder (``train.model.encoder.init: pretrained``, the
    default) — the newest one reused when it matches, else a new one — and nothing when it
    trains from scratch or fine-tunes a Hugging Face encoder (``pretrained_encoder``)."""
    if hugging_face_encoder:
        logger.info("pretrained_encoder %s replaces the character encoder: no pretraining",
                    hugging_face_encoder)
        return NOT_PRETRAINED, pd.DataFrame(columns=["epoch"])
    if config["model"]["encoder"].get("init") != "pretrained":
        logger.info("train.model.encoder.init is %r: no pretraining",
                    config["model"]["encoder"].get("init"))
        return NOT_PRETRAINED, pd.DataFrame(columns=["epoch"])
    return pretrain_char_encoder(unlabelled, train_titles, config, params, features,
                                 checkpoints, saved)
