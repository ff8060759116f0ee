"""Explorers for the book: a live one (ipywidgets) and a static one (precomputed pictures, plain HTML).

Both draw :func:`hyro_edu.book.plotting.poincare_scene`.

* :func:`poincare_explorer` needs a running kernel (Colab, Binder, Jupyter): sliders redraw the figure.
  It uses only ipywidgets APIs present in both 7.6+ and 8.x (``FloatLogSlider``, ``FloatSlider``,
  ``Output``, ``VBox``, ``HBox``, ``observe(..., names="value")``), so it runs next to Colab's
  bundled ipywidgets 7.7.1; ``.ci/check_widgets_colab.py`` checks that.
* :func:`poincare_explorer_static` needs no kernel: it draws a grid of pictures once and returns HTML
  with one ``<input type="range">`` per parameter and a few lines of inline JavaScript (event
  handlers on the sliders; no ``<script>`` element, nothing loaded from elsewhere) that show the
  picture for the chosen values.  It works on the published static pages and in Jupyter.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import uuid
from dataclasses import dataclass, field

__all__ = ["poincare_explorer", "poincare_explorer_static", "StaticExplorer"]

#: The static explorer's default grid: log-spaced curvatures, the circles' distance ``d`` (radii
#: ``d/2, d, 2d``) and centres in units of the ball radius (the origin, halfway, near the boundary).
STATIC_CURVATURES = (0.25, 0.5, 1.0, 2.0, 4.0)
STATIC_DISTANCES = (0.5, 1.0, 2.0)
STATIC_CENTERS = ((0.0, 0.0), (0.45, 0.25), (0.75, 0.42))


def _clamp_center(cx: float, cy: float, limit: float = 0.9) -> tuple[float, float]:
    norm = math.hypot(cx, cy)
    if norm > limit:  # keep the centre inside the ball
        cx, cy = cx * limit / norm, cy * limit / norm
    return cx, cy


def poincare_explorer(c: float = 1.0, center=(0.3, 0.2), radius: float = 1.0):
    """Sliders for the curvature ``c`` (curvature ``-c``), the centre (in units of the ball radius) and a
    distance; the figure shows geodesics from the centre and the hyperbolic circles of radius
    ``d/2, d, 2d`` around it.  Returns the widget box (needs a kernel; see
    :func:`poincare_explorer_static` for pages without one).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    from hyro_edu.book import plotting

    c_slider = widgets.FloatLogSlider(value=c, base=10, min=-2, max=1, step=0.05, description="c")
    x_slider = widgets.FloatSlider(value=center[0], min=-0.9, max=0.9, step=0.02, description="centre x")
    y_slider = widgets.FloatSlider(value=center[1], min=-0.9, max=0.9, step=0.02, description="centre y")
    d_slider = widgets.FloatSlider(value=radius, min=0.1, max=3.0, step=0.05, description="distance d")
    out = widgets.Output()

    def redraw(*_):
        cx, cy = _clamp_center(x_slider.value, y_slider.value)
        d = d_slider.value
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            try:
                plotting.poincare_scene(ax, c=c_slider.value, center=(cx, cy), radii=(d / 2, d, 2 * d))
                display(fig)
            finally:
                plt.close(fig)  # shown once, through the Output widget; no figure piles up

    for w in (c_slider, x_slider, y_slider, d_slider):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([c_slider, d_slider]), widgets.HBox([x_slider, y_slider]), out])


