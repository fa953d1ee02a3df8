"""The report of a run: ``report.md`` (headline, tables, method), PNG plots and the raw JSON.

Everything here is computed from the raw results dict, so a report can be regenerated from its JSON
(``python -m benchmarks --from-json results.json``) and the numbers in the text are the numbers the run
printed. Ratios are against the COG + rasterio baseline of the same pattern and tier in the same run.
"""

from __future__ import annotations

import io
import json
import math
import shlex
from pathlib import Path
from typing import Any

from benchmarks.config import SIZES, BenchConfig
from benchmarks.layouts import BASELINE
from benchmarks.options import write_whole

HEADLINE_TIER = "s3-20ms"
COMPACTING = 3.0  # an append writing more than this many times its new bytes compacted the hot buffer
FIGURES = {"latency": "latency.png", "requests": "requests.png", "sweep": "sweep.png"}


# A season of one-date appends, measured by another run (``python -m benchmarks.ingest_throughput``), not by this
# benchmark: the report names it as such, with the committed JSON its figure comes from.
SEASON_APPENDS = {"json": "benchmarks/results/ingest-s2-4km.json", "size_km": 4.0, "scenes": 49,
                  "write_amplification": 1.95}


# --- lookups ---------------------------------------------------------------------------------------------
def _cells(results: dict[str, Any]) -> list[dict[str, Any]]:
    return results["cells"]


def summary(results: dict[str, Any], pattern: str, layout: str, tier: str) -> dict[str, Any] | None:
    for c in _cells(results):
        if c["pattern"] == pattern and c["layout"] == layout and c["tier"] == tier and c["summary"]["n"]:
            return c["summary"]
    return None


def _titles(results: dict[str, Any]) -> dict[str, str]:
    return {lay["key"]: lay["title"] for lay in results["layouts"]}


def _read_patterns(results: dict[str, Any]) -> list[dict[str, Any]]:
    present = {c["pattern"] for c in _cells(results)}
    return [p for p in results["patterns"] if p["kind"] == "read" and p["key"] in present]


def _tiers(results: dict[str, Any]) -> list[str]:
    return [t["name"] for t in results["tiers"]]


def _headline_tier(results: dict[str, Any]) -> str:
    tiers = _tiers(results)
    return HEADLINE_TIER if HEADLINE_TIER in tiers else tiers[-1]


# --- formatting ------------------------------------------------------------------------------------------
def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    v = seconds * 1e3
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.0f}x" if x >= 100 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.2f}"


