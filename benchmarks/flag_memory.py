"""Peak memory of ``cardcube flag`` (the anomaly markers on a territory's extractions) as the territory grows.

Run: ``python -m benchmarks.flag_memory --region DIR [--region DIR ...] [--batch-sizes 7,500] [--before DIR]
[--out DIR]``. Each region is a folder as ``cardcube demo`` leaves it (or the scale soak: ``cardcube synth``, then
``ingest`` and ``extract`` of both collections): ``source/parcels.parquet`` with the declarations, ``extract/`` and
``extract-s1/``. For each region and batch size, ``cardcube flag --timeseries extract --s1 extract-s1`` runs in a
fresh process, once, and its peak RSS is read from the kernel (``wait4``); so is that of a process that only imports
what the command imports, the floor every run stands on. ``--before DIR`` also runs the cardcube of another
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
from pathlib import Path
from typing import Any

from benchmarks.extraction import progress, save_report
from benchmarks.options import check_out

FLAG = "import sys; from cardcube.cli import main; sys.exit(main(sys.argv[1:]))"
IMPORTS = "import cardcube.cli, cube.cli, cube.flag_files, cube.parcels, geopandas, pyarrow.parquet"


def peak_rss(args: list[str], code: Path | None) -> tuple[float, float, str]:
    """Run ``python args`` in a fresh process (with ``code`` first on its path); its peak RSS in MB, its seconds, and
    its output's last line."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if child.returncode:
        raise RuntimeError(f"{args[-1]} failed ({child.returncode}):\n{text[-3000:]}")
    lines = [line for line in text.splitlines() if "parcels flagged" in line] or [""]
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, lines[0]


def measure(region: Path, batch_sizes: list[int | None], before: Path | None) -> dict[str, Any]:
    """Peak RSS of the imports alone and of ``cardcube flag`` on ``region``: of the code ``before`` (if given), then of
    this one at each batch size."""
    import pandas as pd

    from cardcube.synth.crops import GRASSLAND_CODES

    parcels = len(pd.read_parquet(region / "source" / "parcels.parquet", columns=["parcel_id"]))
    floor, _, _ = peak_rss(["-c", IMPORTS], None)
    this = Path(__file__).resolve().parents[1]
    runs = []
    for code, size in [*([(before, None)] if before else []), *((None, size) for size in batch_sizes)]:
        with tempfile.TemporaryDirectory() as tmp:
            args = ["-c", FLAG, "flag", "--timeseries", str(region / "extract"), "--s1", str(region / "extract-s1"),
                    "--parcels", str(region / "source" / "parcels.parquet"),
                    "--grassland", ",".join(map(str, GRASSLAND_CODES)), "--out", str(Path(tmp) / "flags.parquet")]
            rss, seconds, said = peak_rss([*args, *(["--batch-size", str(size)] if size else [])], code)
        progress(f"  {region.name}, {code or 'this code'}, batch size {size or 'default'}: {rss:.0f} MB, "
                 f"{seconds:.0f} s")
        runs.append({"code": str(code or this), "before": code is not None, "batch_size": size, "peak_rss_mb": rss,
                     "seconds": seconds, "said": said})
    return {"region": str(region), "parcels": parcels, "imports_rss_mb": floor, "cores": os.cpu_count(),
            "runs": runs}


def report(results: list[dict[str, Any]]) -> str:
    lines = ["# `cardcube flag` memory as the territory grows", "",
             f"Machine: {results[0]['cores']} cores. `python -m benchmarks.flag_memory` (see its docstring): "
             "`cardcube flag` with Sentinel-1, each run in a fresh process; its peak RSS (the kernel's), the imports' "
             "alone beside it, and KB per parcel above them. One run each.", "",
             "| region | parcels | code | batch size | peak RSS MB | imports alone MB | KB per parcel above the "
             "imports | seconds |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for run in r["runs"]:
            above = (run["peak_rss_mb"] - r["imports_rss_mb"]) * 1024 / r["parcels"]
            code = f"before ({run['code']})" if run["before"] else "this"
            size = "-" if run["before"] else run["batch_size"] or "default"
            lines.append(f"| {Path(r['region']).name} | {r['parcels']:,} | {code} | {size} | "
                         f"{run['peak_rss_mb']:.0f} | {r['imports_rss_mb']:.0f} | {above:.1f} | {run['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
