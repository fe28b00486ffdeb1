"""Text positions and edits: Span (1-based line, UTF-8 byte column) ↔ string offsets, applying edits."""

from __future__ import annotations

import ast
import itertools
import re

from memlint.findings import Edit, Fix, Span

NEWLINE = re.compile(r"\r\n|\r|\n")


class Lines:
    """Offsets of the lines of a text, to turn (line, column) positions into string indices."""

    def __init__(self, text: str, columns: str = "bytes"):
        self.text = text
        self.columns = columns  # "bytes": ast's UTF-8 byte columns (Python); "chars": code points (YAML)
        self.starts = [0] + [m.end() for m in NEWLINE.finditer(text)]

    def index(self, line: int, col: int) -> int:
        """String index of a 1-based line and 1-based column."""
        if line > len(self.starts):
            return len(self.text)
        start = self.starts[line - 1]
        if self.columns == "chars":
            return start + col - 1
        end = self.starts[line] if line < len(self.starts) else len(self.text)
        prefix = self.text[start:end].encode("utf-8")[: col - 1]
        return start + len(prefix.decode("utf-8", errors="ignore"))

    def span(self, start: int, end: int) -> Span:
        """The Span of text[start:end] in this file's column convention."""
        return Span(*self._position(start), *self._position(end))

    def _position(self, index: int) -> tuple[int, int]:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= index:
                lo = mid
            else:
                hi = mid - 1
        start = self.starts[lo]
        piece = self.text[start:index]
        col = len(piece) if self.columns == "chars" else len(piece.encode("utf-8"))
        return lo + 1, col + 1


def newline_of(text: str) -> str:
    m = NEWLINE.search(text)
    return m.group(0) if m else "\n"


def segment(text: str, lines: Lines, node: ast.AST) -> str:
    span = Span.of(node)
    return text[lines.index(span.line, span.col) : lines.index(span.end_line, span.end_col)]


def replace_node(lines: Lines, node: ast.AST, content: str) -> Edit:
    """An Edit that replaces exactly the text of an `ast` node."""
    start = lines.index(node.lineno, node.col_offset + 1)
    end = lines.index(node.end_lineno, node.end_col_offset + 1)
    return Edit(lines.span(start, end), content)


def delete_statement(lines: Lines, stmt: ast.stmt) -> Edit:
    """An Edit that removes the whole lines of a statement (with their line break)."""
    start = lines.starts[stmt.lineno - 1]
    end = lines.starts[stmt.end_lineno] if stmt.end_lineno < len(lines.starts) else len(lines.text)
    return Edit(lines.span(start, end), "")


def select_fixes(fixes: list[Fix], lines: Lines) -> tuple[list[tuple[int, int, str]], list[Fix], list[Fix]]:
    """Pick fixes whose edits do not overlap, in order of position: (edits as offsets, applied, deferred).

    Identical edits (the same import added by two fixes) count once. A fix is all or nothing.
    """
    taken: dict[tuple[int, int, str], None] = {}
    applied, deferred = [], []
    ordered = sorted(fixes, key=lambda f: min((e.span for e in f.edits), default=Span(0, 0, 0, 0)))
    for fix in ordered:
        edits = [_offsets(e, lines) for e in fix.edits]
        new = [e for e in edits if e not in taken]
        if any(_overlaps(e, t) for e in new for t in taken) or _self_overlap(new):
            deferred.append(fix)
            continue
        for e in new:
            taken[e] = None
        applied.append(fix)
    return sorted(taken), applied, deferred


def apply_offsets(text: str, edits: list[tuple[int, int, str]]) -> str:
    newline = newline_of(text)
    out, last = [], 0
    for start, end, content in sorted(edits):
        out.append(text[last:start])
        out.append(content.replace("\n", newline) if newline != "\n" else content)
        last = end
    out.append(text[last:])
    return "".join(out)


def _offsets(edit: Edit, lines: Lines) -> tuple[int, int, str]:
    s = edit.span
    return lines.index(s.line, s.col), lines.index(s.end_line, s.end_col), edit.content


def _overlaps(a, b) -> bool:
    if a[0] == a[1] or b[0] == b[1]:  # an insertion conflicts only strictly inside the other edit
        return (a[0] == a[1] == b[0] == b[1]) or b[0] < a[0] < b[1] or a[0] < b[0] < a[1]
    return a[0] < b[1] and b[0] < a[1]


def _self_overlap(edits) -> bool:
    ordered = sorted(edits)
    return any(_overlaps(x, y) for x, y in itertools.pairwise(ordered))