@dataclass(frozen=True)
class StaticExplorer:
    """A kernel-free explorer: ``html`` (shown through ``_repr_html_``) and what it holds.

    ``parameters`` maps each slider's name to its values; there is one frame per combination
    (``n_frames``), a PNG embedded as a ``data:`` URI.  ``element_id`` is unique per call, and every
    id inside starts with it, so several explorers can share a page.
    """

    html: str
    element_id: str
    parameters: dict = field(default_factory=dict)
    n_frames: int = 0

    @property
    def nbytes(self) -> int:
        """Size of the HTML in bytes (what the explorer adds to the page)."""
        return len(self.html.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        grid = " x ".join(f"{len(v)} {k}" for k, v in self.parameters.items())
        return f"<static explorer {self.element_id}: {self.n_frames} frames ({grid}), {self.nbytes / 1024:.0f} KB>"


def _png_data_uri(fig, *, dpi: int, colors: int) -> str:
    """The figure as a small PNG ``data:`` URI: drawn by Agg, reduced to a palette of ``colors``."""
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi, facecolor="white")
    raw.seek(0)
    image = Image.open(raw).convert("RGB")
    if colors:
        image = image.quantize(colors=colors)
    small = io.BytesIO()
    image.save(small, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(small.getvalue()).decode("ascii")


# The sliders' event handler (inline, so it needs no <script> element and runs wherever the HTML is
# shown with JavaScript): collect every slider's position, print the value next to each slider, and
# show the one picture whose data-key is those positions.
_ON_INPUT = (
    "var r=this.closest('.hyro-explorer'),k=[];"
    "r.querySelectorAll('input[type=range]').forEach(function(s){k.push(s.value);"
    "s.parentNode.querySelector('output').textContent=JSON.parse(s.dataset.labels)[+s.value];});"
    "r.querySelectorAll('img[data-key]').forEach(function(m){"
    "m.style.display=(m.dataset.key===k.join(','))?'':'none';});"
)


def _nearest(values, target) -> int:
    return min(range(len(values)), key=lambda i: abs(math.log(values[i]) - math.log(target)))


def poincare_explorer_static(
    cs=STATIC_CURVATURES,
    distances=STATIC_DISTANCES,
    centers=STATIC_CENTERS,
    *,
    c: float = 1.0,
    radius: float = 1.0,
    center: int = 1,
    size: float = 4.0,
    dpi: int = 72,
    colors: int = 64,
) -> StaticExplorer:
    """The picture of :func:`poincare_explorer` for every ``c`` in ``cs``, ``d`` in ``distances`` and
    centre in ``centers`` (in units of the ball radius), with a slider for each, as self-contained HTML.

    The sliders start at the values nearest ``c`` and ``radius`` and at ``centers[center]``.  Each
    frame is a ``size`` x ``size`` inch figure at ``dpi``, reduced to ``colors`` colours (0 keeps full
    colour): with the defaults, 5 x 3 x 3 = 45 frames of 288 x 288 pixels, about 0.5 MB in all.
    Display the result (it has ``_repr_html_``) in a notebook cell.
    """
    import itertools

    from matplotlib.figure import Figure

    from hyro_edu.book import plotting

    cs, distances = [float(v) for v in cs], [float(v) for v in distances]
    centers = [(float(x), float(y)) for x, y in centers]
    if not cs or not distances or not centers:
        raise ValueError(f"cs, distances and centers must be non-empty; got {cs}, {distances}, {centers}")
    if min(cs) <= 0 or min(distances) <= 0:
        raise ValueError(f"every c and d must be > 0; got cs={cs}, distances={distances}")
    if max(math.hypot(x, y) for x, y in centers) >= 1:
        raise ValueError(f"centres are in units of the ball radius and must have norm < 1; got {centers}")
    if not 0 <= center < len(centers):
        raise ValueError(f"center indexes centers (0 to {len(centers) - 1}); got {center}")

    uid = f"hyro-explorer-{uuid.uuid4().hex[:12]}"
    grid = [  # (name, label, the value shown next to the slider, start position)
        ("c", "curvature c", [f"{v:g}" for v in cs], _nearest(cs, c)),
        ("d", "distance d", [f"{v:g}" for v in distances], _nearest(distances, radius)),
        ("centre", "centre", [f"({x:g}, {y:g})" for x, y in centers], center),
    ]
    start = tuple(at for *_, at in grid)
    images = []
    for key in itertools.product(range(len(cs)), range(len(distances)), range(len(centers))):
        cc, d, xy = cs[key[0]], distances[key[1]], centers[key[2]]
        fig = Figure(figsize=(size, size))  # no pyplot: nothing is shown or kept open
        ax = fig.add_subplot()
        plotting.poincare_scene(ax, c=cc, center=xy, radii=(d / 2, d, 2 * d))
        ax.set_title(f"c = {cc:g}, circles of radius {d / 2:g}, {d:g}, {2 * d:g}", fontsize=10)
        fig.tight_layout()
        shown = "" if key == start else ' style="display:none"'
        images.append(
            f'<img id="{uid}-frame-{"-".join(map(str, key))}" data-key="{",".join(map(str, key))}" '
            f'width="{round(size * dpi)}"{shown} alt="Poincaré disk: c = {cc:g}, d = {d:g}, centre {xy}" '
            f'src="{_png_data_uri(fig, dpi=dpi, colors=colors)}">'
        )

    handler = html.escape(_ON_INPUT, quote=True)
    sliders = "".join(
        f'<label for="{uid}-{name}" style="margin-right:1.5em;white-space:nowrap">{label} '
        f'<input type="range" id="{uid}-{name}" min="0" max="{len(labels) - 1}" step="1" value="{at}" '
        f'data-labels="{html.escape(json.dumps(labels), quote=True)}" oninput="{handler}" '
        f'style="vertical-align:middle"> <output id="{uid}-{name}-value">{html.escape(labels[at])}</output></label>'
        for name, label, labels, at in grid
    )
    page = (
        f'<div class="hyro-explorer" id="{uid}">'
        f'<div class="hyro-explorer-controls">{sliders}</div>'
        f'<div class="hyro-explorer-frames">{"".join(images)}</div>'
        f"</div>"
    )
    return StaticExplorer(
        html=page,
        element_id=uid,
        parameters={"c": tuple(cs), "d": tuple(distances), "centre": tuple(centers)},
        n_frames=len(images),
    )
