"""Entity-level metrics over (title, start, end, type) tuples, as the competition scores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Entity = tuple[int, int, int, str]  # title id, start, end (inclusive), type


@dataclass(frozen=True)
class PRF:
    tp: int
    n_pred: int
    n_gold: int

    @property
    def precision(self) -> float:
        return self.tp / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.n_gold if self.n_gold else 0.0

    @property
    def f1(self) -> float:
        denom = self.n_pred + self.n_gold
        return 2 * self.tp / denom if denom else 0.0

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}precision": self.precision, f"{prefix}recall": self.recall,
                f"{prefix}f1": self.f1}


def entities(spans_by_title: Mapping[int, Iterable[Sequence]]) -> set[Entity]:
    """Flatten ``{title_id: [(start, end, type, ...), ...]}`` into entity tuples."""
    return {(tid, int(s[0]), int(s[1]), str(s[2])) for tid, spans in spans_by_title.items()
            for s in spans}


def micro_prf(pred: set[Entity], gold: set[Entity]) -> PRF:
    return PRF(len(pred & gold), len(pred), len(gold))


def per_type_prf(pred: set[Entity], gold: set[Entity]) -> dict[str, PRF]:
    types = sorted({e[3] for e in pred | gold}, key=type_sort_key)
    return {t: micro_prf({e for e in pred if e[3] == t}, {e for e in gold if e[3] == t})
            for t in types}


def type_sort_key(name: str):
    """Numeric type names in numeric order, others after them alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


ERROR_CLASSES = ("exact", "wrong_type", "wrong_boundary", "wrong_both", "spurious", "missed")


def error_classes(pred: set[Entity], gold: set[Entity]) -> Counter:
    """Classify each prediction against gold, and count gold entities nobody touched.

    exact: same span and type; wrong_type: same span, other type; wrong_boundary:
    overlaps a gold entity of its type; wrong_both: overlaps gold of another type only;
    spurious: overlaps no gold entity; missed: a gold entity no prediction overlaps.
    """
    by_title: dict[int, list[Entity]] = {}
    for g in gold:
        by_title.setdefault(g[0], []).append(g)
    counts: Counter = Counter({c: 0 for c in ERROR_CLASSES})
    touched: set[Entity] = set()
    for p in pred:
        overlapping = [g for g in by_title.get(p[0], ()) if g[1] <= p[2] and p[1] <= g[2]]
        touched.update(overlapping)
        if p in gold:
            counts["exact"] += 1
        elif any(g[1] == p[1] and g[2] == p[2] for g in overlapping):
            counts["wrong_type"] += 1
        elif any(g[3] == p[3] for g in overlapping):
            counts["wrong_boundary"] += 1
        elif overlapping:
            counts["wrong_both"] += 1
        else:
            counts["spurious"] += 1
    counts["missed"] = len(gold - touched)
    return counts
