"""`evaluation.html`: one self-contained page (every picture inline, nothing fetched, no script) of an evaluation:
the headline figures, the confusion matrix drawn by matplotlib, the most confused pairs, per-class figures and a
gallery of the most confident mistakes with thumbnails of the images themselves."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay

from launcher import charts

THUMBNAIL = 128  # pixels, the longer side
LABELLED_AXES = 40  # up to this many classes the matrix names them and prints its counts

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; width: 150px; }
figure img { width: 128px; height: 128px; object-fit: contain; background: #f4f4f4; display: block; }
figcaption { font-size: 12px; } .bad { color: #b3261e; } .note { color: #666; }
"""


def data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def matrix_png(classes: list[str], matrix: list[list[int]]) -> bytes:
    """The confusion matrix as a PNG (true class down, predicted across)."""
    labelled = len(classes) <= LABELLED_AXES
    side = min(4 + 0.35 * len(classes), 24)
    figure, axes = charts.new_figure(side, side)
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=classes if labelled else None)
    display.plot(ax=axes, cmap="Blues", colorbar=True, include_values=labelled, xticks_rotation="vertical")
    if not labelled:
        axes.set_xticks([])
        axes.set_yticks([])
    axes.set_title("Confusion matrix (true class down, predicted class across)")
    return charts.png(figure)


def thumbnail(path: Path) -> str | None:
    """A small JPEG of an image file, as a data URI; None if it cannot be read."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=85)
    except OSError:
        return None
    return data_uri(buffer.getvalue(), "image/jpeg")


def _rows(rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="n">{value:.4f}</td>'
        if isinstance(value, int):
            return f'<td class="n">{value}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    return "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)


def render(result: dict[str, Any], root: Path, title: str, matrix_image: bytes) -> str:
    """The page for an evaluation result (launcher.evaluation.evaluate) of the images under `root`."""
    esc = html.escape
    matrix = data_uri(matrix_image, "image/png")
    headline = [
        ["images scored", result["images"]],
        ["accuracy", result["accuracy"]],
        [f"top-{result['top_k']} accuracy", result["top_k_accuracy"]],
        ["average loss (cross-entropy)", result["loss"]],
    ]
    confused = [[c["true"], c["predicted"], c["count"]] for c in result["most_confused"]]
    per_class = [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]] for c in result["per_class"]]
    gallery = []
    for mistake in result["worst_mistakes"]:
        picture = thumbnail(root / mistake["file"])
        image = f'<img src="{picture}" alt="{esc(mistake["file"])}">' if picture else "<p>(unreadable)</p>"
        gallery.append(
            f"<figure>{image}<figcaption>{esc(mistake['file'])}<br>true: <b>{esc(mistake['true'])}</b><br>"
            f'<span class="bad">predicted: <b>{esc(mistake["predicted"])}</b> '
            f"({mistake['probability']:.2f})</span></figcaption></figure>"
        )
    left_out = []
    if result["unknown_classes"]:
        names = ", ".join(f"{esc(name)} ({count})" for name, count in result["unknown_classes"].items())
        left_out.append(f"<p class='note'>Left out, classes the model does not know: {names}.</p>")
    if result["failed"]:
        left_out.append(
            f"<p class='note'>Left out, {len(result['failed'])} image(s) that could not be classified "
            "(listed in evaluation.json).</p>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{esc(title)}</h1>
<table id="headline">{_rows(headline)}</table>
{"".join(left_out)}
<h2>Confusion matrix</h2>
<img id="confusion-matrix" src="{matrix}" alt="confusion matrix of {len(result["classes"])} classes"
     style="max-width: 100%">
<h2>Most confused pairs</h2>
<table id="most-confused"><tr><th>true class</th><th>predicted as</th><th>images</th></tr>
{_rows(confused) if confused else "<tr><td colspan=3>no mistakes</td></tr>"}</table>
<h2>The most confident mistakes</h2>
<div class="gallery" id="mistakes">{"".join(gallery) or "<p>no mistakes</p>"}</div>
<h2>Per class</h2>
<table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{_rows(per_class)}</table>
</body></html>
"""