def _mb1(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def command(cfg: dict[str, Any]) -> str:
    """The ``python -m benchmarks`` command that runs ``cfg`` (a run's ``config``): every option that differs
    from the command line's defaults, so the report says how to reproduce it (:func:`api_settings` lists
    those only :class:`BenchConfig` takes)."""
    default = BenchConfig().to_dict()
    size = cfg["size"] if cfg["size"] in SIZES and SIZES[cfg["size"]] == cfg["size_km"] else f"{cfg['size_km']:g}"
    args = ["--size", size, "--reps", str(cfg["reps"])]
    options = {  # flag: (value, command-line default, how the flag spells it)
        "--min-reps": (cfg["min_reps"], min(2, cfg["reps"]), str),
        "--budget": (cfg["cell_budget_s"], default["cell_budget_s"], lambda v: f"{v:g}"),
        "--threads": (cfg["threads"], default["threads"], str),
        "--latency": (list(cfg["latencies_ms"]), list(default["latencies_ms"]),
                      lambda v: ",".join(f"{x:g}" for x in v)),
        "--bandwidth": (cfg["bandwidth_mbps"], default["bandwidth_mbps"], lambda v: f"{v or 0:g}"),
        "--patterns": (cfg["patterns"], None, ",".join),
        "--bands": (list(cfg["bands"]), list(default["bands"]), ",".join),
        "--sweep": (list(cfg["sweep"]), list(default["sweep"]), ";".join),
        "--ingest-tiers": (list(cfg["ingest_tiers"]), list(default["ingest_tiers"]), ",".join),
        "--append-tiers": (list(cfg["append_tiers"]), list(default["append_tiers"]), ",".join),
        "--sweep-tiers": (list(cfg["sweep_tiers"]), list(default["sweep_tiers"]), ",".join),
    }
    for flag, (value, standard, spell) in options.items():
        if value != standard:
            args += [flag, spell(value)]
    return "python -m benchmarks " + " ".join(shlex.quote(a) for a in args)


def api_settings(cfg: dict[str, Any]) -> str:
    """`` (through the API: appends=1)``: the settings of ``cfg`` the command line cannot give, if any differ."""
    default = BenchConfig().to_dict()
    api = [f"{k}={cfg[k]}" for k in ("appends", "sweep_reps", "seed") if k in cfg and cfg[k] != default[k]]
    return f" (through the API: {', '.join(api)})" if api else ""


# --- headline --------------------------------------------------------------------------------------------
def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks to confirm or refute: parcel season speed-up and requests per band/shard."""
    tier = _headline_tier(results)
    out: dict[str, Any] = {"tier": tier, "parcels": {}}
    for p in ("parcel-small", "parcel-large"):
        tf, base, odc = (summary(results, p, lay, tier) for lay in ("tf-sharded", BASELINE, "cog-odc"))
        local = summary(results, p, "tf-sharded", "folder")
        if not (tf and base):
            continue
        touched = local.get("objects_read") if local else None
        requests = tf["requests"]
        nbands = len(results["workload"]["stored_bands"])
        out["parcels"][p] = {
            "tf_s": tf["median_s"], "cog_s": base["median_s"], "odc_s": odc["median_s"] if odc else None,
            "speedup_vs_cog": base["median_s"] / tf["median_s"],
            "speedup_vs_odc": odc["median_s"] / tf["median_s"] if odc else None,
            "requests": requests, "GET": tf["GET"], "HEAD": tf["HEAD"], "LIST": tf["LIST"],
            "PUT": tf.get("PUT", 0), "other": tf.get("other", 0),
            "cog_requests": base["requests"],
            "bands": nbands, "shards_touched": touched,
            "data_gets": local.get("data_gets") if local else None,
            "requests_per_band": requests / nbands,
            "requests_per_shard": requests / touched if touched else None,
            "data_gets_per_shard": local["data_gets"] / touched if touched and local.get("data_gets") else None,
            "ledger_gets": local.get("ledger_gets") if local else None,
            "array_meta_gets": local.get("array_meta_gets") if local else None,
        }
    parcels = out["parcels"].values()
    out["speedup_confirmed"] = bool(parcels) and all(v["speedup_vs_cog"] >= 20 for v in parcels)
    out["requests_confirmed"] = bool(parcels) and all(
        (v["requests_per_shard"] or math.inf) <= 1 or v["requests_per_band"] <= 1 for v in parcels)
    return out


def _headline_md(results: dict[str, Any]) -> list[str]:
    h = headline(results)
    tier = next(t["description"] for t in results["tiers"] if t["name"] == h["tier"])
    w = results["workload"]
    if not h["parcels"]:  # `--patterns` without a parcel season: the expected headlines were not measured
        return ["## Headline", "", f"No parcel season was measured on {tier} in this run (`--patterns`), so the "
                f"expected headlines (\"at least 20x faster than from COGs\", \"at most one request per band (or per "
                f"shard) touched\") are neither confirmed nor refuted.", "", *_findings(results)]
    lines = ["## Headline", "", f"A parcel's full season ({w['scenes']} dates; statistics of "
             f"{', '.join(w['bands'])}, SCL-masked, so {', '.join(w['stored_bands'])} are read) on **{tier}**: "
             f"time-first sharded Zarr through `parcel_timeseries` against the per-scene COGs:", ""]
    for key, v in h["parcels"].items():
        label = "small parcel" if key == "parcel-small" else "large parcel"
        odc = f", {ratio(v['speedup_vs_odc'])} against odc-stac ({ms(v['odc_s'])} ms)" if v["odc_s"] else ""
        lines.append(f"- **{label}: {ratio(v['speedup_vs_cog'])} faster** than COG + rasterio "
                     f"({ms(v['tf_s'])} ms against {ms(v['cog_s'])} ms){odc}; "
                     f"{_num(v['requests'])} requests ({_kinds(v)}) against {_num(v['cog_requests'])} for the "
                     f"COGs.")
        if v["shards_touched"]:
            lines.append(f"  - {v['bands']} bands read, {_num(v['shards_touched'])} band-shards touched (cold time "
                         f"blocks and hot-buffer dates, from the store's key log): **{v['requests_per_shard']:.2f} "
                         f"requests per band-shard touched**, {v['requests_per_band']:.1f} per band. Of these, "
                         f"{_per_shard(v['data_gets_per_shard'], '.1f', ' per shard', 'the shard index')}; "
                         f"the rest is metadata: {_metadata(v)}.")
    speed = "confirmed" if h["speedup_confirmed"] else "refuted"
    reqs = "confirmed" if h["requests_confirmed"] else "refuted"
    lines += ["", f"Expected headline: \"at least 20x faster than from COGs\" - **{speed}** at this size; "
              f"\"at most one request per band (or per shard) touched\" - **{reqs}**.", ""]
    why = next((r for r in anatomy(results) if r["pattern"] == "parcel-small"), None)
    if why:
        gets = _per_shard(why["data_gets"] / why["objects"] if why["objects"] else None, "g", "", "its index")
        lines += [f"Why (see *Where the time-first sharded reads spend their requests*): of the "
                  f"{_num(why['requests'])} requests of a small parcel's season, {_num(why['metadata'])} are "
                  f"metadata, and the time grew by about {why['serial_trips']:.0f} round trips of the added latency "
                  f"over plain S3: that many requests waited for the one before (the ledger's listing, its "
                  f"record and the arrays' metadata come before any data). Each shard touched costs "
                  f"{gets}.", ""]
    return lines + _findings(results)


def _per_shard(gets: float | None, spec: str, unit: str, index: str) -> str:
    """``2 data GETs (its index, then the chunk)``: what the key log says a shard touched costs (the reason
    only when it is the index and one byte range)."""
    if gets is None:
        return "an unknown number of data GETs (no key log)"
    why = f" ({index}, then the chunk)" if gets == 2 else ""
    return f"{gets:{spec}} data GETs{unit}{why}"


def _chip_metadata(results: dict[str, Any]) -> str:
    rows = {r["pattern"]: r for r in anatomy(results)}
    if "chip-1" not in rows or "parcel-small" not in rows:
        return "a fixed metadata cost"
    return (f"{_num(rows['chip-1']['metadata'])} metadata requests (a season: "
            f"{_num(rows['parcel-small']['metadata'])})")


# the proxy's OTHER: a request on the S3 service itself, no S3 operation (cardcube.testing.s3proxy.classify)
PROBE = "the check that the S3 endpoint answers"
PROBE_HOW = "`open_store`'s check that the S3 endpoint answers (a `HEAD /` on the service, not on the bucket)"


def _kinds(v: dict[str, Any]) -> str:
    """``31 GET, 0 HEAD, 1 LIST``: every request of a headline read by kind, so that they add up to its count
    (a PUT or another request only when there was one)."""
    kinds = [f"{_num(v['GET'])} GET", f"{_num(v['HEAD'])} HEAD", f"{_num(v['LIST'])} LIST"]
    kinds += [f"{_num(v['PUT'])} PUT"] if v.get("PUT") else []
    kinds += [f"{_num(v['other'])} other: {PROBE}"] if v.get("other") else []
    return ", ".join(kinds)


def _metadata(v: dict[str, Any]) -> str:
    """What a read's metadata requests were, from the store's key log (results of runs that kept it), and the
    requests on S3 the folder's key log cannot show (s3fs's HEADs, the check that the endpoint answers)."""
    probe = [_probe(v)] if v.get("other") else []
    if v.get("ledger_gets") is None:
        return "the ledger's listing and record, and the arrays' `zarr.json`" + "".join(f"; and {x}" for x in probe)
    s3 = [f"{_num(v['HEAD'])} HEADs s3fs sent before whole-object GETs"] if v["HEAD"] else []
    s3 += probe
    return (f"{_num(v['LIST'])} listing of the ledger's versions, {_num(v['ledger_gets'])} read of its record and "
            f"{_num(v['array_meta_gets'])} arrays' `zarr.json` (cold and hot parts holding the dates asked for)"
            + "".join(f", and {x}" for x in s3))


def _probe(v: dict[str, Any]) -> str:
    return f"{_num(v['other'])} other request{'s' if v['other'] != 1 else ''}, {PROBE_HOW}"


def _season_appends() -> str:
    a = SEASON_APPENDS
    return (f"Not measured in this run: over a whole season of one-date appends ({a['scenes']} dates of a "
            f"{a['size_km']:g} km region), another run, of `python -m benchmarks.ingest_throughput`, measured "
            f"{a['write_amplification']:.2f}x cumulative (its figures: `{a['json']}`).")


def _findings(results: dict[str, Any]) -> list[str]:
    """A few other figures a reader looks for first, straight from the cells."""
    tier = _headline_tier(results)
    out = []
    tf, base = summary(results, "chip-1", "tf-sharded", tier), summary(results, "chip-1", BASELINE, tier)
    if tf and base:
        out.append(f"- A 128 px chip at 1 date on {tier}: {ms(tf['median_s'])} ms from time-first sharded Zarr "
                   f"against {ms(base['median_s'])} ms from the COGs ({ratio(base['median_s'] / tf['median_s'])}): "
                   f"the cube reads whole 16-date chunks ({mb(tf['bytes_read'])} MB against "
                   f"{mb(base['bytes_read'])} MB) and pays {_chip_metadata(results)}.")
    ex = {lay: summary(results, "extraction", lay, tier) for lay in ("tf-sharded", "tf-unsharded", "space-first")}
    if all(ex.values()):
        out.append(f"- Full-territory extraction on {tier}: {ms(ex['tf-sharded']['median_s'])} ms time-first "
                   f"sharded, {ms(ex['tf-unsharded']['median_s'])} ms unsharded, "
                   f"{ms(ex['space-first']['median_s'])} ms space-first ({_num(ex['tf-sharded']['requests'])}, "
                   f"{_num(ex['tf-unsharded']['requests'])} and {_num(ex['space-first']['requests'])} requests).")
    for c in _cells(results):
        if c["pattern"] == "append" and c["tier"] != "folder" and len(c["reps"]) > 1:
            # the compacting append rewrites a time block: many times the bytes of its own date
            reps = sorted(c["reps"], key=lambda r: r["result"].get("write_amplification") or 0)
            lo, hi = reps[0], reps[-1]
            if (hi["result"].get("write_amplification") or 0) > COMPACTING:
                out.append(f"- A one-date append on {c['tier']}: {lo['seconds']:.1f} s and "
                           f"{_num(lo['counts']['requests'])} requests; the append that compacts the hot buffer "
                           f"into a time block: {hi['seconds']:.1f} s and {_num(hi['counts']['requests'])} requests.")
            else:
                secs = sorted(r["seconds"] for r in c["reps"])
                out.append(f"- One-date appends on {c['tier']}: {secs[0]:.1f} to {secs[-1]:.1f} s (none compacted "
                           f"the hot buffer).")
    return (["Other figures:", "", *out, ""]) if out else []


# --- tables ----------------------------------------------------------------------------------------------
def overview_table(results: dict[str, Any], tier: str) -> str:
    """Median latency (ms) per pattern x layout on ``tier``, with the speed-up against the COG baseline."""
    titles = _titles(results)
    lays = [lay["key"] for lay in results["layouts"]]
    rows = []
    for p in _read_patterns(results):
        base = summary(results, p["key"], BASELINE, tier)
        row = [p["title"]]
        for lay in lays:
            s = summary(results, p["key"], lay, tier)
            if not s:
                row.append("-")
                continue
            sp = f" ({ratio(base['median_s'] / s['median_s'])})" if base and lay != BASELINE else ""
            row.append(ms(s["median_s"]) + sp)
        rows.append(row)
    return _table(["pattern", *(titles[k] for k in lays)], rows)


def detail_table(results: dict[str, Any], tier: str) -> str:
    titles = _titles(results)
    rows = []
    for p in _read_patterns(results):
        base = summary(results, p["key"], BASELINE, tier)
        for lay in (lay["key"] for lay in results["layouts"]):
            s = summary(results, p["key"], lay, tier)
            if not s:
                continue
            amp = s["read_amplification"]
            rows.append([p["key"], titles[lay], str(s["n"]), ms(s["median_s"]), ms(s["p95_s"]), _num(s["GET"]),
                         _num(s["HEAD"]), _num(s["LIST"]), mb(s["bytes_read"]),
                         "-" if amp is None else f"{amp:.2f}", _num(s["peak_mb"]),
                         ratio(base["median_s"] / s["median_s"]) if base else "-",
                         ratio(s["requests"] / base["requests"])
                         if base and base["requests"] and base["counted_by"] == s["counted_by"] else "-",
                         s["counted_by"]])
    return _table(["pattern", "layout", "n", "median ms", "p95 ms", "GET", "HEAD", "LIST", "MB read",
                   "read amp.", "peak MB", "speed-up vs COG", "requests vs COG", "counted by"], rows)


def write_table(results: dict[str, Any]) -> str:
    """The ingest and append cells; an append cell's repetitions are different appends (one may compact the hot
    buffer), so runs that say so (``method.append_rows``) get a row each: their median is no append's time."""
    each_append = bool(results.get("method", {}).get("append_rows"))
    rows = []
    for c in _cells(results):
        if c["pattern"] not in ("ingest", "append") or not c["summary"]["n"]:
            continue
        if each_append and c["pattern"] == "append":
            rows += _append_rows(c)
            continue
        s = c["summary"]
        rows.append([c["pattern"], c["tier"], str(s["n"]), ms(s["median_s"]), ms(s["p95_s"]), _num(s["PUT"]),
                     _num(s["GET"]), _num(s["HEAD"]), _num(s["LIST"]), mb(s["bytes_written"]),
                     f"{s.get('write_amplification', float('nan')):.2f}",
                     f"{s.get('write_amplification_max', float('nan')):.2f}", _num(s["peak_mb"])])
    return _table(["pattern", "tier", "n", "ms" if each_append else "median ms", "p95 ms", "PUT", "GET", "HEAD",
                   "LIST", "MB written", "write amp. (cumulative)",
                   f"write amp. ({'its own' if each_append else 'worst rep'})", "peak MB"], rows)


