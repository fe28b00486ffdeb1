"""`full`: each finding with its cost (formula and numbers), where every size came from, and the fix."""

from memlint.cost import human_bytes
from memlint.report import formatter, summary_line
from memlint.report.concise import finding_line

INDENT = "    "


def cost_lines(finding) -> list[str]:
    cost = finding.cost
    if cost is None:
        return []
    lines = []
    if cost.bytes is not None and not cost.missing:
        share = f" ({cost.share * 100:.0f} % of usable {cost.gpu})" if cost.share is not None else ""
        lines.append(f"cost   {cost.formula} = {cost.substituted} {cost.what}{share}")
    else:
        lines.append(f"cost   {cost.formula} {cost.what}: unresolved")
    if cost.sizes:
        described = [s.describe() for s in cost.sizes]
        lines.append("sizes  " + described[0])
        lines.extend("       " + d for d in described[1:])
    for alternative in cost.alternatives:
        lines.append(f"fix    {alternative}")
    return lines


def block(finding) -> list[str]:
    lines = [finding_line(finding, priced=False)]  # the cost has its own lines below
    body = cost_lines(finding)
    if finding.fix is not None:
        marker = "[*]" if finding.fix.applicability == "safe" else "[unsafe]"
        body.append(f"fix    {marker} {finding.fix.message}")
    body.extend(f"note   {note}" for note in finding.notes)
    return lines + [INDENT + line for line in body]


@formatter("full")
def render(report) -> str:
    out = []
    for note in report.notes:
        out.append(f"memlint: {note}")
    for finding in report.visible():
        out.extend(block(finding))
    if report.gpu is not None and report.visible():
        out.append(f"GPU: {report.gpu.name}, {report.gpu.describe_usable()}")
    out.append(summary_line(report))
    return "\n".join(out) + "\n"


def bytes_text(n) -> str:
    return human_bytes(n)
