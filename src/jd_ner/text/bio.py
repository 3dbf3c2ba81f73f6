"""Readers and writers for the GAIIC 2022 layouts.

* BIO file: one ``<char> <tag>`` line per character, a blank line after each title.
  A space inside a title is a token of its own (``"  O"``), so a line is read as
  ``char = line[0]``, separator ``line[1]``, ``tag = line[2:]`` and never with
  ``str.split()``.
* Title file: one raw title per line, spaces kept inline.

Characters are Unicode code points and are echoed exactly: no normalisation, no
stripping of zero-width or combining characters. Every problem is reported as an
:class:`InputFormatError` naming the file, the line and the offending content.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Span = tuple[int, int, str]
"""An entity: first character, last character (inclusive), type name."""

ORPHAN_POLICIES = ("repair", "error")

# BIOES and BMES tags are converted to BIO on reading; the mapping is exact.
_PREFIX_TO_BIO = {"B": "B", "I": "I", "E": "I", "M": "I", "S": "B"}


class OrphanTagError(ValueError):
    """An ``I-x`` that does not continue an entity of type ``x``."""

    def __init__(self, position: int, tag: str):
        self.position = position
        super().__init__(f"{tag} at position {position} does not continue an entity")


class InputFormatError(ValueError):
    """A raw input file that cannot be read as the format it is declared to be."""

    def __init__(self, path: str, line: int | None, message: str, content: str | None = None):
        self.path, self.line, self.content = path, line, content
        where = f"{path}:{line}" if line is not None else str(path)
        text = f"{where}: {message}"
        if content is not None:
            text += f"\n    line content: {content!r}"
        super().__init__(text)


class RawFile:
    """A raw input file's bytes and the path they came from (for error messages)."""

    def __init__(self, path: str, data: bytes):
        self.path, self.data = path, data

    def __repr__(self) -> str:
        return f"RawFile({self.path!r}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Title:
    """One title as read from a raw file."""

    text: str
    spans: tuple[Span, ...] = ()
    line: int = 0  # 1-based line of the title's first character in its file


@dataclass
class ParseReport:
    """What the reader had to repair or convert; logged and kept with the data."""

    orphans_repaired: int = 0
    tags_converted: int = 0
    trailing_blank_lines: int = 0
    notes: list[str] = field(default_factory=list)


