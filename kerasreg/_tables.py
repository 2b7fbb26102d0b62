"""Plain-text tables and pandas frames of result rows (pandas optional)."""

__all__ = ["format_table", "to_dataframe"]


def format_table(rows, columns, total=None, first_left=False):
    """Formats dict rows as an aligned text table.

    Args:
        rows: Iterable of dicts.
        columns: Tuple of `(title, key, format)`; a `None` value prints `-`.
        total: Optional list of cells for a last line, after a rule.
        first_left: Whether the first column is left-aligned (the others are
            right-aligned). Defaults to `False`.

    Returns:
        The table as a string, a rule under the header.
    """
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row[key] is None else fmt.format(row[key]) for _, key, fmt in columns])
    if total is not None:
        cells.append(list(total))
    widths = [max(len(line[j]) for line in cells) for j in range(len(columns))]
    lines = [
        "  ".join(
            cell.ljust(width) if first_left and j == 0 else cell.rjust(width)
            for j, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    rule = "-" * len(lines[0])
    lines.insert(1, rule)
    if total is not None:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)


def to_dataframe(rows, owner):
    """`pandas.DataFrame(rows)`, or an `ImportError` that says what to do."""
    try:
        import pandas as pd
    except ImportError as error:
        raise ImportError(
            f"`{owner}.to_dataframe()` needs pandas, which kerasreg does not install. Install "
            "it with `pip install pandas`, or use `.rows()`."
        ) from error
    return pd.DataFrame(rows)