def _append_rows(cell: dict[str, Any]) -> list[list[str]]:
    """An append cell's repetitions, a row each, in order (the compacting one named), the cumulative write
    amplification up to it beside its own."""
    rows = []
    written = new = 0
    for i, r in enumerate(cell["reps"]):
        res, counts = r["result"], r["counts"]
        written, new = written + res["bytes_written_store"], new + res["bytes_new_data"]
        own = res["write_amplification"]
        name = f"append {i + 1} of {len(cell['reps'])}" + (" (compacts)" if own > COMPACTING else "")
        rows.append([name, cell["tier"], "1", ms(r["seconds"]), "-", _num(counts["PUT"]), _num(counts["GET"]),
                     _num(counts["HEAD"]), _num(counts["LIST"]), mb(counts["bytes_written"]),
                     f"{written / new:.2f}" if new else "-", f"{own:.2f}", _num(r["peak_mb"])])
    return rows


def sweep_table(results: dict[str, Any]) -> str:
    sw = results["sweep"]
    rec = sw["recommendation"]
    header = ["chunks (10 m px)", "objects", "ingest write amp.", "ingest s"]
    for p in sw["patterns"]:
        header += [f"{p} {t} ms" for t in sw["tiers"]]
    header += [f"{rec['tier']} requests ({', '.join(sw['patterns'])})", f"MB read ({', '.join(sw['patterns'])})",
               "score"]
    rows = []
    for s in sw["shapes"]:
        row = [s["label"] + (" (default)" if s["default"] else ""), _num(s["objects"]),
               "-" if s["write_amplification"] is None else f"{s['write_amplification']:.2f}",
               "-" if s["ingest_s"] is None else f"{s['ingest_s']:.1f}"]
        by = {(c["pattern"], c["tier"]): c["summary"] for c in s["cells"]}
        for p in sw["patterns"]:
            row += [ms(by.get((p, t), {}).get("median_s")) for t in sw["tiers"]]
        row.append(" / ".join(_num(by.get((p, rec["tier"]), {}).get("requests")) for p in sw["patterns"]))
        row.append(" / ".join(_mb1(by.get((p, rec["tier"]), {}).get("bytes_read")) for p in sw["patterns"]))
        score = rec["scores"].get(s["label"])
        row.append("-" if score is None else f"{score:.2f}")
        rows.append(row)
    return _table(header, rows)


