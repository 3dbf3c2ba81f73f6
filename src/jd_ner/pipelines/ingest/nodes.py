"""Raw contest files -> validated title tables and a seeded train/dev/test split."""

from __future__ import annotations

import hashlib
import logging
import random

import pandas as pd

from jd_ner.encoding import spans_cell, titles_frame
from jd_ner.text.bio import RawFile, decode, parse_bio, parse_title_lines

logger = logging.getLogger(__name__)


def parse_labelled_titles(raw: RawFile, params: dict) -> tuple[pd.DataFrame, dict]:
    """Parse the BIO training file; collapse duplicate titles.

    A title seen again with the same annotation is dropped as a duplicate; with a
    different annotation the first one is kept and the conflict counted and logged.
    Returns the title table and a report of what was repaired or collapsed.
    """
    titles, report = parse_bio(decode(raw.data, raw.path), raw.path, params["orphan_tags"])
    first: dict[str, int] = {}
    rows, duplicates, conflicts = [], 0, []
    for title in titles:
        seen = first.get(title.text)
        if seen is None:
            first[title.text] = len(rows)
            rows.append({"title_id": len(rows), "text": title.text,
                         "spans": spans_cell(title.spans), "line": title.line})
            continue
        duplicates += 1
        if rows[seen]["spans"] != spans_cell(title.spans):
            conflicts.append(f"{raw.path}:{title.line} conflicts with line {rows[seen]['line']}")
    if duplicates:
        logger.warning("%s: %d duplicate titles collapsed (%d with conflicting annotations; "
                       "the first annotation is kept)", raw.path, duplicates, len(conflicts))
    for line in conflicts[:20]:
        logger.warning("conflicting annotation: %s", line)
    table = titles_frame(rows)
    summary = {
        "source": raw.path,
        "source_sha256": hashlib.sha256(raw.data).hexdigest(),
        "titles_read": len(titles),
        "titles_kept": len(table),
        "entities": int(sum(len(t.spans) for t in titles)),
        "duplicates_collapsed": duplicates,
        "conflicting_duplicates": len(conflicts),
        "conflicts": conflicts,
        "orphan_tags_repaired": report.orphans_repaired,
        "orphan_tags": report.notes,
        "bioes_tags_converted": report.tags_converted,
    }
    logger.info("%s: %d titles, %d entities", raw.path, len(table), summary["entities"])
    return table, summary


def split_titles(titles: pd.DataFrame, params: dict, final_fit: bool = False
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seeded random train / dev / test split of the (de-duplicated) labelled titles.

    Dev selects (the best epoch, any threshold); test is scored once, at ``evaluate``, and
    nothing is ever selected on it. ``dev_fraction`` and ``test_fraction`` of the titles
    (at least one title each) go to dev and test. With ``final_fit`` every title goes to
    train and dev and test are empty: a model for a submission, trained for a fixed number
    of epochs and unevaluated.
    """
    if final_fit:
        logger.warning("final_fit: training on all %d labelled titles; there is no dev or test "
                       "split, so the model is trained for train.optim.epochs and is UNEVALUATED",
                       len(titles))
        empty = titles.iloc[:0]
        return titles.reset_index(drop=True), empty, empty
    fractions = {name: float(params[f"{name}_fraction"]) for name in ("dev", "test")}
    for name, value in fractions.items():
        if not 0.0 < value < 1.0:
            raise ValueError(f"ingest.{name}_fraction must be in (0, 1), got {value}")
    if fractions["dev"] + fractions["test"] >= 1.0:
        raise ValueError(f"ingest.dev_fraction + ingest.test_fraction must leave titles to train "
                         f"on, got {fractions['dev']} + {fractions['test']}")
    if len(titles) < 3:
        raise ValueError(f"need at least 3 labelled titles to split, got {len(titles)}")
    order = list(range(len(titles)))
    random.Random(int(params["split_seed"])).shuffle(order)
    n_dev, n_test = (max(1, round(len(titles) * fractions[name])) for name in ("dev", "test"))
    if n_dev + n_test >= len(titles):
        raise ValueError(f"{len(titles)} labelled titles are too few for a {n_dev}-title dev and a "
                         f"{n_test}-title test split")
    parts = order[:n_dev], order[n_dev : n_dev + n_test], order[n_dev + n_test :]
    dev, test, train = (titles.iloc[sorted(p)].reset_index(drop=True) for p in parts)
    logger.info("split: %d train, %d dev (selects the epoch), %d test (scored once at evaluate)",
                len(train), len(dev), len(test))
    return train, dev, test


def parse_test_titles(raw: RawFile) -> pd.DataFrame:
    """Parse a one-title-per-line file; ``title_id`` is the title's position."""
    titles, report = parse_title_lines(decode(raw.data, raw.path), raw.path)
    if report.trailing_blank_lines:
        logger.info("%s: %d blank lines at the end ignored", raw.path, report.trailing_blank_lines)
    return titles_frame([{"title_id": i, "text": t.text, "spans": "[]", "line": t.line}
                         for i, t in enumerate(titles)])
