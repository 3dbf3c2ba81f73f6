"""Raw contest files -> validated title tables and a seeded train/dev split."""

from __future__ import annotations

import hashlib
import logging
import random

import pandas as pd

from jd_ner.datasets import RawFile
from jd_ner.encoding import spans_cell, titles_frame
from jd_ner.text.bio import decode, parse_bio, parse_title_lines

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


def split_train_dev(titles: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded random split; ``dev_fraction`` of the titles (at least one) go to dev."""
    fraction = float(params["dev_fraction"])
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"ingest.dev_fraction must be in (0, 1), got {fraction}")
    if len(titles) < 2:
        raise ValueError(f"need at least 2 labelled titles to split, got {len(titles)}")
    order = list(range(len(titles)))
    random.Random(int(params["split_seed"])).shuffle(order)
    n_dev = min(len(titles) - 1, max(1, round(len(titles) * fraction)))
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return titles.iloc[train].reset_index(drop=True), titles.iloc[dev].reset_index(drop=True)


def parse_test_titles(raw: RawFile) -> pd.DataFrame:
    """Parse a one-title-per-line file; ``title_id`` is the title's position."""
    titles, report = parse_title_lines(decode(raw.data, raw.path), raw.path)
    if report.trailing_blank_lines:
        logger.info("%s: %d blank lines at the end ignored", raw.path, report.trailing_blank_lines)
    return titles_frame([{"title_id": i, "text": t.text, "spans": "[]", "line": t.line}
                         for i, t in enumerate(titles)])
