"""Notebook display helpers shared by the explorers and the report: an audio player, a figure and players
as one HTML block, and :class:`LiveView` (ipywidgets controls above one plain HTML output replaced in place)."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.figure import Figure

from .errors import DataError

__all__ = ["LiveView", "audio_player", "static_html"]


def audio_player(y, *, sample_rate: int):
    """An ``IPython.display.Audio`` player of a mono float waveform at ``sample_rate`` Hz, at its own
    loudness: scaled to full range only when it goes beyond [-1, 1], which a WAV file cannot hold."""
    from IPython.display import Audio

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1 or y.size == 0 or not np.isfinite(y).all():
        raise DataError(f"audio_player: expected a non-empty finite mono waveform, got shape {y.shape}; "
                        "load clips with fatlib.features.clip_wave")
    return Audio(y, rate=int(sample_rate), normalize=bool(np.abs(y).max() > 1.0))


def _png(fig: Figure, *, dpi: int = 80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def static_html(fig: Figure, audio: dict, *, note: str = "") -> str:
    """HTML of a figure (embedded PNG) and titled players: what a saved notebook shows of an explorer."""
    players = "".join(f"<td style='text-align:left'>{html.escape(t)}<br/>{a._repr_html_()}</td>"
                      for t, a in audio.items())
    return (f"<div>{'<p>' + html.escape(note) + '</p>' if note else ''}<img src='data:image/png;base64,{_png(fig)}'/>"
            f"<table><tr>{players}</tr></table></div>")


class LiveView:
    """Controls (ipywidgets) above one plain HTML output that :meth:`render` replaces in place (an IPython
    display handle, not an Output widget), so a notebook saved headless still holds the current rendering:
    nbconvert shows it without widget state, and a live kernel updates it when a control changes."""

    handle = None
    widget = None
    html = ""

    def show(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        self.handle = display(HTML(self.html), display_id=True)

    def render(self) -> None:
        self.html = self.compute()
        if self.handle is not None:
            from IPython.display import HTML

            self.handle.update(HTML(self.html))

    def compute(self) -> str:
        raise NotImplementedError