def decode(raw: bytes, path: str) -> str:
    """Decode UTF-8 (a BOM is tolerated); undecodable bytes name their line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = raw[: err.start].count(b"\n") + 1
        begin = raw.rfind(b"\n", 0, err.start) + 1
        end = raw.find(b"\n", err.start)
        snippet = raw[begin : end if end >= 0 else len(raw)]
        raise InputFormatError(
            path, line_no,
            f"bytes that are not UTF-8 at byte offset {err.start} ({err.reason}); "
            "convert the file to UTF-8",
            content=repr(snippet)[2:-1],
        ) from None


def _lines(text: str) -> list[str]:
    # Split on LF only: a CR inside a title is a character; a CR before LF is CRLF.
    lines = text.split("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def split_tag(tag: str) -> tuple[str, str | None]:
    """``'B-4' -> ('B', '4')``, ``'O' -> ('O', None)``; raises ``ValueError`` otherwise.

    Type names may be anything but whitespace: the official layout separates character
    and tag by a space, so a tag with whitespace inside is trailing garbage, not a name.
    """
    if tag == "O":
        return "O", None
    if (len(tag) >= 3 and tag[1] == "-" and tag[0] in _PREFIX_TO_BIO
            and not any(c.isspace() for c in tag)):
        return tag[0], tag[2:]
    raise ValueError(tag)


def tags_to_spans(
    tags: Sequence[str], orphan: str = "repair", on_orphan=None
) -> list[Span]:
    """Spans of a BIO tag sequence (BIOES/BMES prefixes accepted).

    An ``I-x`` that does not continue an entity of type ``x`` is an orphan: with
    ``orphan='repair'`` it starts a new entity (``on_orphan(i)`` is called so the
    caller can count it); with ``'error'`` an :class:`OrphanTagError` names it.
    """
    spans: list[Span] = []
    start, label = -1, None
    for i, tag in enumerate(tags):
        prefix, typ = split_tag(tag)
        prefix = _PREFIX_TO_BIO.get(prefix, prefix)
        if prefix == "I" and (label is None or typ != label):
            if orphan == "error":
                raise OrphanTagError(i, tag)
            if on_orphan is not None:
                on_orphan(i)
            prefix = "B"
        if prefix in ("B", "O") and label is not None:
            spans.append((start, i - 1, label))
            start, label = -1, None
        if prefix == "B":
            start, label = i, typ
    if label is not None:
        spans.append((start, len(tags) - 1, label))
    return spans


def spans_to_tags(length: int, spans: Iterable[Span]) -> list[str]:
    """Flat BIO tags for non-overlapping spans; overlapping spans raise ``ValueError``."""
    tags = ["O"] * length
    for start, end, label in sorted(spans):
        if not 0 <= start <= end < length:
            raise ValueError(f"span {(start, end, label)} outside a title of length {length}")
        if any(t != "O" for t in tags[start : end + 1]):
            raise ValueError(f"span {(start, end, label)} overlaps another span")
        tags[start] = f"B-{label}"
        for i in range(start + 1, end + 1):
            tags[i] = f"I-{label}"
    return tags


def parse_bio(text: str, path: str, orphan: str = "repair") -> tuple[list[Title], ParseReport]:
    """Parse a BIO file's decoded text into titles with gold spans."""
    if orphan not in ORPHAN_POLICIES:
        raise ValueError(f"orphan policy must be one of {ORPHAN_POLICIES}, not {orphan!r}")
    report = ParseReport()
    titles: list[Title] = []
    chars: list[str] = []
    tags: list[str] = []
    first_line = 0

    def close() -> None:
        if not chars:
            return

        def count_orphan(pos: int) -> None:
            report.orphans_repaired += 1
            report.notes.append(f"{path}:{first_line + pos}: orphan {tags[pos]!r} starts a new entity")

        try:
            spans = tags_to_spans(tags, orphan=orphan, on_orphan=count_orphan)
        except OrphanTagError as err:
            pos = err.position
            line_no = first_line + pos
            raise InputFormatError(
                path, line_no,
                f"{tags[pos]!r} does not continue an entity (orphan I- tag; "
                "set ingest.orphan_tags: repair to read it as a new entity)",
                content=f"{chars[pos]} {tags[pos]}",
            ) from None
        titles.append(Title("".join(chars), tuple(spans), first_line))
        chars.clear()
        tags.clear()

    for line_no, line in enumerate(_lines(text), start=1):
        if line == "":
            close()
            continue
        if len(line) < 3 or line[1] not in " \t":
            raise InputFormatError(
                path, line_no,
                "expected '<char> <tag>' (one character, a space, a tag)", content=line,
            )
        tag = line[2:].rstrip()
        try:
            prefix, typ = split_tag(tag)
        except ValueError:
            raise InputFormatError(
                path, line_no,
                "unknown tag: expected O, B-<type> or I-<type> with no whitespace in the "
                "type (BIOES/BMES E-, M-, S- are converted to BIO)",
                content=line,
            ) from None
        if prefix in ("E", "M", "S"):
            report.tags_converted += 1
        if not chars:
            first_line = line_no
        chars.append(line[0])
        tags.append(tag)
    close()
    if not titles:
        raise InputFormatError(path, None, "no titles found: the file is empty or blank")
    if report.orphans_repaired:
        logger.warning("%s: %d orphan I- tags read as new entities", path, report.orphans_repaired)
    if report.tags_converted:
        logger.info("%s: %d BIOES/BMES tags converted to BIO", path, report.tags_converted)
    return titles, report


_TAGGED_LINE = re.compile(r"^.[ \t]+(O|[BIESM]-\S+)$")


