"""``cardcube demo``: the one-command tour, on a local folder and synthetic scenes.

Generates the default region, ingests Sentinel-2 and Sentinel-1 into time-first Zarr cubes with the
STAC catalog beside them (Sentinel-2 without its last dates), reads time series and chips for a few
parcels (planted anomalies among them) and writes a plot and a contact sheet, then extracts every parcel
of the region. The last Sentinel-2 dates then arrive: they are ingested, the extraction is updated with
them alone, and the versions they superseded are expired. Last, the anomaly markers run on the
extractions, scored against the planted ground truth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from datetime import timedelta
from pathlib import Path

LATE = 3  # Sentinel-2 dates that arrive after the first extraction


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``cardcube demo`` to the ``cardcube`` parser."""
    p = sub.add_parser("demo", help="generate, ingest and explore the synthetic demo region",
                       description="The one-command tour: synthetic CARD scenes for a ~10x10 km Dutch region, "
                       "ingested into time-first Zarr cubes with a STAC catalog; parcel time series and a season "
                       "contact sheet; the extraction of every parcel; new dates ingested, the extraction updated "
                       "and the old version expired; the anomaly markers scored against the planted truth.")
    p.add_argument("--out", default="demo-data", help="working folder (default ./demo-data)")
    p.add_argument("--tiny", action="store_true", help="a tiny region (seconds instead of minutes)")
    p.add_argument("--seed", type=int, default=42, help="random seed of the synthetic region (default 42)")
    p.add_argument("--fresh", action="store_true", help="delete the working folder first (only one an earlier demo "
                   "made: a folder holding other files is refused)")
    p.set_defaults(func=run)


def _pick_parcels(parcels, truth):
    """A normal grassland and maize parcel, and one planted anomaly of each kind (largest first)."""
    table = parcels.merge(truth, on="parcel_id").sort_values("area_ha", ascending=False)
    normal = table[~table.is_anomaly]
    picks = [normal[normal.crop_code == 265].iloc[0], normal[normal.crop_name.str.contains("ma", case=False)].iloc[0]]
    picks += [grp.iloc[0] for _, grp in table[table.is_anomaly].groupby("anomaly_kind")]
    titles = {}
    for row in picks:
        note = f"ANOMALY {row.anomaly_kind}: actually {row.actual_crop_name}" if row.is_anomaly else "as declared"
        titles[row.parcel_id] = f"{row.parcel_id}  declared {row.crop_name} ({row.area_ha:.1f} ha)  {note}"
    return [row.parcel_id for row in picks], titles, picks[-1]


# the marker meant to find each kind of planted anomaly (cardcube.synth.truth)
MARKER_OF = {"wrong_crop": "crop_mismatch", "ploughed_grassland": "bare_soil", "not_mown": "no_mowing"}


def _score(flags, truth) -> str:
    """How the markers did against the planted anomalies: found per kind by its own marker (and by another one,
    counted apart), and false alarms among the parcels measured (an unmeasured anomaly counts as missed)."""
    table = flags.merge(truth[["parcel_id", "anomaly_kind"]], on="parcel_id")
    unmeasured = table.not_judged.str.startswith("every marker: no statistics")
    planted = table[table.anomaly_kind.notna()]
    found = ", ".join(_found(kind, g) for kind, g in planted.groupby("anomaly_kind"))
    others = table[table.anomaly_kind.isna() & ~unmeasured]
    return (f"  {int(table.flagged.sum()):,} of {len(table):,} parcels flagged: {int(planted.flagged.sum()):,} of the "
            f"{len(planted):,} planted anomalies ({found}), and {int(others.flagged.sum()):,} of the {len(others):,} "
            f"others measured ({others.flagged.mean():.1%}); {int(unmeasured.sum()):,} parcel(s) could not be "
            f"measured (too small or outside the cube: not judged, see flags.csv)")


