"""``benchmarks/gpu_check.sh``: the one command that measures everything on a GPU keeps working.

Runs it once at its tiny CPU sizes (``--cpu``; about a minute on a 2-core machine) and
checks that every part wrote its JSON with status ``ok`` and finite, positive measurements, and
that ``summary.json`` lists every part.  Speed targets are never checked here (benchmarks/README.md).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BENCH_PARTS = ["poincare", "cayley", "tproduct", "hyro_step", "hvsa_step", "tree_alignment_step"]
SMOKE_PARTS = ["smoke_hyro", "smoke_hvsa", "smoke_tree_alignment"]
PARTS = BENCH_PARTS + SMOKE_PARTS
#: What each bench part's headline must hold: a positive time or ratio.
HEADLINE_POSITIVE = {
    "poincare": ["worst_ratio"],
    "cayley": ["speedup_forward", "speedup_forward_backward"],
    "tproduct": ["min_ratio_at_n3_64"],
    "hyro_step": ["hyro_seconds", "attention_seconds", "hyro_over_attention"],
    "hvsa_step": ["hvsa_seconds", "focal_seconds", "hvsa_over_focal"],
    "tree_alignment_step": ["full_seconds", "hypv1_seconds", "full_over_hypv1"],
}
SMOKE_STEPS = {"smoke_hyro": 2, "smoke_hvsa": 6, "smoke_tree_alignment": 3}


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _finite_numbers(value) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_numbers(v) for v in value.values())
    return all(_finite_numbers(v) for v in value)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), str(out), "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _read(out: Path, name: str) -> dict:
    path = out / f"{name}.json"
    assert path.is_file(), f"{name}.json missing"
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_summary_lists_every_part_ok(out):
    summary = _read(out, "summary")
    assert list(summary["parts"]) == PARTS
    assert summary["all_ok"] is True and summary["device"] == "cpu"
    assert _positive(summary["total_seconds"]) and summary["date"].startswith("20")
    for name, part in summary["parts"].items():
        assert part["status"] == "ok", name
        assert part["json"] == f"{name}.json" and _positive(part["wall_seconds"])
    assert not (out / "scratch").exists()  # fixture data, caches and runs are removed
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(f"{p}.log" for p in PARTS)


@pytest.mark.parametrize("name", BENCH_PARTS)
def test_each_benchmark_part_wrote_finite_positive_measurements(out, name):
    record = _read(out, name)
    assert record["status"] == "ok" and record["part"] == name and record["device"] == "cpu"
    assert record["results"] and record["targets"] and _finite_numbers(record)
    for key in HEADLINE_POSITIVE[name]:
        assert _positive(record["headline"][key]), (name, key, record["headline"])
    for t in record["targets"]:
        assert {"what", "value", "limit", "met"} <= set(t)
    for row in record["results"]:  # every median time is positive
        times = [v for k, v in row.items() if k in ("seconds", "definition", "fft")
                 or k.endswith(("_forward", "_forward_backward", "_safe", "_raw"))]
        assert times and all(_positive(v) for v in times), (name, row)


@pytest.mark.parametrize("name", SMOKE_PARTS)
def test_each_smoke_part_trained_and_evaluated(out, name):
    record = _read(out, name)
    assert record["status"] == "ok" and record["exit_code"] == 0 and _finite_numbers(record)
    assert record["steps"] == SMOKE_STEPS[name]
    for key in ("wall_seconds", "run_wall_seconds", "train_seconds", "seconds_per_step"):
        assert _positive(record[key]), (name, key)
    assert record["losses_finite"] is True and math.isfinite(record["final_loss"])
    assert record["metrics"] and record["peak_gpu_bytes"] is None  # on a CPU


def test_the_gpu_limits_add_up_to_under_eight_minutes_and_list_runs_without_torch():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCH))
    assert [p.name for p in gpu_check.PARTS] == PARTS
    assert sum(p.gpu_seconds for p in gpu_check.PARTS) < 8 * 60
    listed = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--list"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert all(name in listed for name in PARTS)
