"""Peak memory of ``cardcube flag`` (the anomaly markers on a territory's extractions) as the territory grows.

Run: ``python -m benchmarks.flag_memory --region DIR [--region DIR ...] [--batch-sizes 7,500] [--before DIR]
[--out DIR]``. Each region is a folder as ``cardcube demo`` leaves it (or the scale soak: ``cardcube synth``, then
``ingest`` and ``extract`` of both collections): ``source/parcels.parquet`` with the declarations, ``extract/`` and
``extract-s1/``. For each region and batch size, ``cardcube flag --timeseries extract --s1 extract-s1`` runs in a
fresh process, once, and its peak RSS is read from the kernel (its ``VmHWM`` as it exits: ``wait4``'s counts the
RSS of this process too, which the child's was at its start); so is that of a process that only imports what the
command imports, the floor every run stands on. ``--before DIR`` also runs the cardcube of another
checkout (``PYTHONPATH=DIR``, without ``--batch-size``), for the figures before a change side by side.
Timings are secondary: one run each, on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.extraction import progress, save_report
from benchmarks.options import check_out

FLAG = "import sys; from cardcube.cli import main; sys.exit(main(sys.argv[1:]))"
IMPORTS = "import cardcube.cli, cube.cli, cube.flag_files, cube.parcels, geopandas, pyarrow.parquet"
PEAK = "peak RSS kB:"  # the line a measured process writes last: its own peak (VmHWM), as it exits
# wait4's ru_maxrss holds the RSS of the process that started the child (the child was a copy of it until exec):
# a driver of 600 MB made `python -c pass` 611 MB. The child's VmHWM is its own.
SAYS_PEAK = ("import atexit; atexit.register(lambda: print('" + PEAK + "', next((line.split()[1] for line in "
             "open('/proc/self/status') if line.startswith('VmHWM:')), ''), flush=True)); ")


HERE = Path(__file__).resolve().parents[1]  # this checkout


def peak_rss(args: list[str], code: Path) -> tuple[float, float, str]:
    """Run ``python -c CODE ...`` (``args``) in a fresh process, importing cardcube from the checkout ``code`` (first
    on its path, and the working folder not on it: ``python -c`` puts it first, and a run from a checkout measured
    that checkout's code whatever else was asked); its peak RSS in MB (its own ``VmHWM``, else the kernel's
    ``ru_maxrss``), its seconds, and its output's line of what it flagged."""
    if args[:1] != ["-c"]:
        raise ValueError(f"{args[:2]}: give python -c CODE and its arguments")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory() as elsewhere:
        child = subprocess.Popen([sys.executable, "-P", "-c", SAYS_PEAK + args[1], *args[2:]], stdout=out,
                                 stderr=subprocess.STDOUT, env=env, cwd=elsewhere)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if child.returncode:
        raise RuntimeError(f"{args[-1]} failed ({child.returncode}):\n{text[-3000:]}")
    lines = [line for line in text.splitlines() if "parcels flagged" in line] or [""]
    own = [line.removeprefix(PEAK).strip() for line in text.splitlines() if line.startswith(PEAK)]
    kb = int(own[-1]) if own and own[-1].isdigit() else usage.ru_maxrss  # no /proc (not Linux): the kernel's
    return kb / 1024, time.perf_counter() - t0, lines[0]


def measure(region: Path, batch_sizes: list[int | None], before: Path | None) -> dict[str, Any]:
    """Peak RSS of the imports alone and of ``cardcube flag`` on ``region``: of the code ``before`` (if given), then of
    this one at each batch size."""
    import pandas as pd

    from cardcube.synth.crops import GRASSLAND_CODES

    parcels = len(pd.read_parquet(region / "source" / "parcels.parquet", columns=["parcel_id"]))
    floor, _, _ = peak_rss(["-c", IMPORTS], HERE)
    runs = []
    for code, size in [*([(before, None)] if before else []), *((HERE, size) for size in batch_sizes)]:
        with tempfile.TemporaryDirectory() as tmp:
            args = ["-c", FLAG, "flag", "--timeseries", str(region / "extract"), "--s1", str(region / "extract-s1"),
                    "--parcels", str(region / "source" / "parcels.parquet"),
                    "--grassland", ",".join(map(str, GRASSLAND_CODES)), "--out", str(Path(tmp) / "flags.parquet")]
            rss, seconds, said = peak_rss([*args, *(["--batch-size", str(size)] if size else [])], code)
        progress(f"  {region.name}, {code}, batch size {size or 'default'}: {rss:.0f} MB, {seconds:.0f} s")
        runs.append({"code": str(code), "before": code != HERE, "batch_size": size, "peak_rss_mb": rss,
                     "seconds": seconds, "said": said})
    return {"region": str(region), "parcels": parcels, "imports_rss_mb": floor, "cores": os.cpu_count(),
            "runs": runs}


