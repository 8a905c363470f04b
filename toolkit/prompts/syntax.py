"""Prompt weighting syntax: A1111-style weights written the way compel reads them.

Users write `(term:1.3)`, `(term)` (x1.1) and `[term]` (/1.1), the syntax of A1111 and ComfyUI. compel, which does
the parsing and the weighting, reads `(term)1.3`, `term+` and `term-`. `to_compel` only rewrites the brackets
(nesting is kept, so compel multiplies nested weights as A1111 does); compel's own syntax passes through unchanged.
"""

from __future__ import annotations

import re

_WEIGHT = re.compile(r"(.*):\s*(\d+(?:\.\d+)?)\s*", re.S)
_COMPEL_SUFFIX = re.compile(r"[\d.+-]")


def to_compel(prompt: str) -> str:
    """Rewrite A1111 weights as compel weights: (x:1.3) -> (x)1.3, (x) -> (x)1.1, [x] -> (x)0.9091."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []  # index in `out` of each open bracket, and which bracket
    i = 0
    while i < len(prompt):
        c = prompt[i]
        if c == "\\" and i + 1 < len(prompt):  # an escaped bracket is text
            out.append(prompt[i:i + 2])
            i += 2
            continue
        if c in "([":
            stack.append((len(out), c))
            out.append("(")
        elif c == ")" and stack and stack[-1][1] == "(":
            start, _ = stack.pop()
            inner = "".join(out[start + 1:])
            weight = _WEIGHT.fullmatch(inner)
            if i + 1 < len(prompt) and _COMPEL_SUFFIX.match(prompt[i + 1]):
                out.append(")")  # already compel syntax: (x)1.3 or (x)+
            elif weight:
                out[start + 1:] = [weight.group(1), f"){float(weight.group(2)):g}"]
            else:
                out.append(")1.1")
        elif c == "]" and stack and stack[-1][1] == "[":
            stack.pop()
            out.append(")0.9091")
        else:
            out.append(c)
        i += 1
    for start, _ in reversed(stack):  # an unclosed bracket is dropped rather than weighting the rest
        out[start] = ""
    return "".join(out)


def plain_text(prompt: str) -> str:
    """The prompt as the text encoder sees it: weighting syntax parsed away by compel."""
    from compel import Compel  # imported here: compel pulls in the diffusers pipelines (seconds)

    conjunction = Compel.parse_prompt_string(to_compel(prompt))
    fragments = [f for part in conjunction.prompts for f in getattr(part, "children", [])]
    return " ".join(f.text for f in fragments if hasattr(f, "text"))
