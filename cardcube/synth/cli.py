"""``cardcube synth OUT_DIR``: generate a synthetic region (parses, calls :func:`generate`, prints)."""

from __future__ import annotations

import argparse

from cardcube.option_types import day
from cardcube.synth.config import SynthConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate synthetic Sentinel-1/2 CARD scenes, parcels and ground truth",
        description="Write a deterministic synthetic region: parcels (GeoPackage, GeoParquet), ground truth, "
        "weather, Sentinel-2 L2A and Sentinel-1 CARD backscatter COGs on the MGRS tile grids, and a STAC "
        "ItemCollection (items.json).",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing; the scenes an earlier "
                   "run wrote there are replaced)")
    demo, tiny = SynthConfig.demo(), SynthConfig.tiny()  # the defaults the help names
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("--tiny", action="store_true", help="a 2 x 2 km region over May-July (for tests)")
    p.add_argument("--size-km", type=float, metavar="KM", help=f"side of the square region in km (default "
                   f"{demo.size_m[0] / 1000:g}; --tiny: {tiny.size_m[0] / 1000:g})")
    p.add_argument("--straddle", action="store_true", help="place the region across the 31UFU/31UGU edge")
    p.add_argument("--origin", type=float, nargs=2, metavar=("X", "Y"),
                   help="upper-left corner in EPSG:32631 (on the tile's 20 m lattice)")
    p.add_argument("--start", type=day, help=f"first date (YYYY-MM-DD; default {demo.start}, --tiny: "
                   f"{tiny.start}; the season lies within one calendar year)")
    p.add_argument("--end", type=day, help=f"last date (YYYY-MM-DD; default {demo.end}, --tiny: {tiny.end})")
    p.add_argument("--anomaly-fraction", type=float, help="share of parcels with planted anomalies (0.04)")
    p.add_argument("--cloudiness", type=float, help="mean cloud fraction of a Sentinel-2 date (0.35)")
    p.add_argument("--no-s1", action="store_true", help="skip Sentinel-1 scenes")
    p.add_argument("--no-s2", action="store_true", help="skip Sentinel-2 scenes")
    p.add_argument("--workers", type=int, help="threads rendering scenes (2)")
    p.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                   help="no progress bar (--quiet, as for ingest, extract and verify)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    changes: dict = {"seed": args.seed, "straddle": args.straddle}
    if args.size_km is not None:
        changes["size_m"] = (args.size_km * 1000, args.size_km * 1000)
    for name in ("start", "end", "anomaly_fraction", "cloudiness", "workers"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.origin is not None:
        changes["origin"] = tuple(args.origin)
    if args.no_s1:
        changes["s1"] = False
    if args.no_s2:
        changes["s2"] = False
    return SynthConfig.tiny(**changes) if args.tiny else SynthConfig.demo(**changes)


def run(args: argparse.Namespace) -> int:
    from cardcube.synth.generate import generate, schedule  # not when the parser is built (cardcube.synth)

    config = config_from_args(args)
    if args.no_progress:
        result = generate(args.out_dir, config)
    else:
        from tqdm import tqdm

        with tqdm(total=len(schedule(config)), unit="pass", desc="acquisitions", leave=False) as bar:
            def tick(acq) -> None:
                bar.set_postfix_str(f"{acq.platform} {acq.date}", refresh=False)
                bar.update()

            result = generate(args.out_dir, config, progress=tick)
    print(result.summary())
    return 0
