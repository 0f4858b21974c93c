"""The pieces of eegloop's HTML reports: a matplotlib figure or an image as an embedded PNG, a figure with its
caption, a table, and escaping (every string from the database or a data file goes through :func:`_e`)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Optional


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_uri(path: Path, size: int = 128) -> Optional[str]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    except OSError:
        return None


def _fig(uri: str, caption: str) -> str:
    return f"<figure><img src='{uri}' alt='{html.escape(caption)}'><figcaption>{html.escape(caption)}</figcaption></figure>"


def _table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _e(value) -> str:
    """Any value from the database or a data file, escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)
