"""`concise`: one line per finding, `path:line:col: CODE message [cost]`."""

from memlint.cost import human_bytes
from memlint.report import formatter, summary_line


def finding_line(finding, priced: bool = True) -> str:
    marker = " [*]" if finding.fix is not None and finding.fix.applicability == "safe" else ""
    price = ""
    if finding.cost is not None and priced:
        if finding.cost.bytes is not None and finding.cost.share is not None:
            price = f" ({human_bytes(finding.cost.bytes)}, {finding.cost.share * 100:.0f} % of {finding.cost.gpu})"
        elif finding.cost.missing:
            price = f" (cost unresolved: {', '.join(finding.cost.missing)})"
    return f"{finding.path}:{finding.span.line}:{finding.span.col}: {finding.code}{marker} {finding.message}{price}"


@formatter("concise")
def render(report) -> str:
    lines = [finding_line(f) for f in report.visible()]
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"
