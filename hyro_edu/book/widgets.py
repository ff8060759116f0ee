"""Interactive explorers (ipywidgets) for the book.  Each redraws a figure from :mod:`hyro_edu.book.plotting`."""
from __future__ import annotations

__all__ = ["poincare_explorer"]


def poincare_explorer(c: float = 1.0, center=(0.3, 0.2), radius: float = 1.0):
    """Sliders for the curvature ``c`` (curvature ``-c``), the centre (in units of the ball radius) and a
    distance; the figure shows geodesics from the centre and the hyperbolic circles of radius
    ``d/2, d, 2d`` around it.  Returns the widget box.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from hyro_edu.book.plotting import poincare_scene

    c_slider = widgets.FloatLogSlider(value=c, base=10, min=-2, max=1, step=0.05, description="c")
    x_slider = widgets.FloatSlider(value=center[0], min=-0.9, max=0.9, step=0.02, description="centre x")
    y_slider = widgets.FloatSlider(value=center[1], min=-0.9, max=0.9, step=0.02, description="centre y")
    d_slider = widgets.FloatSlider(value=radius, min=0.1, max=3.0, step=0.05, description="distance d")
    out = widgets.Output()

    def redraw(*_):
        cx, cy = x_slider.value, y_slider.value
        norm = (cx * cx + cy * cy) ** 0.5
        if norm > 0.9:  # keep the centre inside the ball
            cx, cy = cx * 0.9 / norm, cy * 0.9 / norm
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            d = d_slider.value
            poincare_scene(ax, c=c_slider.value, center=(cx, cy), radii=(d / 2, d, 2 * d))
            plt.show()

    for w in (c_slider, x_slider, y_slider, d_slider):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([c_slider, d_slider]), widgets.HBox([x_slider, y_slider]), out])
