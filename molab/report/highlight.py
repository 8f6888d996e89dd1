"""Mark the part of an answer that made a rule say "applied".

The detectors return yes or no, not a span, so the report asks them again on each paragraph
(a fenced code block counts as one paragraph): a paragraph on which the rule alone fires is
where the behaviour is. Suppress biases have nothing to mark (the behaviour is an absence).
"""

from __future__ import annotations

import html
import re

from molab.catalog import Bias

_BLOCKS = re.compile(r"```.*?(?:```|$)|[^\n]+(?:\n(?!\n|```)[^\n]+)*", re.DOTALL)


def highlighted_html(bias: Bias | None, prompt: str, response: str, applied: bool | None) -> str:
    """The response as HTML-escaped text, with the paragraphs that show `bias` in <mark>."""
    if bias is None or not applied or bias.kind != "promote" or bias.judge_only:
        return html.escape(response)
    out, last = [], 0
    for m in _BLOCKS.finditer(response):
        out.append(html.escape(response[last : m.start()]))
        chunk = m.group(0)
        hit = bias.applied(prompt, chunk)
        out.append(f"<mark>{html.escape(chunk)}</mark>" if hit else html.escape(chunk))
        last = m.end()
    out.append(html.escape(response[last:]))
    return "".join(out)
