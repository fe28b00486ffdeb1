"""GitHub code scanning's `primaryLocationLineHash`: a port of github/codeql-action src/fingerprints.ts `hash`.

For every line, a rolling hash (base 37, modulo 2**64) over the next BLOCK_SIZE characters of the file with
spaces and tabs dropped and CR / CRLF read as LF, then `:n` for the n-th line with the same hash. Characters
are UTF-16 code units, as JavaScript's `charCodeAt` reads them. upload-sarif computes the same value when a
result lacks one; computing it here keeps alerts stable when SARIF is uploaded another way.
"""

from __future__ import annotations

BLOCK_SIZE = 100
MOD = 37
MASK = (1 << 64) - 1
FIRST_MOD = pow(MOD, BLOCK_SIZE, 1 << 64)
EOF = 65535
TAB, SPACE, LF, CR = 9, 32, 10, 13


def _code_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [data[i] | (data[i + 1] << 8) for i in range(0, len(data), 2)]


def line_hashes(text: str) -> dict[int, str]:
    """`{line number (1-based): "hexhash:occurrence"}` for every line of `text`, as codeql-action computes it."""
    window = [0] * BLOCK_SIZE
    line_numbers = [-1] * BLOCK_SIZE
    state = {"hash": 0, "index": 0, "line": 0, "line_start": True, "prev_cr": False}
    counts: dict[str, int] = {}
    out: dict[int, str] = {}

    def output() -> None:
        value = format(state["hash"], "x")
        counts[value] = counts.get(value, 0) + 1
        out[line_numbers[state["index"]]] = f"{value}:{counts[value]}"
        line_numbers[state["index"]] = -1

    def update(current: int) -> None:
        index = state["index"]
        begin = window[index]
        window[index] = current
        state["hash"] = (MOD * state["hash"] + current - FIRST_MOD * begin) & MASK
        state["index"] = (index + 1) % BLOCK_SIZE

    def process(current: int) -> None:
        if current in (SPACE, TAB) or (state["prev_cr"] and current == LF):
            state["prev_cr"] = False
            return
        if current == CR:
            current, state["prev_cr"] = LF, True
        else:
            state["prev_cr"] = False
        if line_numbers[state["index"]] != -1:
            output()
        if state["line_start"]:
            state["line_start"] = False
            state["line"] += 1
            line_numbers[state["index"]] = state["line"]
        if current == LF:
            state["line_start"] = True
        update(current)

    for unit in _code_units(text):
        process(unit)
    process(EOF)
    for _ in range(BLOCK_SIZE):
        if line_numbers[state["index"]] != -1:
            output()
        update(0)
    return out


def primary_location_line_hash(text: str, line: int) -> str | None:
    """The fingerprint of a result whose region starts on `line` of a file with contents `text`."""
    return line_hashes(text).get(line)
