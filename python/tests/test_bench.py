"""bench/run.py's arithmetic: host stamps, figures, medians and ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parents[2] / "bench" / "run.py"
spec = importlib.util.spec_from_file_location("bench_run", RUN_PY)
assert spec and spec.loader
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_run"] = bench
spec.loader.exec_module(bench)

MIB = 1 << 20
FIRST = {"bytes": 512 * MIB, "preserve_s": 0.5, "prepare_s": 0.2, "freeze_s": 0.05,
         "free_before_preserve": 1000 * MIB, "free_after_preserve": 998 * MIB, "ours": 1}
SECOND = {"retrieve_s": 2.0, "first_read_s": 1.0, "finish_s": 0.1, "insmod_s": 0.03,
          "free_before_retrieve": 400 * MIB, "free_after_retrieve": -112 * MIB,
          "free_after_finish": 401 * MIB}


def serial_log(tmp_path: Path, lines: list[tuple[float, str]]) -> Path:
    path = tmp_path / "serial.log"
    path.write_text("".join(f"[{t:8.3f}] {text}\n" for t, text in lines))
    return path


def test_stamps_take_the_init_after_the_reboot(tmp_path: Path) -> None:
    log = serial_log(tmp_path, [(1.0, "LU-GUEST init"), (5.5, "LU-BENCH reboot"),
                                (12.25, "LU-GUEST init"), (14.0, "LU-BENCH held")])
    assert bench.host_stamps(log) == {"reboot": 5.5, "init": 12.25, "held": 14.0}


def test_stamps_missing_a_line(tmp_path: Path) -> None:
    log = serial_log(tmp_path, [(5.5, "LU-BENCH reboot"), (12.0, "LU-GUEST init")])
    with pytest.raises(bench.BenchError, match="no held line"):
        bench.host_stamps(log)


def test_figures() -> None:
    f = bench.figures(FIRST, SECOND, {"reboot": 10.0, "init": 17.0, "held": 19.5})
    assert f["preserve_total_s"] == pytest.approx(0.75)
    assert (f["blackout_s"], f["kexec_to_init_s"], f["init_to_held_s"]) == (9.5, 7.0, 2.5)
    assert f["retrieve_s_per_gib"] == pytest.approx(4.0)
    assert f["meta_before_kexec_per_gib"] == pytest.approx(4.0)  # 2 MiB for 0.5 GiB
    assert f["extra_at_retrieve_per_gib"] == pytest.approx(1024.0)  # a full copy
    assert f["meta_after_kexec_per_gib"] == pytest.approx(2.0)
    assert f["free_after_finish_vs_before_mib"] == pytest.approx(-599.0)


def test_aggregate_medians_and_ratio() -> None:
    variants = [bench.Variant("ours", Path("a"), True, True, ""),
                bench.Variant("mainline", Path("b"), False, True, "liveupdate=on")]
    keys = [k for k, *_ in bench.FIGURES]
    runs = [{"variant": v, "size": 64 * MIB, "files": 1, "figures": dict.fromkeys(keys, x)}
            for v, x in [("ours", 1.0), ("ours", 3.0), ("ours", 2.0),
                         ("mainline", 4.0), ("mainline", 4.0), ("mainline", 1.0)]]
    (point,) = bench.aggregate(runs, variants)
    assert point["variants"]["ours"]["blackout_s"] == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert point["ratio"]["blackout_s"] == pytest.approx(0.5)
    meta = {"date": "d", "guest": "g", "repeats": 3, "clocks": "c",
            "variants": {"ours": {}, "mainline": {}}}
    table = bench.markdown([point], meta)
    assert "| 64 MiB | 1 | 2 / 4 (x0.5) |" in table