def sweep_md(results: dict[str, Any]) -> list[str]:
    sw = results.get("sweep")
    if not sw:
        return []
    rec = sw["recommendation"]
    verdict = (f"keep the default `{rec['choice']}`" if rec["keeps_default"]
               else f"use `{rec['choice']}` instead of the default")
    if rec["best"] is None:
        outcome = (f"**No recommendation**: no shape has a measured latency on {rec['tier']} (see the errors in "
                   f"`results.json`).")
    else:
        outcome = (f"**Recommendation: {verdict}** (best score {rec['best_score']:.2f} for `{rec['best']}`; a shape "
                   f"must beat the default by more than {rec['margin']:.0%} to replace it).")
    return ["## Chunk-shape sweep (time-first sharded)", "",
            f"Each shape, the default included, is a cube ingested at once from the same scenes (no catalog), "
            f"read with the same patterns side by side "
            f"({', '.join(sw['patterns'])}) on {', '.join(sw['tiers'])}. Score: geometric mean over the patterns "
            f"of the median latency on {rec['tier']}, relative to the default (lower is better).", "",
            sweep_table(results), "", f"![chunk sweep]({FIGURES['sweep']})", "",
            outcome, ""]


def anatomy(results: dict[str, Any], layout: str = "tf-sharded") -> list[dict[str, Any]]:
    """Per read pattern, where a Zarr layout's requests and time go: data GETs (the store's key log on the
    folder, same code path as on S3) against metadata requests, and how many round trips of the added
    latency the wall time grew by (``(t_latency - t_plain) / latency``: the requests that ran one after
    another)."""
    latency = next((t for t in results["tiers"] if t["name"].startswith("s3-")), None)
    if latency is None:
        return []
    ms_per_trip = float(latency["name"].removeprefix("s3-").removesuffix("ms"))
    out = []
    for p in _read_patterns(results):
        local, plain, slow = (summary(results, p["key"], layout, t) for t in ("folder", "s3", latency["name"]))
        if not (local and plain and slow and "data_gets" in local):
            continue
        out.append({"pattern": p["key"], "requests": slow["requests"], "data_gets": local["data_gets"],
                    "objects": local["objects_read"], "metadata": slow["requests"] - local["data_gets"],
                    "other": slow.get("other", 0),
                    "plain_s": plain["median_s"], "latency_s": slow["median_s"], "tier": latency["name"],
                    "serial_trips": (slow["median_s"] - plain["median_s"]) * 1e3 / ms_per_trip})
    return out


