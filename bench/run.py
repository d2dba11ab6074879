#!/usr/bin/env python3
"""Benchmark liveupdate.ko against mainline's in-kernel LUO, side by side.

Every run boots a fresh guest (qemu/run.py) with one of the two kernels
and performs one live update with bench/lu_bench: fill N memfds, preserve
them (plus PREPARE and FREEZE on ours), kexec, retrieve, read everything
once, FINISH. Variants, sizes and repeats are interleaved so that drift
of the host hits both kernels alike.

Clocks: phases inside one kernel are timed by the guest (CLOCK_MONOTONIC);
the blackout, which straddles the kexec, is timed on the host from the
serial log, whose lines run.py stamps as they arrive: "LU-BENCH reboot"
(just before reboot(LINUX_REBOOT_CMD_KEXEC)), "LU-GUEST init" (the new
kernel's first userspace line) and "LU-BENCH held" (every fd retrieved).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
GIB = 1 << 30
STAMP_RE = re.compile(r"^\[\s*([0-9.]+)\] (.*)$")
THP_SHMEM = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

# Figures reported per point: key, label, unit.
FIGURES = [
    ("preserve_s", "preserve (PRESERVE_FD)", "s"),
    ("prepare_freeze_s", "PREPARE + FREEZE (ours)", "s"),
    ("preserve_total_s", "preserve, all steps", "s"),
    ("blackout_s", "blackout", "s"),
    ("kexec_to_init_s", "blackout: kexec to init", "s"),
    ("init_to_held_s", "blackout: init to fds held", "s"),
    ("insmod_s", "module load (ours, in retrieve)", "s"),
    ("retrieve_s", "retrieve ioctls", "s"),
    ("retrieve_s_per_gib", "retrieve per GiB", "s/GiB"),
    ("first_read_s_per_gib", "first full read per GiB", "s/GiB"),
    ("finish_s", "FINISH", "s"),
    ("meta_before_kexec_per_gib", "kernel memory per GiB, before kexec", "MiB/GiB"),
    ("extra_at_retrieve_per_gib", "extra memory at retrieve per GiB", "MiB/GiB"),
    ("meta_after_kexec_per_gib", "kernel memory per GiB, after kexec", "MiB/GiB"),
    ("free_after_finish_vs_before_mib", "MemFree after FINISH - before preserve", "MiB"),
]
# The figures of the short table: (key, column heading).
SUMMARY = [
    ("preserve_total_s", "preserve s"),
    ("blackout_s", "blackout s"),
    ("kexec_to_init_s", "kexec→init s"),
    ("init_to_held_s", "init→held s"),
    ("retrieve_s_per_gib", "retrieve s/GiB"),
    ("first_read_s_per_gib", "1st read s/GiB"),
    ("meta_before_kexec_per_gib", "meta before MiB/GiB"),
    ("meta_after_kexec_per_gib", "meta after MiB/GiB"),
]


class BenchError(Exception):
    """A run failed or produced figures that make no sense."""


@dataclass(frozen=True)
class Variant:
    name: str
    kernel: Path
    module: bool  # load liveupdate.ko (ours) or use the kernel's own LUO
    events: bool  # send PREPARE and FREEZE before the kexec
    append: str


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def size_label(size: int) -> str:
    return f"{size // GIB} GiB" if size % GIB == 0 else f"{size >> 20} MiB"


def host_stamps(serial_log: Path) -> dict[str, float]:
    """Host times of the lines that straddle the kexec."""
    stamps: dict[str, float] = {}
    for line in serial_log.read_text(errors="replace").splitlines():
        m = STAMP_RE.match(line)
        if not m:
            continue
        t, text = float(m.group(1)), m.group(2)
        if "LU-BENCH reboot" in text:
            stamps["reboot"] = t
        elif "LU-GUEST init" in text and "reboot" in stamps and "init" not in stamps:
            stamps["init"] = t
        elif "LU-BENCH held" in text:
            stamps["held"] = t
    missing = {"reboot", "init", "held"} - stamps.keys()
    if missing:
        raise BenchError(f"{serial_log}: no {', '.join(sorted(missing))} line")
    return stamps


def figures(first: dict, second: dict, stamps: dict[str, float]) -> dict[str, float]:
    """One run's figures from the two stages' reports and the host's stamps."""
    gib = first["bytes"] / GIB
    mib = 1 << 20
    prepare_freeze = first.get("prepare_s", 0.0) + first.get("freeze_s", 0.0)
    return {
        "preserve_s": first["preserve_s"],
        "prepare_freeze_s": prepare_freeze,
        "preserve_total_s": first["preserve_s"] + prepare_freeze,
        "blackout_s": stamps["held"] - stamps["reboot"],
        "kexec_to_init_s": stamps["init"] - stamps["reboot"],
        "init_to_held_s": stamps["held"] - stamps["init"],
        "insmod_s": second.get("insmod_s", 0.0),
        "retrieve_s": second["retrieve_s"],
        "retrieve_s_per_gib": second["retrieve_s"] / gib,
        "first_read_s_per_gib": second["first_read_s"] / gib,
        "finish_s": second["finish_s"],
        "meta_before_kexec_per_gib":
            (first["free_before_preserve"] - first["free_after_preserve"]) / mib / gib,
        "extra_at_retrieve_per_gib":
            (second["free_before_retrieve"] - second["free_after_retrieve"]) / mib / gib,
        # From before retrieve to after FINISH, with the files held, the
        # kernel gives back what it kept beyond the data: any copy made at
        # retrieve cancels out against the preserved pages it replaces.
        "meta_after_kexec_per_gib":
            (second["free_after_finish"] - second["free_before_retrieve"]) / mib / gib,
        "free_after_finish_vs_before_mib":
            (second["free_after_finish"] - first["free_before_preserve"]) / mib,
    }