def _refuse_tagged_layout(lines: list[str], path: str) -> None:
    """A BIO file given where raw titles belong (e.g. the train file as ``test_file``) would
    otherwise fail on its first blank line as an "empty title": say what it is instead."""
    sample = [(n, line) for n, line in enumerate(lines[:200], start=1) if line]
    tagged = [n for n, line in sample if _TAGGED_LINE.match(line)]
    if len(tagged) >= 3 and len(tagged) >= 0.9 * len(sample):
        raise InputFormatError(
            path, tagged[0],
            "this is a tagged file ('<char> <tag>' per line, a blank line after each title), "
            "not one raw title per line: give it as train_file, and a file of raw titles here",
            content=lines[tagged[0] - 1])


def parse_title_lines(text: str, path: str) -> tuple[list[Title], ParseReport]:
    """Parse a one-title-per-line file. Blank lines between titles are errors."""
    report = ParseReport()
    lines = _lines(text)
    while lines and lines[-1] == "":
        lines.pop()
        report.trailing_blank_lines += 1
    report.trailing_blank_lines = max(0, report.trailing_blank_lines - 1)  # the final newline
    if not lines:
        raise InputFormatError(path, None, "no titles found: the file is empty or blank")
    _refuse_tagged_layout(lines, path)
    titles = []
    for line_no, line in enumerate(lines, start=1):
        if line == "":
            raise InputFormatError(
                path, line_no,
                "empty title: the submission layout cannot represent it; remove the line",
                content=line,
            )
        titles.append(Title(line, (), line_no))
    return titles, report


def format_submission(texts: Sequence[str], tags: Sequence[Sequence[str]]) -> str:
    """The official layout: ``<char> <tag>`` per character, a blank line after each title."""
    out: list[str] = []
    for text, title_tags in zip(texts, tags, strict=True):
        for char, tag in zip(text, title_tags, strict=True):
            out.append(f"{char} {tag}\n")
        out.append("\n")
    return "".join(out)


class SubmissionError(ValueError):
    """A submission that does not match its input titles."""


def validate_submission(content: str, texts: Sequence[str], labels: Iterable[str] | None = None) -> None:
    """Check a submission against its input titles before it is written.

    Same titles in the same order, every character echoed, exactly one valid BIO
    tag each (no orphan ``I-``), a blank line after each title, nothing else.
    """
    known = set(labels) if labels is not None else None
    lines = content.split("\n")
    pos = 0

    def fail(msg: str) -> None:
        shown = lines[pos] if pos < len(lines) else "<end of file>"
        raise SubmissionError(f"submission line {pos + 1}: {msg}; found {shown!r}")

    for k, text in enumerate(texts):
        tags = []
        for i, char in enumerate(text):
            if pos >= len(lines) or len(lines[pos]) < 3:
                fail(f"title {k + 1} character {i + 1}: expected {char!r} and a tag")
            line = lines[pos]
            if line[0] != char or line[1] != " ":
                fail(f"title {k + 1} character {i + 1}: expected {char!r} then a space")
            tag = line[2:]
            try:
                _, typ = split_tag(tag)
            except ValueError:
                fail(f"title {k + 1} character {i + 1}: invalid tag")
            if tag[0] not in "BIO":
                fail(f"title {k + 1} character {i + 1}: not a BIO tag")
            if known is not None and typ is not None and typ not in known:
                fail(f"title {k + 1} character {i + 1}: unknown type {typ!r}")
            tags.append(tag)
            pos += 1
        try:
            tags_to_spans(tags, orphan="error")
        except OrphanTagError as err:
            pos -= len(text) - err.position
            fail(f"title {k + 1}: {err}")
        if pos >= len(lines) or lines[pos] != "":
            fail(f"title {k + 1}: expected a blank line after its {len(text)} characters")
        pos += 1
    if pos != len(lines) - 1 or lines[-1] != "":
        fail(f"content after the last of {len(texts)} titles")