def _anatomy_md(results: dict[str, Any]) -> list[str]:
    rows = anatomy(results)
    if not rows:
        return []
    tier = rows[0]["tier"]
    probe = f"; and {PROBE}, a `HEAD /` on the service" if any(r["other"] for r in rows) else ""
    return ["### Where the time-first sharded reads spend their requests", "",
            f"Data GETs and objects touched come from the store's key log (folder; the S3 reads run the same "
            f"code); metadata = the other requests on S3 (ledger listing and reads, array `zarr.json` and the "
            f"HEADs s3fs sends before whole-object GETs{probe}). *Serial round trips* = (median on "
            f"{tier} - median on plain S3) / added latency: how many of the requests waited one after another.", "",
            _table(["pattern", f"requests ({tier})", "data GETs", "objects touched", "metadata requests",
                    "plain S3 ms", f"{tier} ms", "serial round trips"],
                   [[r["pattern"], _num(r["requests"]), _num(r["data_gets"]), _num(r["objects"]),
                     _num(r["metadata"]), ms(r["plain_s"]), ms(r["latency_s"]), f"{r['serial_trips']:.0f}"]
                    for r in rows]), ""]


def _checks_md(results: dict[str, Any]) -> list[str]:
    rows = [[k, str(v["cells"]), f"{v['max_relative_difference']:.1e}", "yes" if v["agree"] else "**no**"]
            for k, v in results["checks"].items()]
    return ["### Same answers", "", "Every read cell's answer (sum of the statistics' means and pixel counts, "
            "or the chip's pixel sum) against the first cell of its pattern:", "",
            _table(["pattern", "cells", "max relative difference", "agree"], rows), ""]