def _found(kind: str, planted) -> str:
    """``kind 63/64``: the planted anomalies of ``kind`` its own marker flagged; ``(+1 by another marker)``."""
    own = int(planted[MARKER_OF[kind]].sum()) if kind in MARKER_OF else int(planted.flagged.sum())
    other = int(planted.flagged.sum()) - own
    return f"{kind} {own}/{len(planted)}" + (f" (+{other} by another marker)" if other else "")


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def _split_items(items: Path, late: int) -> tuple[Path, Path]:
    """The region's items without the last ``late`` Sentinel-2 dates, and those dates alone (written beside
    ``items``, so their relative hrefs still hold)."""
    from cardcube.spec import S2_L2A
    from cardcube.synth.stac import read_features, write_features

    later = {f["id"] for f in read_features(items, S2_L2A.source_collection)[-late:]}
    features = read_features(items)
    return (write_features([f for f in features if f["id"] not in later], items.parent / "items-first.json"),
            write_features([f for f in features if f["id"] in later], items.parent / "items-later.json"))


def _demo_settings(mark: Path, settings: dict) -> dict | None:
    """The settings an earlier demo recorded in ``mark`` (its ``demo.json``), None if it is none's: a file of that
    name of the user's (not JSON, or other fields than ``settings``') says nothing of the folder it is in, which
    ``--fresh`` would delete."""
    try:
        doc = json.loads(mark.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.keys() == settings.keys() else None


def _claim(out: Path, settings: dict, *, fresh: bool) -> None:
    """Record the demo's settings in ``out`` (emptied first if ``fresh``). Refused: a folder holding anything but
    a demo, which ``--fresh`` would delete and the steps write into; and, unless ``fresh``, one holding another
    demo (another seed or size), whose cube would keep the other region's scenes while the steps read this one's
    parcels."""
    from cardcube.errors import InvalidRequestError
    from cardcube.storage import listed_names

    mark = out / "demo.json"
    if out.exists() and not out.is_dir():
        raise InvalidRequestError(f"--out {out} is a file: give the demo a folder of its own (made if missing)")
    earlier = _demo_settings(mark, settings)
    if out.exists() and earlier is None and (held := sorted(p.name for p in out.iterdir())):
        listed = listed_names(held, most=4)
        mine = " (its demo.json is no demo's)" if mark.exists() else ""
        raise InvalidRequestError(f"{out} holds {listed} but no demo (demo.json){mine}: give --out a new or empty "
                                  "folder, so that nothing of yours is deleted or overwritten")
    if fresh and earlier is not None:
        shutil.rmtree(out)
    elif earlier is not None and earlier != settings:
        raise InvalidRequestError(f"{out} holds the demo of {json.dumps(earlier)}, not {json.dumps(settings)}: "
                                  f"pass --fresh to replace it, or --out another folder")
    out.mkdir(parents=True, exist_ok=True)
    mark.write_text(json.dumps(settings))


def run(args: argparse.Namespace) -> int:
    """``cardcube demo``: synthetic scenes, ingest, catalog, reads, extraction and flags in ``--out``; the exit code."""
    from cardcube.errors import InvalidRequestError

    out = Path(args.out)
    _claim(out, {"seed": args.seed, "tiny": args.tiny}, fresh=args.fresh)
    try:
        return _tour(out, args)
    except InvalidRequestError as exc:  # what an earlier run left there (an extraction an older cardcube made)
        raise InvalidRequestError(f"{exc}\n  ({out} is the demo's own folder: `cardcube demo --fresh` starts it "
                                  "over)") from None


def _tour(out: Path, args: argparse.Namespace) -> int:
    """The demo's seven steps in ``out``."""
    import geopandas as gpd
    import pandas as pd

    from cardcube.query import TIME_FORMAT
    from cardcube.synth import SynthConfig, generate
    from cardcube.synth.crops import GRASSLAND_CODES
    from cardcube.synth.generate import SynthResult
    from cube.chips import chip
    from cube.extract import extract
    from cube.flag_files import flag_files
    from cube.plots import plot_timeseries
    from cube.timeseries import parcel_timeseries
    from cube.verify import verify
    from ingest.expire import expire
    from ingest.job import ingest

    started = time.perf_counter()
    config = SynthConfig.tiny(seed=args.seed) if args.tiny else SynthConfig.demo(seed=args.seed)

    print(f"1/7 synthetic CARD scenes -> {out / 'source'}")
    region = SynthResult.written(out / "source", config)
    if region is None:
        region = generate(out / "source", config)
    else:  # a run again: the same scenes, byte for byte (deterministic for the seed), so not written again
        print("  kept from an earlier run (--fresh writes them again)")
    print(region.summary())

    cube = out / "cube"
    print(f"\n2/7 ingest into time-first Zarr v3 cubes -> {cube} (the last {LATE} S2 dates come in step 6)")
    first, later = _split_items(region.items, LATE)
    for collection in ("s2", "s1"):
        print(ingest(first, cube, collection=collection).summary())

    print("\n3/7 parcel time series, read by chunk (no database)")
    parcels = gpd.read_parquet(region.parcels)
    truth = pd.read_parquet(region.ground_truth)
    ids, titles, anomaly = _pick_parcels(parcels, truth)
    optical = parcel_timeseries(cube, ids, registry=parcels, bands=["B04", "B08", "NDVI"])
    radar = parcel_timeseries(cube, ids, registry=parcels, collection="s1", bands=["VV", "VH"])
    optical.to_csv(out / "timeseries_s2.csv", index=False, date_format=TIME_FORMAT)
    radar.to_csv(out / "timeseries_s1.csv", index=False, date_format=TIME_FORMAT)
    plot_timeseries(optical, out / "timeseries.png", radar=radar, titles=titles)
    print(f"  {len(optical)} S2 rows and {len(radar)} S1 rows for {len(ids)} parcels "
          f"(cube versions {optical.attrs['cube_version']}/{radar.attrs['cube_version']})")
    print(f"  plot -> {out / 'timeseries.png'}")

    print("\n4/7 image chips of a planted anomaly")
    sheet = chip(cube, [anomaly.parcel_id], registry=parcels, size=64)
    sheet_path = out / f"{anomaly.parcel_id}_season.png"
    sheet.contact_sheet().write(sheet_path)
    print(f"  {titles[anomaly.parcel_id]}")
    print(f"  contact sheet of {len(sheet.times)} dates (cloudy ones framed red, no data grey) -> {sheet_path}")

    print("\n5/7 full-territory extraction: every parcel, date and band, in one pass over each cube")
    for collection, folder in (("s2", "extract"), ("s1", "extract-s1")):
        result = extract(region.parcels, cube, out / folder, collection=collection)
        print(f"  {result.summary()}")
    print(f"  Parquet: {out / 'extract' / 'timeseries'}  status of every parcel: {out / 'extract' / 'parcels.parquet'}")

    print(f"\n6/7 new dates arrive: {LATE} more S2 scenes ingested, the extraction updated with them alone, "
          f"superseded versions expired")
    print(ingest(later, cube, collection="s2").summary())
    result = extract(region.parcels, cube, out / "extract", collection="s2", update=True)
    print(f"  update: {result.summary()}")
    before = _size_mb(cube)
    print(f"  {expire(cube, 's2', older_than=timedelta(0)).summary()}")
    print(f"  cube {before:.0f} MB -> {_size_mb(cube):.0f} MB (cardcube expire; here --older-than 0, as nothing else "
          f"reads this cube)")
    print(f"  {verify(cube, 's2', progress=False).summary()}  (cardcube verify: every shard the version reads)")

    print("\n7/7 anomaly markers on the extractions, checked against the planted ground truth")
    with warnings.catch_warnings(record=True) as caught:  # a line each, as cardcube flag says them
        warnings.simplefilter("always", UserWarning)
        flags = flag_files(out / "extract", parcels.set_index("parcel_id").crop_code, s1=out / "extract-s1",
                           grassland=GRASSLAND_CODES)
    for warning in caught:
        print(f"  note: {warning.message}")
    flags.to_csv(out / "flags.csv", index=False, date_format=TIME_FORMAT)  # as cardcube flag writes it
    print(_score(flags, truth))
    print(f"  every parcel with its markers and reasons -> {out / 'flags.csv'}")

    print(f"\nSTAC catalog: {cube / 'catalog.json'}  (browse it: cardcube catalog serve --cube {cube})")
    print(f"REST service: cardcube serve --cube {cube} --parcels {region.parcels}  (API docs at /docs)")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
