"""Skip a Python file before parsing when its text names nothing any check could match.

Conservative by design: a file passes if it mentions torch (every qualified name the checks match starts
with it), or any tensor method / module name a check matches without a torch import (`x.softmax(-1)`,
`q @ k`, `.eigh(`), or an einops call. A false pass costs a parse; a false skip loses findings, so
tests/test_speed_prefilter.py compares the filtered run with the unfiltered run on real trees, and runs
every `flagged` example of the rule catalogue through this filter.
"""

from __future__ import annotations

import re

# Words that may lead a check to a finding, matched anywhere in the text (comments included: cheap, safe).
WORDS = (
    "torch",
    "softmax",
    "Softmax",
    "einsum",
    "einops",
    "rearrange",
    "matmul",
    "bmm",
    "baddbmm",
    "eigh",
    "eigvals",
    "svd",
    "empty_cache",
    "cuda",
    "Linear",
    "Embedding",
    "Parameter",
    "Attention",
    "attention",
    "Module",
    "stack",
    "cat(",
    "concat",
    "backward",
    "MEM",  # a noqa comment naming a MEM code can be an unused-noqa finding (MEM910)
)
_WORDS = re.compile("|".join(re.escape(w) for w in WORDS))
# The matrix-multiplication operator: `a @ b`, `x@=y`; a decorator (`@` first on its line) is not one.
_MATMUL = re.compile(r"[\w)\]][ \t]*@|@=")


def may_have_findings(text: str) -> bool:
    """False only when no check can report anything in this Python source."""
    return _WORDS.search(text) is not None or _MATMUL.search(text) is not None
