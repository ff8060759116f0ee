#!/usr/bin/env python3
"""Chapter 2's live explorer under the ipywidgets that Colab ships (7.7.1).

``pip install`` of hyro-edu on Colab keeps Colab's bundled ipywidgets 7.7.1 (the package asks for
``ipywidgets>=7.6``), so :func:`hyro_edu.book.widgets.poincare_explorer` must work with 7.x as well
as with the 8.x of the project's own environment.  This script

1. makes a throwaway venv in a temporary folder and ``pip install``s ``ipywidgets==7.7.1`` there
   (with the dependencies pip picks for it);
2. lets that venv see the running interpreter's site-packages *after* its own (a ``.pth`` file), so
   torch, matplotlib and numpy come from the project's environment (no second torch download) while
   ipywidgets and its dependencies come from the throwaway venv;
3. builds the explorer there from this checkout, moves every slider programmatically, and checks that
   each move redrew the figure with the new values and raised nothing.

Exit status 0 when the check passes, 1 when it fails.  Run it with the project's venv:
``.venv/bin/python .ci/check_widgets_colab.py`` (``--ipywidgets VERSION`` checks another release).
"""
from __future__ import annotations

import argparse
import os
import site
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB_IPYWIDGETS = "7.7.1"

# Runs inside the throwaway venv; argv[1] is the ipywidgets version that must be the one imported.
CHECK = textwrap.dedent(
    """
    import contextlib, io, math, sys
    import matplotlib
    matplotlib.use("Agg")
    import ipywidgets

    expected, venv = sys.argv[1], sys.argv[2]
    assert ipywidgets.__version__ == expected, (ipywidgets.__version__, expected)
    assert ipywidgets.__file__.startswith(venv), ("ipywidgets imported from outside the venv", ipywidgets.__file__)

    from hyro_edu.book import plotting, widgets

    calls = []
    draw = plotting.poincare_scene

    def recording_scene(ax, **kwargs):
        calls.append(kwargs)
        return draw(ax, **kwargs)

    plotting.poincare_scene = recording_scene
    # Without a kernel the Output widget passes what it would show to stdout: keep that out of the log.
    with contextlib.redirect_stdout(io.StringIO()):
        box = widgets.poincare_explorer(c=1.0, center=(0.45, 0.25), radius=1.0)
    assert len(calls) == 1, calls
    sliders = {w.description: w for row in box.children[:2] for w in row.children}
    assert set(sliders) == {"c", "distance d", "centre x", "centre y"}, sorted(sliders)
    assert isinstance(box.children[2], ipywidgets.Output)

    with contextlib.redirect_stdout(io.StringIO()):
        sliders["c"].value = 2.0
        assert math.isclose(calls[-1]["c"], 2.0, rel_tol=1e-9), calls[-1]
        sliders["distance d"].value = 2.0
        assert calls[-1]["radii"] == (1.0, 2.0, 4.0), calls[-1]
        sliders["centre x"].value = 0.8
        sliders["centre y"].value = 0.8  # outside the ball: the explorer pulls the centre back to norm 0.9
    cx, cy = calls[-1]["center"]
    assert math.isclose(math.hypot(cx, cy), 0.9, rel_tol=1e-9), calls[-1]
    assert len(calls) == 5, len(calls)
    state = box.get_state()  # what a front end receives
    assert state["children"] and len(box.children[0].children) == 2
    print(f"ipywidgets {ipywidgets.__version__}: explorer built, 4 slider moves redrew it ({len(calls)} draws)")
    """
)


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipywidgets", default=COLAB_IPYWIDGETS, help="the release to check (default: Colab's)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hyro-ipywidgets-") as tmp:
        venv = Path(tmp) / "venv"
        try:
            _run([sys.executable, "-m", "venv", str(venv)])
            python = venv / "bin" / "python"
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  f"ipywidgets=={args.ipywidgets}"])
            purelib = subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
            # Appended after the venv's own site-packages: the venv's ipywidgets wins, torch comes from here.
            ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
            lines = [f"import site; site.addsitedir({p!r})" for p in ours]
            (Path(purelib) / "zz_project_site.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
            env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
            _run([str(python), "-c", CHECK, args.ipywidgets, str(venv)], env=env, cwd=tmp)
        except subprocess.CalledProcessError as exc:
            step = "the check" if "-c" in exc.cmd else " ".join(map(str, exc.cmd))
            print(f"FAILED: chapter 2's explorer under ipywidgets {args.ipywidgets} "
                  f"({step} exited {exc.returncode})", file=sys.stderr)
            return 1
    print(f"ok: chapter 2's explorer works with ipywidgets {args.ipywidgets} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