def render(results: dict[str, Any]) -> str:
    """The whole report as markdown."""
    cfg, reg, w, env = results["config"], results["region"], results["workload"], results["environment"]
    tiers = results["tiers"]
    lines = [
        f"# cardcube access-pattern benchmarks, {cfg['date']}", "",
        f"Region: {reg['size_km']:g} x {reg['size_km']:g} km synthetic polder in {', '.join(reg['tiles'])}, "
        f"{reg['s2_scenes']} Sentinel-2 scenes (11 bands each), {reg['parcels']} parcels; small parcel "
        f"{w['small_parcel']['ha']} ha, large parcel {w['large_parcel']['ha']} ha. "
        f"Run: `{command(cfg)}`{api_settings(cfg)} on {env['cpus']} CPUs "
        f"({env['system']} {env['machine']}, Python {env['python']}, GDAL {env['gdal']}), "
        f"{results['elapsed_s'] / 60:.1f} min. Every reader gets {cfg['threads']} I/O threads."
        + (" **One repetition per cell: every time is a single cold pass, not a median; expect noise.**"
           if cfg["reps"] == 1 else ""), "",
    ]
    lines += _headline_md(results)
    lines += ["## Latency by pattern and layout", "",
              f"![latency]({FIGURES['latency']})", "", f"![requests]({FIGURES['requests']})", ""]
    for t in tiers:
        lines += [f"### {t['description']} (`{t['name']}`): median ms (speed-up against COG + rasterio)", "",
                  overview_table(results, t["name"]), ""]
    lines += _anatomy_md(results)
    lines += _checks_md(results)
    lines += ["## All figures per cell", "",
              "n = cold repetitions; requests are the server's (proxy) or the store's own counts; on the folder "
              "tier the COG readers' counts are the kernel's read syscalls and bytes (`counted by: os`). "
              "Read amplification = bytes read / raw bytes of the pixels asked for (compressed reads can be "
              "below 1). Peak MB = rise of the process's peak RSS during the repetition.", ""]
    for t in tiers:
        lines += [f"### {t['description']}", "", detail_table(results, t["name"]), ""]
    if any(c["pattern"] in ("ingest", "append") for c in _cells(results)):
        lines += ["## Ingest and appends (time-first sharded, `ingest()`)", "",
                  f"Initial ingest of all but the last {w['appends']} dates into a fresh cube per repetition, "
                  f"then one-date appends of those dates, in order (the hot buffer compacts into a time block "
                  f"when it fills). An append tier without its own initial ingest appends to a copy of the "
                  f"folder's freshly ingested cube. Sources are local COGs in every tier. Write amplification = "
                  f"bytes written to the store / compressed bytes of the new dates (ingest's own counting); "
                  f"PUT and MB written are the proxy's (S3) or the store's (folder) counts. With only "
                  f"{w['appends']} appends, one of which compacts, the cumulative figure is dominated by the "
                  f"compaction. {_season_appends()}", "",
                  write_table(results), ""]
    lines += sweep_md(results)
    skipped = [p for p in results["patterns"] if p.get("skipped") or p.get("note")]
    lines += ["## Method and caveats", "", *_method(results), ""]
    if skipped:
        lines += ["Patterns notes:", ""] + [f"- `{p['key']}`: {p.get('skipped') or ''} {p.get('note') or ''}".rstrip()
                                           for p in skipped] + [""]
    lines += ["Raw results: `results.json` (this folder). Layout sizes: " + "; ".join(
        f"{lay['title']}: {lay['objects']} objects, {lay['bytes'] / 1e6:.1f} MB" for lay in results["layouts"]) + "."]
    return "\n".join(lines) + "\n"


