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

_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A role, or a code span (left as it is): whichever starts first.
_ROLE_OR_CODE = re.compile(r":math:`(?P<role>[^`]+)`|(?P<ticks>`+).+?(?P=ticks)")


def _indent(line):
    return len(line) - len(line.lstrip())


def _block(lines, i, margin):
    """The lines after line `i` that are blank or indented deeper than `margin`."""
    end = i + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > margin):
        end += 1
    while end > i + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block stay in the text
    return end


def _math(margin, first, body):
    """One `\\[ ... \\]` per equation: per paragraph of the directive's body."""
    equations, current = [], [first] if first else []
    for line in body:
        if not line.strip():
            equations.append(current)
            current = []
        elif not line.strip().startswith(":"):  # an option such as `:label:`
            current.append(line.strip())
    equations.append(current)
    out = []
    for equation in filter(None, equations):
        out.extend([margin + "\\[", *(margin + line for line in equation), margin + "\\]"])
    return out


def _roles(line):
    """`:math:` roles to `\\( ... \\)`, outside code spans."""

    def replace(match):
        role = match.group("role")
        return match.group(0) if role is None else "\\(" + role + "\\)"

    return _ROLE_OR_CODE.sub(replace, line)


def convert(text):
    """Returns `text` with its maths in MathJax's delimiters, doctests fenced.

    Code the docstring already fences, and code spans, are left as they are.
    """
    lines = text.split("\n")
    out = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fenced = not fenced
        if fenced or _FENCE.match(line):
            out.append(line)
            i += 1
            continue
        directive = _DIRECTIVE.match(line)
        if directive:
            margin = directive.group(1)
            end = _block(lines, i, len(margin))
            out.extend(_math(margin, directive.group(2).strip(), lines[i + 1 : end]))
            i = end
            continue
        if line.lstrip().startswith(">>>"):
            # A doctest runs to a blank line or to a line indented less than
            # its first prompt (the next argument of an `Args:` section).
            margin = _indent(line)
            end = i
            while end < len(lines) and lines[end].strip() and _indent(lines[end]) >= margin:
                end += 1
            out.extend([line[:margin] + "```pycon", *lines[i:end], line[:margin] + "```"])
            i = end
            continue
        out.append(_roles(line))
        i += 1
    return "\n".join(out)


class KerasDocstrings(griffe.Extension):
    """Rewrites each docstring before it is parsed."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