def run_once(args: argparse.Namespace, variant: Variant, size: int, files: int,
             seed: int, out: Path) -> dict:
    common = f"--size {size} --files {files} --seed {seed}"
    module = f" --module {args.module}" if variant.module else ""
    events = "" if variant.events else " --no-events"
    plan = out.with_suffix(".plan")
    plan.parent.mkdir(parents=True, exist_ok=True)
    # --thp: the memfds are filled in 2 MiB transparent huge pages.
    thp = f"echo always > {THP_SHMEM} && " if args.thp else ""
    plan.write_text(
        f"{thp}bench/lu_bench preserve {common} --out /run/out/stage1.json{module}{events}\n"
        f"bench/lu_bench retrieve {common} --out /run/out/stage2.json{module}\n")
    cmd = [sys.executable, str(CHECKOUT / "qemu" / "run.py"), str(plan),
           "--kernel", str(variant.kernel), "--python", args.python, "--quiet",
           "--out", str(out), "--mem", args.mem, "--timeout", str(args.timeout),
           # QEMU's own translation buffer, as in the committed results:
           # run.py's smaller one flushes every ~40 s, in both variants' runs.
           "--tb-size", "0"]
    if variant.append:
        cmd += ["--append", variant.append]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{variant.name} {size_label(size)} x{files}: run failed "
                         f"(log in {out}):\n{done.stdout[-3000:]}")
    first = json.loads((out / "stage1.json").read_text())
    second = json.loads((out / "stage2.json").read_text())
    if bool(first["ours"]) != variant.module:
        raise BenchError(f"{variant.name}: /dev/liveupdate in {variant.kernel} is "
                         f"{'ours' if first['ours'] else 'mainline'}'s")
    return {"variant": variant.name, "size": size, "files": files, "seed": seed,
            "stage1": first, "stage2": second,
            "figures": figures(first, second, host_stamps(out / "serial.log"))}


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def aggregate(runs: list[dict], variants: list[Variant]) -> list[dict]:
    points = []
    for size, files in sorted({(r["size"], r["files"]) for r in runs}):
        point: dict = {"size": size, "files": files, "variants": {}, "ratio": {}}
        for v in variants:
            mine = [r["figures"] for r in runs
                    if (r["size"], r["files"], r["variant"]) == (size, files, v.name)]
            if mine:
                point["variants"][v.name] = {k: spread([f[k] for f in mine])
                                             for k, *_ in FIGURES}
        ours, mainline = point["variants"].get("ours"), point["variants"].get("mainline")
        if ours and mainline:
            for key, *_ in FIGURES:
                theirs = mainline[key]["median"]
                point["ratio"][key] = ours[key]["median"] / theirs if theirs else None
        points.append(point)
    return points


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def markdown(points: list[dict], meta: dict) -> str:
    names = list(meta["variants"])
    lines = [
        "# liveupdate.ko vs mainline LUO",
        "",
        f"{meta['date']}, {meta['guest']}; memfds in {meta.get('pages', '4 KiB pages')}; "
        f"{meta['repeats']} repeat(s) per point; "
        "medians, ratio = ours / mainline of the same run.",
        f"Clocks: {meta['clocks']}",
        "",
        "| size | files | " + " | ".join(h for _, h in SUMMARY) + " |",
        "|---|---|" + "---|" * len(SUMMARY),
    ]
    for p in points:
        cells = []
        for key, _ in SUMMARY:
            per = [fmt(p["variants"][n][key]["median"]) for n in names if n in p["variants"]]
            ratio = p["ratio"].get(key)
            cells.append(" / ".join(per) + (f" (x{fmt(ratio)})" if ratio is not None else ""))
        lines.append(f"| {size_label(p['size'])} | {p['files']} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: " + " / ".join(names) + " (ratio).", "",
              "## Every figure: median [min - max]", ""]
    lines += ["| size | files | figure | unit | " + " | ".join(names) + " | ratio |",
              "|---|---|---|---|" + "---|" * (len(names) + 1)]
    for p in points:
        for key, label, unit in FIGURES:
            cells = []
            for n in names:
                s = p["variants"].get(n, {}).get(key)
                cells.append(f"{fmt(s['median'])} [{fmt(s['min'])} - {fmt(s['max'])}]"
                             if s else "-")
            lines.append(f"| {size_label(p['size'])} | {p['files']} | {label} | {unit} | "
                         + " | ".join(cells) + f" | {fmt(p['ratio'].get(key))} |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], names: list[str], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "os^Dv"
    for colour, name in enumerate(names):
        for i, files in enumerate(sorted({p["files"] for p in points})):
            marker = markers[i % len(markers)]
            mine = [p for p in points if p["files"] == files and name in p["variants"]]
            if not mine:
                continue
            xs = [p["size"] / GIB for p in mine]
            stats = [p["variants"][name]["blackout_s"] for p in mine]
            med = [s["median"] for s in stats]
            err = [[m - s["min"] for m, s in zip(med, stats, strict=True)],
                   [s["max"] - m for m, s in zip(med, stats, strict=True)]]
            ax.errorbar(xs, med, yerr=err, marker=marker, capsize=3, color=f"C{colour}",
                        label=f"{name}, {files} memfd{'s' if files > 1 else ''}")
    ax.set_xlabel("preserved GiB")
    ax.set_ylabel("blackout (s): reboot() to every fd held")
    ax.set_title("Live update blackout, TCG guest")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def check(runs: list[dict], variants: list[Variant]) -> None:
    """The smoke test: every figure present and plausible."""
    for r in runs:
        f = r["figures"]
        for key in ("preserve_s", "blackout_s", "kexec_to_init_s", "init_to_held_s",
                    "retrieve_s", "first_read_s_per_gib", "finish_s"):
            if not f[key] > 0:
                raise BenchError(f"{r['variant']}: {key} is {f[key]}")
        if r["variant"] == "ours" and not f["prepare_freeze_s"] > 0:
            raise BenchError("ours: PREPARE and FREEZE were not timed")
        if abs(f["blackout_s"] - f["kexec_to_init_s"] - f["init_to_held_s"]) > 1e-6:
            raise BenchError(f"{r['variant']}: the blackout's parts do not add up")
    if {r["variant"] for r in runs} != {v.name for v in variants}:
        raise BenchError("a variant has no run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ours", type=Path, required=True, help="bzImage for liveupdate.ko")
    parser.add_argument("--mainline", type=Path, required=True, help="bzImage with LUO built in")
    parser.add_argument("--module", default="kernel/liveupdate.ko", help="relative to the checkout")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--sizes", default="64M,1G,4G")
    parser.add_argument("--files", default="1,16,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="ours,mainline",
                        help="ours, mainline, ours-reboot (ours without PREPARE/FREEZE)")
    parser.add_argument("--thp", action="store_true",
                        help="fill the memfds in transparent huge pages (shmem_enabled=always)")
    parser.add_argument("--mem", default="6G")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--runs", type=Path, default=CHECKOUT / "build" / "bench-runs")
    parser.add_argument("--check", action="store_true", help="fail unless every figure is sane")
    args = parser.parse_args()

    known = {
        "ours": Variant("ours", args.ours, True, True, ""),
        "ours-reboot": Variant("ours-reboot", args.ours, True, False, ""),
        "mainline": Variant("mainline", args.mainline, False, True, "liveupdate=on"),
    }
    try:
        variants = [known[n] for n in args.variants.split(",")]
    except KeyError as e:
        parser.error(f"unknown variant {e}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    counts = [int(n) for n in args.files.split(",")]

    runs: list[dict] = []
    total = len(sizes) * len(counts) * args.repeats * len(variants)
    started = time.monotonic()
    try:
        for repeat in range(args.repeats):
            for size in sizes:
                for files in counts:
                    for v in variants:
                        out = args.runs / f"{v.name}-{size >> 20}M-{files}-{repeat}"
                        r = run_once(args, v, size, files, repeat + 1, out)
                        runs.append(r)
                        f = r["figures"]
                        print(f"[bench] {len(runs)}/{total} {v.name:11} {size_label(size):>7} "
                              f"x{files:<3} preserve {f['preserve_total_s']:.3f} s, "
                              f"blackout {f['blackout_s']:.2f} s "
                              f"(kexec→init {f['kexec_to_init_s']:.2f}, "
                              f"init→held {f['init_to_held_s']:.2f}), "
                              f"retrieve {f['retrieve_s']:.3f} s", flush=True)
        if args.check:
            check(runs, variants)
    except BenchError as e:
        print(f"[bench] {e}", file=sys.stderr)
        return 1

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "guest": f"QEMU TCG, {args.mem} RAM, 2 vCPUs, on {platform.node() or 'host'} "
                 f"({platform.machine()})",
        "repeats": args.repeats,
        "pages": "2 MiB transparent huge pages" if args.thp else "4 KiB pages",
        "variants": {v.name: {"kernel": str(v.kernel), "module": v.module,
                              "events": v.events, "append": v.append} for v in variants},
        "clocks": "phases within a kernel: guest CLOCK_MONOTONIC; blackout and its "
                  "split: host clock stamping the serial console lines",
        "wall_s": round(time.monotonic() - started, 1),
    }
    points = aggregate(runs, variants)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "results.json").write_text(
        json.dumps({"meta": meta, "points": points, "runs": runs}, indent=1) + "\n")
    (args.results / "results.md").write_text(markdown(points, meta))
    plotted = plot(points, [v.name for v in variants], args.results / "blackout.png")
    print(f"[bench] {len(runs)} runs in {meta['wall_s']:.0f} s; results in {args.results}"
          + ("" if plotted else " (no plot: matplotlib is missing)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