def _method(results: dict[str, Any]) -> list[str]:
    cfg, cpus = results["config"], results["environment"]["cpus"]
    cap = (f"a {cfg['bandwidth_mbps']} MB/s cap per response" if cfg["bandwidth_mbps"]
           else "no cap on bandwidth (`--bandwidth 0`)")
    return [
        "- Same pixels everywhere: the time-first unsharded and space-first layouts are copies of the ingested cube "
        "rewritten with zarr-python (same values, compressor and attributes; other chunks, no shards) and are read "
        "through the same cardcube API; the COG readers compute the same statistics through `cube.pixels."
        "ParcelPixels` (see *Same answers*).",
        f"- Cold reads: a new s3fs filesystem per repetition{_s3_clients(results)}, GDAL with `VSI_CACHE=FALSE` and "
        f"`CPL_VSIL_CURL_NON_CACHED` on the bucket, `GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`, "
        f"`GDAL_HTTP_MERGE_CONSECUTIVE_RANGES=YES`; on the folder the layout's files are evicted from the page cache "
        f"(`posix_fadvise(DONTNEED)`) before each repetition. Layouts are measured side by side (repetition 1 of "
        f"every layout, then repetition 2, ...); a cell stops after {cfg['min_reps']} repetitions once it has used "
        f"{cfg['cell_budget_s']:g} s (so slow cells have fewer).",
        _folder_zarr(results),
        f"- S3 is moto's server in a child process on 127.0.0.1, reached through a loopback proxy that counts every "
        f"request and adds the tier's latency per request and {cap}. moto "
        f"and the proxy share the {cpus} CPUs with the readers, so request-heavy cells also pay server CPU, as they "
        f"would pay per-request cost on a real store.",
        "- Peak memory: rise of `VmHWM` (reset through `/proc/self/clear_refs` before each repetition) above the "
        "resident set at its start, with glibc's mmap threshold fixed at 128 KiB and `malloc_trim` before each "
        "repetition. The S3 proxy runs in the same process (its buffers are small).",
        f"- The synthetic COGs cover the region only ({results['region']['size_km'] * 100:.0f} px at 10 m, 512 px "
        f"blocks, DEFLATE), so a parcel's window is read from a small file: a real Sentinel-2 COG is a 10980 px "
        f"tile of 1024 px blocks, where the same read fetches a whole 1024 px block, so the COG baseline moves "
        f"fewer bytes here than it would. The cube's arrays span the whole MGRS tile, as they would.",
        f"- The season has {results['workload']['scenes']} dates; a COG read costs requests per date, a time-first "
        f"read per 16-date block plus a fixed metadata cost, so the ratio grows with longer series.",
        f"- Timings on a shared {cpus}-core machine are noisy; compare ratios within one table (same run, same "
        f"moment).",
    ]


def _s3_clients(results: dict[str, Any]) -> str:
    """How each S3 repetition's client was made, for runs that say (before 2026-12-07 each made a botocore session of
    its own, within the timed read: 285 ms of CPU in a parcel season's read, which the COG readers never paid)."""
    if results.get("method", {}).get("s3_clients"):
        return (" with a new client, made from the process's one botocore session (its service model read once, as "
                "GDAL loads its drivers once)")
    return ""


def _folder_zarr(results: dict[str, Any]) -> str:
    """How the Zarr layouts were timed and counted on the folder (runs without a ``method`` entry timed the
    counting store itself)."""
    if results.get("method", {}).get("folder_zarr_reads"):
        return ("- On the folder, the Zarr layouts are timed on the plain `LocalStore` a path opens (cardcube reads "
                "it with `pread`, as users get it), and their requests and bytes are counted in a second, untimed "
                "cold pass of the same read through a counting store (a store wrapper takes zarr's slower generic "
                "read path).")
    return ("- On the folder, the Zarr layouts were timed through the counting store that gave their requests. "
            "Since cardcube reads a plain folder with `pread` (2026-12-01), a store wrapper takes zarr's slower "
            "generic read path instead, so these folder times may be pessimistic (later runs time the plain store "
            "and count in an untimed pass).")


