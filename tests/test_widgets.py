"""The chapter-2 explorers: the static one (precomputed frames, plain HTML) and the live one (ipywidgets).

The live explorer under Colab's ipywidgets 7.7.1 is checked by ``.ci/check_widgets_colab.py``
(it needs a throwaway venv); here it runs under the installed ipywidgets.
"""
from __future__ import annotations

import math
import re
import shutil

import pytest

from hyro_edu.book import widgets

SMALL = dict(cs=(0.5, 2.0), distances=(1.0,), centers=((0.0, 0.0), (0.5, 0.2), (0.7, 0.0)), dpi=24, size=2.0)


@pytest.fixture(scope="module")
def two_explorers():
    return widgets.poincare_explorer_static(**SMALL), widgets.poincare_explorer_static(**SMALL, c=2.0)


def test_static_explorer_has_one_frame_per_combination(two_explorers):
    explorer, _ = two_explorers
    page = explorer._repr_html_()
    assert explorer.n_frames == 2 * 1 * 3
    assert page.count("data:image/png;base64,") == explorer.n_frames
    assert explorer.parameters == {"c": (0.5, 2.0), "d": (1.0,), "centre": SMALL["centers"]}
    keys = re.findall(r'data-key="([\d,]+)"', page)
    assert sorted(keys) == sorted(f"{i},0,{k}" for i in range(2) for k in range(3))
    # one slider per parameter, and exactly one frame shown at first: the one the sliders start at
    assert page.count('type="range"') == 3
    assert page.count('style="display:none"') == explorer.n_frames - 1
    start = re.findall(r'value="(\d+)"', page)
    shown = [k for k in re.findall(r'<img [^>]*>', page) if "display:none" not in k]
    assert len(shown) == 1 and f'data-key="{",".join(start)}"' in shown[0]


def test_static_explorer_is_self_contained(two_explorers):
    for explorer in two_explorers:
        page = explorer.html
        assert "<script" not in page  # inline handlers only: no <script src=...>, no require.js
        assert not re.search(r'(src|href)="(?!data:)', page), "everything is embedded as data: URIs"
        assert "http" not in page
        assert explorer.nbytes < 200_000


def test_static_explorer_ids_are_unique_across_calls(two_explorers):
    ids = [i for explorer in two_explorers for i in re.findall(r'\bid="([^"]+)"', explorer.html)]
    assert len(ids) == len(set(ids))
    for explorer in two_explorers:
        assert all(i.startswith(explorer.element_id) for i in re.findall(r'\bid="([^"]+)"', explorer.html))
    first, second = two_explorers
    assert first.element_id != second.element_id
    # the second starts at c = 2.0
    assert re.search(rf'id="{second.element_id}-c" [^>]*value="1"', second.html)


def test_static_explorer_rejects_bad_grids():
    with pytest.raises(ValueError, match="> 0"):
        widgets.poincare_explorer_static(cs=(0.0, 1.0))
    with pytest.raises(ValueError, match="norm < 1"):
        widgets.poincare_explorer_static(centers=((1.0, 0.5),))
    with pytest.raises(ValueError, match="non-empty"):
        widgets.poincare_explorer_static(distances=())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_static_explorer_sliders_swap_the_frame_in_a_browser(two_explorers, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "explorers.html"
    page_file.write_text("<!doctype html><html><body>" + "".join(e.html for e in two_explorers) + "</body></html>")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            first, second = two_explorers

            def shown(explorer):
                root = page.locator(f"#{explorer.element_id}")
                return [m.get_attribute("data-key") for m in root.locator("img").all() if m.is_visible()]

            assert shown(first) == ["0,0,1"] and shown(second) == ["1,0,1"]
            page.locator(f"#{first.element_id}-centre").fill("2")
            page.locator(f"#{first.element_id}-c").fill("1")
            assert shown(first) == ["1,0,2"] and shown(second) == ["1,0,1"]  # the other explorer is untouched
            assert page.locator(f"#{first.element_id}-c-value").inner_text() == "2"
            assert page.locator(f"#{first.element_id}-centre-value").inner_text() == "(0.7, 0)"
            assert not errors, errors
        finally:
            browser.close()


def test_live_explorer_redraws_on_every_slider(monkeypatch):
    import ipywidgets
    import matplotlib.pyplot as plt

    from hyro_edu.book import plotting

    calls = []
    draw = plotting.poincare_scene

    def recording_scene(ax, **kwargs):
        calls.append(kwargs)
        return draw(ax, **kwargs)

    monkeypatch.setattr(plotting, "poincare_scene", recording_scene)
    figures_before = len(plt.get_fignums())
    box = widgets.poincare_explorer(c=1.0, center=(0.45, 0.25), radius=1.0)
    assert len(calls) == 1 and isinstance(box.children[2], ipywidgets.Output)
    sliders = {w.description: w for row in box.children[:2] for w in row.children}
    sliders["c"].value = 2.0
    assert math.isclose(calls[-1]["c"], 2.0)
    sliders["distance d"].value = 2.0
    assert calls[-1]["radii"] == (1.0, 2.0, 4.0)
    sliders["centre x"].value = 0.8
    sliders["centre y"].value = 0.8
    assert math.isclose(math.hypot(*calls[-1]["center"]), 0.9)  # pulled back inside the ball
    assert len(calls) == 5
    assert len(plt.get_fignums()) == figures_before  # every redraw closes its figure