def report(results: list[dict[str, Any]]) -> str:
    lines = ["# `cardcube flag` memory as the territory grows", "",
             f"Machine: {results[0]['cores']} cores. `python -m benchmarks.flag_memory` (see its docstring): "
             "`cardcube flag` with Sentinel-1, each run in a fresh process; its peak RSS (the kernel's), and beside "
             "it the peak of a process that only imports what the command imports. One run each: the seconds are "
             "those of a shared machine.", "",
             "| region | parcels | code | batch size | peak RSS MB | imports alone MB | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for run in r["runs"]:
            lines.append(f"| {Path(r['region']).name} | {r['parcels']:,} | {_code(run)} | {_size(run)} | "
                         f"{run['peak_rss_mb']:.0f} | {r['imports_rss_mb']:.0f} | {run['seconds']:.1f} |")
    growth = []
    for a, b in pairwise(results):
        more = b["parcels"] - a["parcels"]
        for ra, rb in zip(a["runs"], b["runs"], strict=False):
            if (ra["code"], ra["batch_size"]) == (rb["code"], rb["batch_size"]) and more > 0:
                up = rb["peak_rss_mb"] - ra["peak_rss_mb"]
                growth.append(f"| {Path(a['region']).name} -> {Path(b['region']).name} | {_code(ra)} | {_size(ra)} | "
                              f"{up:+.0f} | {up * 1024 / more:.1f} |")
    if growth:
        lines += ["", "Growth of the peak from one region to the next, per parcel added:", "",
                  "| regions | code | batch size | peak RSS MB | KB per parcel added |", "|---|---|---|---|---|",
                  *growth]
    return "\n".join(lines) + "\n"


def _code(run: dict[str, Any]) -> str:
    return f"before ({run['code']})" if run["before"] else "this"


def _size(run: dict[str, Any]) -> str:
    return "-" if run["before"] else str(run["batch_size"] or "default")


def parse_batch_sizes(text: str) -> list[int | None]:
    """``"7,500"`` -> [7, 500]; ``"default"`` (None) is the command's own."""
    try:
        sizes = [None if s.strip() == "default" else int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes, comma-separated (e.g. 7,500,default)") from None
    if any(s is not None and s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: each batch size must be at least 1")
    return sizes


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flag_memory", description=__doc__.splitlines()[0])
    p.add_argument("--region", type=Path, action="append", required=True,
                   help="a region folder (source/parcels.parquet, extract/, extract-s1/); give several")
    p.add_argument("--batch-sizes", type=parse_batch_sizes, default=[None],
                   help="batch sizes to run, e.g. 7,500,default (default: the command's own)")
    p.add_argument("--before", type=Path, default=None,
                   help="a checkout of cardcube before a change, run beside (without --batch-size)")
    p.add_argument("--out", type=Path, default=None, help="folder for flag-memory.md and .json")
    args = p.parse_args(argv)
    if args.before is not None and not (args.before / "cube" / "anomalies.py").is_file():
        p.error(f"--before {args.before}: not a checkout of cardcube (no cube/anomalies.py)")
    for region in args.region:
        if not (region / "extract-s1").is_dir() or not (region / "source" / "parcels.parquet").is_file():
            p.error(f"--region {region}: not a region folder (source/parcels.parquet, extract/, extract-s1/)")
    if args.out is not None:
        check_out(p, args.out, names=("flag-memory.md", "flag-memory.json"))
    results = []
    for region in args.region:
        results.append(measure(region, args.batch_sizes, args.before))
        print(json.dumps(results[-1]), flush=True)
    save_report(args.out, "flag-memory", report, results)


if __name__ == "__main__":
    main()