# --- plots -----------------------------------------------------------------------------------------------
def _bars(ax: Any, results: dict[str, Any], tier: str, value: str) -> None:
    import numpy as np

    titles = _titles(results)
    patterns = _read_patterns(results)
    lays = [lay["key"] for lay in results["layouts"]]
    width = 0.8 / len(lays)
    x = np.arange(len(patterns))
    for i, lay in enumerate(lays):
        vals, errs = [], []
        for p in patterns:
            s = summary(results, p["key"], lay, tier)
            if value == "latency":
                vals.append(s["median_s"] * 1e3 if s else np.nan)
                errs.append((s["p95_s"] - s["median_s"]) * 1e3 if s else 0)
            else:
                vals.append(s["requests"] if s else np.nan)
                errs.append(0)
        ax.bar(x + (i - (len(lays) - 1) / 2) * width, vals, width, yerr=[np.zeros(len(errs)), errs] if any(errs)
               else None, label=titles[lay], capsize=2)
    ax.set_xticks(x, [p["key"] for p in patterns], rotation=20)
    ax.set_yscale("log")
    ax.set_title(next(t["description"] for t in results["tiers"] if t["name"] == tier), fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)


def plot(results: dict[str, Any], out: Path) -> None:
    """``latency.png`` and ``requests.png`` (pattern x layout per tier, log scale) and ``sweep.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = _tiers(results)
    for value, ylabel in (("latency", "median latency, ms (whisker: p95)"), ("requests", "requests")):
        cols = min(len(tiers), 2)
        rows = math.ceil(len(tiers) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False, sharey=True)
        for ax, tier in zip(axes.flat, tiers, strict=False):
            _bars(ax, results, tier, value)
            ax.set_ylabel(ylabel, fontsize=8)
        for ax in list(axes.flat)[len(tiers):]:
            fig.delaxes(ax)
        axes.flat[0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        _save(fig, out / FIGURES[value])
        plt.close(fig)
    if results.get("sweep"):
        plot_sweep(results, out)


def plot_sweep(results: dict[str, Any], out: Path) -> None:
    """``sweep.png``: each chunk shape's median latency per pattern, and time series against chip access."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sw = results["sweep"]
    tier = sw["recommendation"]["tier"]
    shapes, patterns = sw["shapes"], sw["patterns"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.8 / len(shapes)
    x = np.arange(len(patterns))
    pts = []
    for i, s in enumerate(shapes):
        by = {c["pattern"]: c["summary"] for c in s["cells"] if c["tier"] == tier and c["summary"]["n"]}
        vals = [by[p]["median_s"] * 1e3 if p in by else np.nan for p in patterns]
        left.bar(x + (i - (len(shapes) - 1) / 2) * width, vals, width, label=s["slug"] + (" *" if s["default"] else ""))
        series = [v for p, v in zip(patterns, vals, strict=True) if p.startswith("parcel")]
        chips = [v for p, v in zip(patterns, vals, strict=True) if p.startswith("chip")]
        pts.append((s["slug"], float(np.exp(np.nanmean(np.log(series)))), float(np.exp(np.nanmean(np.log(chips))))))
    left.set_xticks(x, patterns)
    left.set_yscale("log")
    left.set_ylabel(f"median latency on {tier}, ms")
    left.legend(fontsize=7)
    left.grid(axis="y", which="both", alpha=0.3)
    for label, ts, ch in pts:
        right.scatter(ts, ch)
        right.annotate(label, (ts, ch), fontsize=7, xytext=(3, 3), textcoords="offset points")
    right.set_xlabel("parcel season, geometric mean of small and large, ms")
    right.set_ylabel("chip, geometric mean of 1 and 10 dates, ms")
    right.set_title(f"time series vs chip access on {tier} (lower left is better)", fontsize=9)
    right.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out / FIGURES["sweep"])
    plt.close(fig)


def write(results: dict[str, Any], out: Path, *, rendered: bool = False) -> Path:
    """Write ``results.json``, the plots and ``report.md`` into ``out``, each whole or not at all; the report's
    path. ``rendered``: the results were read from ``out/results.json`` (``--from-json``), which is left as it is
    (it was written anew, the only copy of a run's figures, lost to a write cut short)."""
    out.mkdir(parents=True, exist_ok=True)
    if not rendered:
        write_whole(out / "results.json", json.dumps(results, indent=1, default=str))
    plot(results, out)
    path = out / "report.md"
    write_whole(path, render(results))
    return path


def _save(fig: Any, path: Path) -> None:
    """``fig`` as the PNG ``path``, whole or not at all."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_whole(path, buf.getvalue())
