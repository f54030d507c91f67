"""Charts for the launcher's self-contained pages, drawn by matplotlib in memory (no display, no pyplot state)
and inlined into the page: as SVG with its text kept as text, or as PNG bytes (a file, or a data URI)."""

from __future__ import annotations

import io

from matplotlib import rc_context
from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> tuple[Figure, object]:
    """A figure of `width` x `height` inches and its one set of axes."""
    figure = Figure(figsize=(width, height), dpi=90)
    return figure, figure.subplots()


def inline_svg(figure: Figure) -> str:
    """The figure as an <svg> element (the XML prologue dropped), its labels searchable text."""
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    drawing = buffer.getvalue()
    return drawing[drawing.index("<svg") :]


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
