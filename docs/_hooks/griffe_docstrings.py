"""Griffe extension: the docstrings as the site renders them.

The docstrings are written for `help()` and an editor, as Keras writes its
own: formulas as Sphinx does (`.. math::` blocks and `:math:` roles) and
examples as doctests under an `Example:` line. The site renders them: a
formula block becomes `\\[ ... \\]` and a role `\\( ... \\)`, which
`pymdownx.arithmatex` hands to MathJax, and each run of doctest lines a
fenced `pycon` block (Markdown would read `>>>` as nested quotes).
"""

import re

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*$")


def _indent(line):
    return len(line) - len(line.lstrip())


def _fence_doctests(lines):
    out = []
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        margin = lines[i][: _indent(lines[i])]
        out.append(margin + "```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(margin + "```")
    return out


def convert(text):
    """Returns `text` with its maths in MathJax's delimiters, doctests fenced."""
    lines = _fence_doctests(text.split("\n"))
    out = []
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        if not directive:
            out.append(lines[i])
            i += 1
            continue
        margin = directive.group(1)
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(margin)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            i -= 1  # blank lines after the block stay in the text
            body.pop()
        formula = [line.strip() for line in body if line.strip()]
        out.extend([margin + "\\[", *(margin + line for line in formula), margin + "\\]"])
    return _ROLE.sub(lambda m: "\\(" + m.group(1) + "\\)", "\n".join(out))


class KerasDocstrings(griffe.Extension):
    """Rewrites each docstring before it is parsed."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
