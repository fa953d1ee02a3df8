"""``cardcube serve``: the REST service in a real uvicorn process, over TCP, against the Python API it wraps."""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shapely.geometry import Polygon, box, mapping

from cardcube.testing.served import ServedCommand
from cube.chips import chip
from cube.ledger import committed_versions, read_version
from cube.parcels import as_parcels
from cube.service import MAX_POSTED_PARCELS
from cube.timeseries import parcel_timeseries


@pytest.fixture(scope="module")
def served(tiny_cube, tiny_region):
    server = ServedCommand(["serve", "--cube", tiny_cube, "--parcels", tiny_region.parcels])
    yield server
    server.close()


@pytest.fixture
def http(served):
    return served.http


def _frame(body: dict) -> pd.DataFrame:
    frame = pd.DataFrame(body["rows"], columns=body["columns"])
    assert frame["time"].str.endswith("Z").all()  # UTC, said
    frame["time"] = pd.to_datetime(frame["time"]).dt.tz_convert(None)
    return frame


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The service's rows are the Python API's, number for number (floats are written in full)."""
    assert list(got.columns) == list(want.columns) and len(got) == len(want) > 0
    for name in want.columns:
        if pd.api.types.is_float_dtype(want[name]):
            np.testing.assert_array_equal(got[name].astype(float).to_numpy(), want[name].to_numpy(), err_msg=name)
        else:
            assert got[name].tolist() == want[name].tolist(), name


def test_collections_describe_the_ledger(http, tiny_cube):
    index = http.get("/").json()
    assert [c["collection"] for c in index["collections"]] == ["s2", "s1"] and index["parcels"] > 100
    for info in index["collections"]:
        version = read_version(_store(tiny_cube), info["collection"])
        dates = {a.time for t in version.tiles.values() for a in t.acquisitions}
        assert info["version"] == version.version and info["dates"] == len(dates) > 0
        assert info["bands"] == list(version.spec.band_names) and info["tiles"] == sorted(version.tiles)
        one = http.get(f"/collections/{info['collection']}")
        assert one.json() == info and one.headers["X-Cube-Version"] == str(version.version)


def test_a_dashboard_on_another_origin_may_read_and_a_head_answers(http, parcel_id):
    r = http.get("/collections/s2", headers={"Origin": "https://dashboard.example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert {"X-Cube-Version", "Retry-After"} <= set(r.headers["access-control-expose-headers"].split(", "))
    head = http.head(f"/collections/s2/parcels/{parcel_id}/season.png", params={"size": 16})
    assert head.status_code == 200 and head.headers["content-type"] == "image/png" and not head.content
    for path in ("/", "/collections/s2", f"/collections/s2/parcels/{parcel_id}/timeseries"):  # every GET route
        head, get = http.head(path), http.get(path)
        assert head.status_code == 200 and not head.content and get.content, path
        assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
        assert head.headers.get("etag") == get.headers.get("etag"), path


def test_the_openapi_document_says_what_routes_answer(http):
    api = http.get("/openapi.json").json()
    chip_png = api["paths"]["/collections/{collection}/parcels/{parcel_id}/chip.png"]["get"]["responses"]
    assert list(chip_png["200"]["content"]) == ["image/png"]
    for code in ("404", "413", "422", "500"):
        assert chip_png[code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    series = api["paths"]["/collections/{collection}/timeseries"]["post"]["responses"]
    assert series["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    for route in (series, api["paths"]["/collections/{collection}/parcels/{parcel_id}/timeseries"]["get"]["responses"]):
        assert list(route["200"]["content"]) == ["application/json", "text/csv", "application/vnd.apache.parquet"]
    # each route the statuses it answers: a 304 where answers carry an ETag, a 408 or 415 for a body, no 409 for "/"
    answered = {(method.upper(), path): sorted(map(int, op["responses"])) for path, ops in api["paths"].items()
                for method, op in ops.items()}
    errors = [422, 500, 502, 503]
    assert answered[("GET", "/")] == [200, *errors]
    assert answered[("GET", "/collections/{collection}")] == sorted([200, 304, 404, *errors])
    assert answered[("HEAD", "/collections/{collection}/parcels/{parcel_id}/chip.png")] == sorted(
        [200, 304, 404, 409, 413, *errors])
    assert answered[("GET", "/collections/{collection}/parcels/{parcel_id}/season.png")] == sorted(
        [200, 304, 404, 413, *errors])
    assert answered[("POST", "/collections/{collection}/timeseries")] == sorted([200, 404, 408, 413, 415, *errors])
    assert "content" not in chip_png["304"] and "ETag" in chip_png["304"]["description"]


def test_the_openapi_document_describes_every_parameter_once(http, served):
    """Every parameter of every route has a description in /docs, and each operation (GET and HEAD of the PNG
    routes too) its own id: the server logs no "Duplicate Operation ID" warning building the document."""
    api = http.get("/openapi.json").json()
    operations = [op for ops in api["paths"].values() for op in ops.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and len(ids) >= 8
    undescribed = [(op["operationId"], p["name"]) for op in operations for p in op.get("parameters", [])
                   if not p.get("description")]
    assert undescribed == []
    chip_png = {p["name"]: p["description"] for p in
                api["paths"]["/collections/{collection}/parcels/{parcel_id}/chip.png"]["head"]["parameters"]}
    assert "YYYY-MM-DD" in chip_png["date"] and "2048" in chip_png["size"] and "4096" in chip_png["scale"]
    log = os.pread(served.log.fileno(), 1 << 20, 0).decode(errors="replace")  # pread: the server's offset stays
    assert "Duplicate Operation ID" not in log


def _assets(page: str) -> list[str]:
    """What a docs page loads: its scripts, stylesheets and icons."""
    return re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)


def test_the_docs_pages_load_nothing_from_outside_the_service(http):
    """/docs (Swagger UI) and /redoc load their scripts and styles from the service itself: an agency's network
    may reach no CDN, and the pages must still work there."""
    for page, kinds in (("/docs", ("javascript", "css")), ("/redoc", ("javascript",))):
        r = http.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assets = _assets(r.text)
        assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
        assert "http://" not in r.text and "https://" not in r.text
        served_kinds = set()
        for asset in assets:
            got = http.get(asset)
            assert got.status_code == 200 and len(got.content) > 1000, asset
            served_kinds |= {k for k in kinds if k in got.headers["content-type"]}
        assert served_kinds == set(kinds)


def _store(root):
    from cardcube.storage import open_store

    return open_store(root, read_only=True)


def test_parcel_timeseries_json_csv_parquet_are_the_python_api(http, tiny_cube, parcels, parcel_id):
    params = {"bands": "B04,B08,NDVI", "stats": "mean,median,p90", "time": "2024-04-01/2024-08-31"}
    want = parcel_timeseries(tiny_cube, [parcel_id], registry=parcels, bands=["B04", "B08", "NDVI"],
                             stats=["mean", "median", "p90"], time="2024-04-01/2024-08-31")
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params=params)
    assert r.status_code == 200 and r.headers["x-cube-version"] == str(want.attrs["cube_version"])
    body = r.json()
    assert body["cube_version"] == want.attrs["cube_version"] and body["parcels"][0]["status"] == "ok"
    assert body["units"] == {"B04": "1", "B08": "1", "NDVI": "1"}
    assert body["parcels"][0]["pixels"] == want.attrs["parcel_status"][0]["pixels"] > 0
    assert want["time"].min() >= pd.Timestamp("2024-04-01") and want["time"].max() < pd.Timestamp("2024-09-01")
    assert body["rows"][0]["time"].startswith("2024-") and any(row["p90"] is None for row in body["rows"]) == \
        bool(want["p90"].isna().any())  # NaN (a cloudy date) is JSON null
    _assert_same(_frame(body), want)
    parquet = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={**params, "format": "parquet"})
    _assert_same(pd.read_parquet(io.BytesIO(parquet.content)), want)
    schema = pq.read_schema(io.BytesIO(parquet.content))  # times in microseconds, as Spark reads them
    assert schema.field("time").type.unit == "us"
    csv = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={**params, "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    name = f"{parcel_id}_s2_v{want.attrs['cube_version']}"  # saved by a browser under a name that says what it is
    assert csv.headers["content-disposition"] == f'attachment; filename="{name}.csv"'
    assert parquet.headers["content-disposition"] == f'attachment; filename="{name}.parquet"'
    got = pd.read_csv(io.StringIO(csv.text), parse_dates=["time"], float_precision="round_trip")
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-15)
    assert (got["time"].dt.tz_convert(None) == want["time"]).all()  # "...Z": UTC, said
    s1 = http.get(f"/collections/s1/parcels/{parcel_id}/timeseries", params={"bands": "VV"}).json()
    _assert_same(_frame(s1), parcel_timeseries(tiny_cube, [parcel_id], registry=parcels, collection="s1",
                                               bands=["VV"]))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_download_of_a_parcel_id_beyond_ascii_is_named_in_utf8(http, parcels, parcel_id, fmt):
    """HTTP headers are Latin-1: a parcel id such as "Žatec-7/ü" names the file in ``filename*`` (RFC 6266), UTF-8
    and percent-encoded, beside an ASCII ``filename`` for older clients; its rows keep the id as it is."""
    from urllib.parse import unquote

    geom = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id]
    feature = {"type": "Feature", "properties": {"parcel_id": "Žatec-7/ü"}, "geometry": mapping(geom)}
    r = http.post("/collections/s2/timeseries", json=feature, params={"bands": "B04", "format": fmt})
    assert r.status_code == 200, r.text
    plain, utf8 = re.fullmatch(r'attachment; filename="([^"]+)"; filename\*=UTF-8\'\'(\S+)',
                               r.headers["content-disposition"]).groups()
    assert plain.isascii() and plain.startswith("_atec-7__") and plain.endswith(f".{fmt}")
    assert unquote(utf8).startswith("Žatec-7_ü_s2_v") and unquote(utf8).endswith(f".{fmt}")
    rows = pd.read_csv(io.StringIO(r.text)) if fmt == "csv" else pd.read_parquet(io.BytesIO(r.content))
    assert set(rows["parcel_id"]) == {"Žatec-7/ü"} and len(rows) > 0


def test_a_download_of_a_very_long_posted_id_is_named_in_a_header_a_proxy_passes(http, parcels, parcel_id):
    """A posted id of 100,000 characters named the CSV or Parquet file in a Content-Disposition header of 100 kB
    (nginx passes 4 to 8 kB of an answer's headers: a 502); the name keeps the id's first 100 characters, the
    rows the whole id."""
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    long_id = "Ž" + "x" * 100_000
    r = http.post("/collections/s2/timeseries", json={"type": "Feature", "id": long_id, "geometry": geom},
                  params={"bands": "B04", "format": "csv"})
    assert r.status_code == 200 and len(r.headers["content-disposition"]) < 1000, len(r.headers["content-disposition"])
    assert r.headers["content-disposition"].startswith(f'attachment; filename="_{"x" * 99}_s2_v')
    assert set(pd.read_csv(io.StringIO(r.text))["parcel_id"]) == {long_id}


def test_posted_geojson_and_unmasked_series(http, tiny_cube, parcels, parcel_id):
    geom = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id]
    feature = {"type": "Feature", "properties": {"parcel_id": "mine"}, "geometry": mapping(geom)}
    r = http.post("/collections/s2/timeseries", json=feature, params={"bands": "B08", "mask": "none"})
    want = parcel_timeseries(tiny_cube, feature, bands=["B08"], mask=None)
    assert r.status_code == 200 and set(_frame(r.json()).parcel_id) == {"mine"}
    _assert_same(_frame(r.json()), want)
    masked = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B08"}).json()
    unmasked = _frame(r.json())
    assert (_frame(masked)["count"] <= unmasked["count"]).all()  # clouds masked by default, not with mask=none
    assert (_frame(masked)["count"] < unmasked["count"]).any()
    strict = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries",
                      params={"bands": "B08", "mask": "2,3,7,8,9,10"})
    _assert_same(_frame(strict.json()), parcel_timeseries(tiny_cube, [parcel_id], registry=parcels, bands=["B08"],
                                                          mask=[2, 3, 7, 8, 9, 10]))
    local = parcels.crs.to_string()
    utm = {"type": "Feature", "properties": {}, "geometry": mapping(parcels.set_index("parcel_id").geometry[parcel_id])}
    r = http.post("/collections/s2/timeseries", json=utm, params={"bands": "B08", "mask": "none", "crs": local})
    np.testing.assert_array_equal(_frame(r.json())["mean"].astype(float), unmasked["mean"].astype(float))


def test_a_posted_geojson_is_read_in_the_crs_its_member_names(http, tiny_cube, parcels, parcel_id):
    """GeoJSON that QGIS or GDAL writes in a national CRS says it in a crs member (GeoJSON of 2008): its coordinates
    were read as lon/lat all the same, a 422 telling to give crs=. The member is read; a crs= other than it is
    refused, naming both (coordinates of one read as the other's land elsewhere), as is a member naming no CRS."""
    some = parcels.set_index("parcel_id").loc[[parcel_id]].to_crs("EPSG:28992")
    posted = json.loads(some.reset_index()[["parcel_id", "geometry"]].to_json())
    posted["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::28992"}}
    params = {"bands": "B04"}
    want = parcel_timeseries(tiny_cube, some.reset_index(), bands=["B04"])
    for given in ({}, {"crs": "EPSG:28992"}):
        r = http.post("/collections/s2/timeseries", json=posted, params={**params, **given})
        assert r.status_code == 200, r.text
        _assert_same(_frame(r.json()), want)
    r = http.post("/collections/s2/timeseries", json=posted, params={**params, "crs": "EPSG:4326"})
    assert r.status_code == 422 and r.json()["detail"] == (
        "the GeoJSON's crs member says urn:ogc:def:crs:EPSG::28992, and its CRS is given as EPSG:4326: which one are "
        "its coordinates in? Give one (REST: crs=, which may be left out for the member's)")
    posted["crs"] = {"type": "name", "properties": {"name": "EPSG:99999999"}}
    r = http.post("/collections/s2/timeseries", json=posted, params=params)
    assert r.status_code == 422 and r.json()["detail"].startswith(
        "the GeoJSON's crs member {\"type\": \"name\", \"properties\": {\"name\": \"EPSG:99999999\"}} names no CRS")
    lonlat = json.loads(some.to_crs(4326).reset_index()[["parcel_id", "geometry"]].to_json())
    lonlat["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}  # GDAL's lon/lat
    for given in ({}, {"crs": "EPSG:4326"}):
        r = http.post("/collections/s2/timeseries", json=lonlat, params={**params, **given})
        assert r.status_code == 200 and _frame(r.json())["count"].tolist() == want["count"].tolist(), r.text


def test_chip_png_is_the_python_chip(http, tiny_cube, parcels, parcel_id):
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=40)
    t = int(np.argmin(c.cloud_fraction()))
    day = pd.Timestamp(c.times[t])
    r = http.get(f"/collections/s2/parcels/{parcel_id}/chip.png",
                 params={"date": f"{day:%Y-%m-%d}", "size": 40, "scale": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-acquired"] == f"{day:%Y-%m-%dT%H:%M:%SZ}"  # ISO 8601, UTC: what date= takes
    png = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
    np.testing.assert_array_equal(png, c.image(t, scale=2))
    assert Image.open(io.BytesIO(r.content)).text == c.png_text(t)  # saved, the file says when and what it shows
    ndvi = http.get(f"/collections/s2/parcels/{parcel_id}/chip.png",
                    params={"date": f"{day:%Y-%m-%d}", "size": 40, "bands": "NDVI", "scale": 1})
    expected = chip(tiny_cube, [parcel_id], registry=parcels, size=40, bands=("NDVI",)).image(t)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(ndvi.content)).convert("RGBA")), expected)


def test_season_sheet_has_a_panel_per_date(http, tiny_cube, parcels, parcel_id):
    r = http.get(f"/collections/s2/parcels/{parcel_id}/season.png", params={"size": 24})
    c = chip(tiny_cube, [parcel_id], registry=parcels, size=24)
    assert r.status_code == 200 and int(r.headers["x-dates"]) == len(c.times) > 1
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")),
                                  c.contact_sheet().image)
    text = Image.open(io.BytesIO(r.content)).text  # saved, the sheet says its parcel and each panel's time
    assert text["PARCEL_ID"] == parcel_id and len(text["ACQUISITION_TIME"].split(",")) == len(c.times)


def test_as_of_pins_a_version(http, tiny_cube, parcel_id):
    versions = committed_versions(_store(tiny_cube), "s2")
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04", "as_of": versions[0]})
    assert r.status_code == 200 and r.json()["cube_version"] == versions[0]
    missing = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"as_of": versions[-1] + 1})
    assert missing.status_code == 404 and missing.json()["error"] == "VersionNotFound"


@pytest.mark.parametrize(("method", "path", "params", "status", "error", "says"), [
    ("GET", "/collections/s2/parcels/NOPE-1/timeseries", {}, 404, "ParcelNotFound", "unknown parcel id(s) 'NOPE-1'"),
    ("GET", "/collections/s3/parcels/{pid}/timeseries", {}, 404, "CubeNotFound", "unknown collection 's3'"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"bands": "B99"}, 422, "InvalidRequest", "B99"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"stats": "average"}, 422, "InvalidRequest", "average"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"mask": "clouds"}, 422, "InvalidRequest", "mask"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"format": "xlsx"}, 422, "InvalidRequest",
     "format='xlsx': not one of the values it takes (json, csv or parquet)"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"buffer": "-500"}, 422, "InvalidRequest",
     "buffer='-500': input should be greater than or equal to -100 (metres the parcel is grown"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"as_of": "latest"}, 422, "InvalidRequest",
     "as_of='latest': input should be a valid integer"),
    # pydantic, as Python's int(), read "1_0" as version 10
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"as_of": "1_0"}, 422, "InvalidRequest",
     "as_of='1_0': input should be a valid integer"),
    # a version of 300 digits named a ledger key longer than a file name: a 502, as if the store failed
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"as_of": "9" * 300}, 404, "VersionNotFound",
     "the latest is"),
    # an empty list read every band (every statistic, the default RGB), where a space or a comma is refused
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"bands": ""}, 422, "InvalidRequest", "no band given"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"stats": ""}, 422, "InvalidRequest", "no statistic given"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-10", "bands": ""}, 422, "InvalidRequest",
     "no band given"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"time": "2024-09-01/2024-04-01"}, 422, "InvalidRequest",
     "empty time range"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-01", "size": 100_000}, 413,
     "RequestTooLarge", "100000 px"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "1999-01-01"}, 404, "DateNotFound", "1999-01-01"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {}, 422, "InvalidRequest",
     "date is required (one acquisition of the parcel"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-05-01/2024-05-31"}, 422, "InvalidRequest",
     "is not a day or a time: give one day as YYYY-MM-DD"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06"}, 422, "InvalidRequest",
     "'2024-06' is not a day or a time: give one day as YYYY-MM-DD, or an acquisition's time as YYYY-MM-DDTHH:MM:SSZ"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024"}, 422, "InvalidRequest", "season.png?time=2024"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"time": "2023-05"}, 404, "DateNotFound",
     "no acquisition within the time range 2023-05: version 1 of the s2 cube holds dates from"),
    ("POST", "/collections/s2/timeseries", {"time": "2023"}, 404, "DateNotFound",
     "no acquisition within the time range 2023:"),
    ("GET", "/collections/s1/parcels/{pid}/timeseries", {"time": "2030-01-01/.."}, 404, "DateNotFound",
     "no acquisition within the time range 2030-01-01/..: version 1 of the s1 cube"),
    ("GET", "/collections/s2/parcels/{pid}/season.png", {"time": "2023"}, 404, "DateNotFound",
     "no acquisition within the time range 2023:"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2023-06-01"}, 404, "DateNotFound",
     "time range 2023-06-01/2023-06-01: version 1 of the s2 cube holds dates from"),
    ("GET", "/collections/s2/nothing/here", {}, 404, "RouteNotFound", "no route GET /collections/s2/nothing/here"),
    ("DELETE", "/collections/s2/parcels/{pid}/timeseries", {}, 405, "MethodNotAllowed", "use GET"),
    ("GET", "/collections/s2/timeseries", {}, 405, "MethodNotAllowed", "timeseries is not answered; use POST"),
    ("GET", "/collections/s2/parcels/{pid}/season.png", {"size": 4096}, 413, "RequestTooLarge", "4096 px"),
    # the route has no scale to lower: it was named in the advice
    ("GET", "/collections/s2/parcels/{pid}/season.png", {"size": 512}, 413, "RequestTooLarge",
     "Mpx); narrow the time range or the size"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-01", "size": 600, "scale": 8}, 413,
     "RequestTooLarge", "4800 px a side"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-01", "bands": "FOO"}, 422, "InvalidRequest",
     "unknown band(s) FOO"),
    ("GET", "/collections/s2/parcels/{pid}/season.png", {"bands": "B04,FOO,B02"}, 422, "InvalidRequest", "FOO"),
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"band": "B04"}, 422, "InvalidRequest",
     "unknown parameter 'band' (did you mean 'bands'?): GET /collections/s2/parcels/{pid}/timeseries takes "
     "all_touched, as_of, bands, buffer, format, mask, stats, time"),
    ("POST", "/collections/s2/timeseries", {"srs": "EPSG:4326", "dates": "2024"}, 422, "InvalidRequest",
     "unknown parameters 'dates', 'srs' (did you mean 'crs'?): POST /collections/s2/timeseries takes "),
    ("GET", "/", {"collection": "s2"}, 422, "InvalidRequest", "unknown parameter 'collection': GET / takes none"),
    # what requests and httpx send for params={"bands": ["B04", "B08"]}: only B08 was answered
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"bands": ["B04", "B08"]}, 422, "InvalidRequest",
     "bands given more than once: give each parameter once, a list comma-separated (bands=B04,B08)"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": ["2024-06-10", "2024-06-15"]}, 422, "InvalidRequest",
     "date given more than once"),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-10", "bands": ","}, 422, "InvalidRequest",
     "no band given"),  # was the default RGB, while the time series refuse it
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "foo"}, 422, "InvalidRequest",
     "acquisition's time as YYYY-MM-DDTHH:MM:SSZ (a parcel's timeseries lists them)"),  # no season.png?time=foo
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"buffer": "nan"}, 422, "InvalidRequest",
     "finite number"),  # was "should be less than or equal to 100"
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"bands": "VV"}, 422, "InvalidRequest",
     "VV is a band of the s1 cube: add --collection s1 (Python: collection='s1'; REST: /collections/s1/...)"),
    ("HEAD", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-01", "scale": 2, "sise": 64}, 422, None, None),
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-31"}, 422, "InvalidRequest",
     "date '2024-06-31' is no day or time of the calendar"),  # was "... is not an ISO 8601 range"
    ("GET", "/collections/s2/parcels/{pid}/timeseries", {"time": "2024-06-10T10:50:31 02:00/.."}, 422,
     "InvalidRequest", "write it %2B"),  # an unencoded "+02:00"
    ("GET", "/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-10T10:50:31 02:00"}, 422,
     "InvalidRequest", "write it %2B"),  # the same lost "+" in a chip's date: a bare "not a day or a time"
    ("POST", "/collections/s2/timeseries", {"crs": "EPSG:4326 5773"}, 422, "InvalidRequest",
     "unknown crs 'EPSG:4326 5773'; give e.g. EPSG:4326 or EPSG:32631 (a '+' reaches a URL's query as a space: "
     "write it %2B, crs=EPSG:4326%2B5773)"),  # a compound CRS's "+" sent unencoded: "unknown crs", no more said
])
def test_bad_requests_get_a_status_and_a_reason(http, parcels, parcel_id, method, path, params, status, error, says):
    polygon = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id]) if method == "POST" else None
    r = http.request(method, path.format(pid=parcel_id), params=params, json=polygon)
    assert r.status_code == status, r.text
    if method == "HEAD":  # the status alone
        assert not r.content and r.headers["content-type"] == "application/json"
        return
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and says.format(pid=parcel_id) in body["detail"]


def test_json_and_csv_come_gzipped_to_a_client_that_accepts_it(http, parcel_id):
    """A season's JSON or CSV is gzipped for a client that says it accepts gzip, and the same answer once
    decoded; PNG and Parquet, compressed already, are sent as they are."""
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    for fmt in ("json", "csv"):
        plain = http.get(url, params={"format": fmt}, headers={"Accept-Encoding": "identity"})
        zipped = http.get(url, params={"format": fmt}, headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
        assert zipped.content == plain.content and zipped.num_bytes_downloaded * 3 < plain.num_bytes_downloaded
        assert "Accept-Encoding" in zipped.headers["vary"] and zipped.headers["etag"] == plain.headers["etag"]
    for path, params in ((url, {"format": "parquet"}), (f"/collections/s2/parcels/{parcel_id}/season.png",
                                                       {"size": 16})):
        r = http.get(path, params=params, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200 and "content-encoding" not in r.headers, path


def test_the_docs_pages_take_the_query_parameters_links_give_them(http):
    """Only the API's routes refuse a parameter they do not take: /docs linked with a tracking parameter was a 422,
    and so was Swagger UI's OAuth2 redirect page, which is sent ``code`` and ``state``."""
    for page, params in (("/docs", {"utm_source": "newsletter"}), ("/redoc", {"utm_source": "newsletter"}),
                         ("/docs/oauth2-redirect", {"code": "x", "state": "y"})):
        r = http.get(page, params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), (page, r.text[:200])


def test_no_answer_sends_the_etags_inner_basis(http, parcels, parcel_id):
    """The routes name the version an answer read (number and commit time) in a header the ETag is made from, and
    that is never sent; a POST's answer, which gets no ETag, sent it (``x-cardcube-committed: 1|2026-...``)."""
    polygon = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    answers = [http.post("/collections/s2/timeseries", params={"bands": "B04", "stats": "mean"}, json=polygon),
               http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04"}),
               http.get("/collections/s2")]
    for r in answers:
        assert r.status_code == 200 and r.headers["x-cube-version"], r.text[:200]
        assert not any(name.lower().startswith("x-cardcube") for name in r.headers), dict(r.headers)


def test_a_compressed_post_body_is_a_415_saying_so(http, parcels, parcel_id):
    """A gzipped GeoJSON body was a 422 "the body is not GeoJSON (no UTF-8 JSON, or nested too deep)": true, but a
    client compressing its uploads learnt nothing of why. It is a 415 naming the coding (RFC 9110 15.5.16)."""
    import gzip
    import json

    polygon = json.dumps(mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])).encode()
    r = http.post("/collections/s2/timeseries", params={"bands": "B04", "stats": "mean"},
                  content=gzip.compress(polygon),
                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 415 and r.headers["accept-encoding"] == "identity", r.text
    assert r.json() == {"error": "UnsupportedMediaType", "detail": "a request body of Content-Encoding gzip is not "
                        "read: POST the GeoJSON uncompressed (up to 32 MiB)"}
    plain = http.post("/collections/s2/timeseries", params={"bands": "B04", "stats": "mean"}, content=polygon,
                      headers={"Content-Type": "application/json", "Content-Encoding": "identity"})
    assert plain.status_code == 200, plain.text[:200]


def test_a_url_of_thousands_of_unknown_parameters_is_a_short_422(http):
    """Each parameter's name was counted through the whole list (a URL of 15,000 took 2 to 4 s of the server's CPU)
    and the 422 named every unknown one (140 kB): it names the first ten and counts the rest."""
    many = {f"a{i:04d}": "1" for i in range(6000)}
    r = http.get("/collections/s2", params={**many, "as_of": "1"})
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(r.content) < 2000, len(r.content)
    assert detail.startswith("unknown parameters 'a0000', 'a0001'") and "'a0009' and 5,990 more: GET" in detail


@pytest.mark.parametrize(("path", "params", "starts", "ends"), [
    ("/collections/s2/parcels/{pid}/timeseries", {"bands": "x" * 50_000}, "unknown band(s) xxx", "NBR, NDRE"),
    ("/collections/s2/parcels/{pid}/timeseries", {"time": "x" * 50_000}, "time 'xxx", "or an ISO range start/end"),
    ("/collections/s2/parcels/{pid}/chip.png", {"date": "2024-06-01", "size": "x" * 50_000}, "size='xxx",
     "up to 2048)"),
    ("/collections/s2/parcels/" + "x" * 50_000 + "/timeseries", {}, "unknown parcel id(s) 'xxx", "registered)")])
def test_an_error_naming_a_long_input_is_short(http, parcel_id, path, params, starts, ends):
    """An error's detail names what was asked, and a parameter or parcel id of 50,000 characters came back whole in
    its 422 or 404 (50 kB, 1 MB for a URL at uvicorn's limit): the detail keeps its start and end, what was wrong and
    what to do, and says how much it left out."""
    r = http.get(path.format(pid=parcel_id), params=params)
    detail = r.json()["detail"]
    assert r.status_code in (404, 422) and len(detail) < 2100, (r.status_code, len(detail))
    assert detail.startswith(starts) and detail.endswith(ends) and " characters left out) ... " in detail


def test_gzip_goes_only_to_a_client_whose_accept_encoding_weighs_it_above_0(http, parcel_id):
    """``gzip;q=0`` refuses gzip (RFC 9110 12.5.3): Starlette gzipped wherever the header held the word, so such a
    client got bytes it had said it cannot decode; codings are named in any case, and ``*`` accepts gzip."""
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    for refused in ("gzip;q=0", "identity, gzip;q=0", "br, *;q=0"):
        r = http.get(url, params={"format": "csv"}, headers={"Accept-Encoding": refused})
        assert r.status_code == 200 and "content-encoding" not in r.headers, refused
    for accepted in ("GZIP", "*", "br;q=1, gzip;q=0.5"):
        r = http.get(url, params={"format": "csv"}, headers={"Accept-Encoding": accepted})
        assert r.headers.get("content-encoding") == "gzip", accepted


def test_a_304_varies_on_accept_encoding_as_its_200_does(http, parcel_id):
    """A 304 names the header fields its 200 varies on (RFC 9110 15.4.5): without ``Accept-Encoding`` in its Vary, a
    shared cache refreshing the stored gzipped answer with the 304's headers served it to clients without gzip."""
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    first = http.get(url, params={"format": "csv"}, headers={"Accept-Encoding": "gzip"})
    assert "accept-encoding" in first.headers["vary"].lower()
    for encoding in ("gzip", "identity"):
        again = http.get(url, params={"format": "csv"}, headers={"Accept-Encoding": encoding,
                                                                 "If-None-Match": first.headers["etag"]})
        assert again.status_code == 304, again.text
        assert {"accept-encoding", "origin"} <= {v.strip().lower() for v in again.headers["vary"].split(",")}


def test_a_time_range_without_an_acquisition_names_the_cubes_dates(http, parcel_id):
    """The 404 of an empty time range says which dates the cube holds, so the next request can hit them."""
    series = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04"}).json()
    days = sorted({row["time"][:10] for row in series["rows"]})
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"time": "2023-05"})
    assert r.status_code == 404
    assert r.json()["detail"].endswith(f"of the s2 cube holds dates from {days[0]} to {days[-1]}")


def test_a_wrong_method_says_the_methods_the_route_answers(http, parcel_id):
    r = http.request("DELETE", f"/collections/s2/parcels/{parcel_id}/chip.png")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"  # two routes, one path
    assert r.json() == {"error": "MethodNotAllowed", "detail": f"DELETE /collections/s2/parcels/{parcel_id}/chip.png "
                        f"is not answered; use GET, HEAD (/docs lists the routes)"}


def test_a_chip_over_the_size_limit_names_that_limit(http, parcel_id):
    r = http.get(f"/collections/s2/parcels/{parcel_id}/chip.png", params={"date": "2024-06-01", "size": 4000})
    assert r.status_code == 413 and "2048" in r.json()["detail"], r.text


def test_posted_parcels_that_cannot_be_measured(http, tiny_cube, parcels, parcel_id):
    def post(geojson, **params):
        return http.post("/collections/s2/timeseries", json=geojson, params=params)

    centre = parcels.set_index("parcel_id").geometry[parcel_id].centroid
    tiny = mapping(box(centre.x, centre.y, centre.x + 4, centre.y + 4))  # 4 x 4 m, in the parcels' UTM zone
    r = post(tiny, crs=parcels.crs.to_string())
    assert r.status_code == 422 and r.json()["error"] == "ParcelTooSmall"
    assert "buffer=" in r.json()["detail"] and "all_touched=true" in r.json()["detail"]  # what the answer says to do
    r = post(tiny, crs=parcels.crs.to_string(), bands="B04", buffer=0, all_touched="true")  # ... done
    want = parcel_timeseries(tiny_cube, as_parcels(tiny, src_crs=parcels.crs), bands=["B04"], buffer=0,
                             all_touched=True)
    assert r.status_code == 200 and 1 <= r.json()["parcels"][0]["pixels"] <= 4
    _assert_same(_frame(r.json()), want)
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04", "buffer": 0})
    _assert_same(_frame(r.json()), parcel_timeseries(tiny_cube, [parcel_id], registry=parcels, bands=["B04"],
                                                     buffer=0))
    r = post(tiny, crs=parcels.crs.to_string(), buffer=-5000)
    assert r.status_code == 422 and "buffer" in r.json()["detail"]
    r = post(tiny)  # UTM metres taken as lon/lat: the answer says how to name their CRS
    assert r.status_code == 422 and "crs= in a REST request" in r.json()["detail"]
    far = {"type": "Polygon", "coordinates": [[[100, 10], [100.01, 10], [100.01, 10.01], [100, 10]]]}
    assert post(far).json()["error"] == "ParcelOutsideCube" and post(far).status_code == 422
    broken = {"type": "Polygon", "coordinates": [[[5, 52], [5.01, 52]]]}
    r = post(broken)
    assert r.status_code == 422 and "malformed GeoJSON" in r.json()["detail"]
    assert post({"type": "Nothing"}).status_code == 422
    r = post({"type": "Polygon"})  # no coordinates at all
    assert r.status_code == 422 and "malformed GeoJSON" in r.json()["detail"]
    assert post(far, crs="EPSG:0").json()["error"] == "InvalidRequest"
    r = post({"type": "Point", "coordinates": [5.70, 52.68]})  # a location is no parcel: what to do instead
    assert r.status_code == 422 and r.json()["error"] == "InvalidParcel", r.text
    assert "is a Point, not a polygon" in r.json()["detail"] and "POST a valid Polygon" in r.json()["detail"]
    assert "cube.parcels.parcel_at(lon, lat, parcels)" in r.json()["detail"]
    many = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": far}]
            * (MAX_POSTED_PARCELS + 1)}
    r = post(many)
    assert r.status_code == 413 and "cardcube extract" in r.json()["detail"]
    wide = mapping(box(centre.x - 6000, centre.y - 6000, centre.x + 6000, centre.y + 6000))  # 144 km², 19 dates
    r = post(wide, crs=parcels.crs.to_string())
    assert r.status_code == 413 and "MiB to read" in r.json()["detail"], r.text
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries",  # 27 MiB of JSON for 413 rows
                 params={"stats": ",".join(f"p50.{i:04d}" for i in range(1, 2000))})
    assert r.status_code == 413 and "1,999 statistics asked for (limit 32" in r.json()["detail"], r.text
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    mixed = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": "a", "geometry": geom},
                                                       {"type": "Feature", "geometry": geom}]}  # "a" and 1
    r = post(mixed, bands="B04")
    assert r.status_code == 200 and {row["parcel_id"] for row in r.json()["rows"]} == {"a", "1"}, r.text
    odd = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": {"x": 1}, "geometry": geom}]}
    assert post(odd).status_code == 422 and "is not a string or an integer" in post(odd).json()["detail"]
    r = post(geom, bands="ndvi,NDVI,b04")
    assert r.status_code == 200 and sorted({row["band"] for row in r.json()["rows"]}) == ["B04", "NDVI"]


def test_posted_input_that_no_parcel_has_is_a_4xx_saying_so(http, parcels, parcel_id):
    """Each of these was a 500 (a traceback in the log), or a wrong answer, before."""
    def post(geojson, **params):
        return http.post("/collections/s2/timeseries", json=geojson, params={"bands": "B04", **params})

    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    for crs in ("IAU_2015:30100", "EPSG:4978", "EPSG:5714"):  # the Moon's, geocentric, vertical
        r = post(geom, crs=crs)
        assert r.status_code == 422 and "is not a horizontal CRS of the Earth" in r.json()["detail"], r.text
    deep = geom["coordinates"]
    for _ in range(800):
        deep = [deep]
    r = post({"type": "Polygon", "coordinates": deep})
    assert r.status_code == 422 and "nested too deep" in r.json()["detail"], r.text
    r = post({"type": "Feature", "properties": {"parcel_id": 2**80}, "geometry": geom})
    assert r.status_code == 422 and "beyond 64 bits: give it as a string" in r.json()["detail"], r.text
    world = mapping(box(-179, -80, 179, 80))  # was "outside": projected to the cube's UTM zone, a sliver elsewhere
    r = post(world)
    assert r.status_code == 413 and "spans 358.0 x 160.0 degrees" in r.json()["detail"], r.text
    centre = parcels.set_index("parcel_id").geometry[parcel_id].centroid
    region = mapping(box(centre.x - 30_000, centre.y - 30_000, centre.x + 30_000, centre.y + 30_000))
    r = post(region, crs=parcels.crs.to_string(), time="2024-06")  # few dates: few MiB to read, but 5 GB to hold
    assert r.status_code == 413 and "pixels (limit 10,000,000" in r.json()["detail"], r.text


@pytest.mark.parametrize(("member", "value", "says"), [
    ("features", 5, "the features of a FeatureCollection are an array of Features, not a number"),
    ("features", True, "the features of a FeatureCollection are an array of Features, not a boolean"),
    ("features", {"a": {"type": "Feature"}}, "the features of a FeatureCollection are an array of Features, not an "
                                             "object"),
    ("properties", [1, 2], "feature 0: its properties are an object (or null), not an array"),
    ("properties", "note", "feature 0: its properties are an object (or null), not a string"),
])
def test_posted_members_of_the_wrong_json_type_are_a_422(http, parcels, parcel_id, member, value, says):
    """A FeatureCollection's features not a list, or a Feature's properties not an object, were a 500 (the list
    of a dict's keys or a string's letters was taken for the features)."""
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    features = [{"type": "Feature", "properties": value if member == "properties" else {}, "geometry": geom}]
    body = {"type": "FeatureCollection", "features": value if member == "features" else features}
    r = http.post("/collections/s2/timeseries", json=body, params={"bands": "B04"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidRequest" and says in r.json()["detail"], r.text


def test_posted_coordinates_or_members_shapely_cannot_read_are_a_422(http, parcels, parcel_id):
    """An integer coordinate beyond a float (1 followed by 400 zeros: JSON has no limit) and a FeatureCollection
    within a GeometryCollection were a 500 (OverflowError, shapely's GeometryTypeError)."""
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    body = json.dumps(geom).replace(repr(geom["coordinates"][0][1][0]), "1" + "0" * 400, 1)
    r = http.post("/collections/s2/timeseries", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed GeoJSON geometry (OverflowError" in r.json()["detail"], r.text
    nested = {"type": "GeometryCollection", "geometries": [geom, {"type": "FeatureCollection", "features": []}]}
    r = http.post("/collections/s2/timeseries", json=nested)
    assert r.status_code == 422 and "malformed GeoJSON geometry (GeometryTypeError" in r.json()["detail"], r.text


def test_a_posted_geometry_collection_of_an_invalid_polygon_is_repaired_as_the_polygon_is(http, tiny_cube, parcels,
                                                                                          parcel_id):
    """A GeometryCollection holding a self-intersecting polygon (a bow tie) and a parcel was a 500 (GEOS's union
    of an invalid polygon: a TopologyException); each polygon is now made valid first, as one posted alone is."""
    import shapely

    geom = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id]
    x0, y0, x1, y1 = geom.bounds
    bow_tie = Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    assert not bow_tie.is_valid
    collection = {"type": "GeometryCollection", "geometries": [mapping(bow_tie), mapping(geom)]}
    r = http.post("/collections/s2/timeseries", json=collection, params={"bands": "B04"})
    assert r.status_code == 200, r.text
    union = shapely.union_all([shapely.make_valid(bow_tie, method="structure", keep_collapsed=False), geom])
    _assert_same(_frame(r.json()), parcel_timeseries(tiny_cube, union, bands=["B04"]))


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_posted_coordinate_that_is_no_number_is_refused_not_dropped(http, parcels, parcel_id, bad):
    """Python's JSON reads NaN and Infinity (and 1e400 as infinity): a vertex of them made the polygon invalid, its
    repair dropped the vertex, and the series of another polygon was answered, status "ok"."""
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    body = json.dumps(geom).replace(repr(geom["coordinates"][0][1][0]), bad, 1)
    assert bad in body
    r = http.post("/collections/s2/timeseries", content=body, headers={"content-type": "application/json"},
                  params={"bands": "B04"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidParcel", r.text[:300]
    assert "parcel 0: has a coordinate that is no finite number (NaN or infinite)" in r.json()["detail"]


def test_a_posted_coordinate_of_hundreds_of_digits_is_named_short(http, parcels, parcel_id):
    """A coordinate written as a 300-digit integer was echoed whole, twice, in the answer's detail."""
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    body = json.dumps(geom).replace(repr(geom["coordinates"][0][1][0]), "1" * 300, 1)
    r = http.post("/collections/s2/timeseries", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "InvalidRequest", r.text[:300]
    assert "1.11e+299" in r.json()["detail"] and "1" * 20 not in r.json()["detail"]


def test_a_posted_outline_crossing_itself_too_often_to_repair_is_refused_and_cheap_repairs_are_made(http, parcels,
                                                                                                   parcel_id):
    """An outline of 3,000 vertices crossing itself at random (70 kB posted) took 50 s and 2.3 GB to repair, before
    the request's turn to read: the work grows with the square of the vertices where edges cross. The repair is
    made in a child process stopped at 5 s or 512 MiB: a 413. Counting vertices instead refused cheap repairs: 12
    parcels of 301 vertices with a bow tie each, a parcel of 1,501 vertices with one crossing (0.2 ms each)."""
    from cube.geometry_trial import LIMIT_MEMORY, LIMIT_SECONDS

    x0, y0, x1, y1 = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id].bounds

    def scribble(vertices: int) -> dict:
        rng = np.random.default_rng(0)
        ring = np.c_[rng.uniform(x0, x1, vertices), rng.uniform(y0, y1, vertices)]
        return {"type": "Polygon", "coordinates": [[*ring.tolist(), ring[0].tolist()]]}

    def bow_tied(vertices: int) -> dict:  # a circle in the parcel's box, two neighbouring vertices swapped
        t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        ring = np.c_[(x0 + x1) / 2 + (x1 - x0) / 3 * np.cos(t), (y0 + y1) / 2 + (y1 - y0) / 3 * np.sin(t)]
        ring[[5, 6]] = ring[[6, 5]]
        return {"type": "Polygon", "coordinates": [[*ring.tolist(), ring[0].tolist()]]}

    def post(geojson):
        return http.post("/collections/s2/timeseries", json=geojson, params={"bands": "B04"})

    r = post(scribble(3000))
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge", r.text[:300]
    assert "making a valid polygon of the parcel 0 " in r.json()["detail"]
    assert f"(the limits: {LIMIT_SECONDS:g} s, {LIMIT_MEMORY // 2**20} MiB)" in r.json()["detail"]
    twelve = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": f"p{i}", "properties": {},
                                                        "geometry": bow_tied(301)} for i in range(12)]}
    for geojson in (twelve, bow_tied(1501)):
        r = post(geojson)
        assert r.status_code == 200 and {row["status"] for row in r.json()["parcels"]} == {"ok"}, r.text[:300]


def test_a_posted_parcel_too_costly_to_buffer_is_refused_and_the_service_goes_on(http, parcels, parcel_id):
    """A valid star of 1,000 narrow spikes (50 kB posted) took GEOS 15 s and 2.4 GB to shrink by 100 m, in a
    thread that cannot be stopped; four such requests, more memory than a pod has. Its buffer is tried first in a
    child process, stopped at the limit (5 s, 512 MiB): a 413 saying what to do; the next request is answered."""
    from pyproj import Transformer

    from cube.geometry_trial import LIMIT_MEMORY, LIMIT_SECONDS

    field = parcels.set_index("parcel_id").geometry[parcel_id]
    angles = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    radii = np.where(np.arange(2000) % 2 == 0, 500.0, 50.0)
    lon, lat = Transformer.from_crs(parcels.crs, 4326, always_xy=True).transform(
        field.centroid.x + radii * np.cos(angles), field.centroid.y + radii * np.sin(angles))
    spiky = {"type": "Polygon", "coordinates": [[*np.c_[lon, lat].tolist(), [lon[0], lat[0]]]]}
    r = http.post("/collections/s2/timeseries", json=spiky, params={"bands": "B04", "buffer": -100})
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge", r.text[:300]
    assert "the buffer of -100 m of the parcel 0 " in r.json()["detail"]
    assert f"(the limits: {LIMIT_SECONDS:g} s, {LIMIT_MEMORY // 2**20} MiB)" in r.json()["detail"]
    r = http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04"})
    assert r.status_code == 200 and r.json()


def test_a_chip_date_of_two_sentinel1_passes_is_a_409_listing_them(two_pass_cube, two_pass_region, two_pass_days):
    """chip.png?date= on a day of a dawn and a dusk pass: 409 listing both times and orbit directions (not the
    first pass's chip); either time is then that pass's chip, the Python chip's, and X-Acquired says it; a day
    of one pass answers as before."""
    parcels = pd.read_parquet(two_pass_region.parcels, columns=["parcel_id", "area_ha"])
    pid = parcels.sort_values("area_ha").parcel_id.iloc[-1]
    single, (first, second) = two_pass_days
    day = first[0][:10]
    server = ServedCommand(["serve", "--cube", two_pass_cube, "--parcels", two_pass_region.parcels])
    try:
        def png(date: str):
            return server.http.get(f"/collections/s1/parcels/{pid}/chip.png", params={"date": date, "size": 24})

        r = png(day)
        assert r.status_code == 409 and r.json()["error"] == "AmbiguousDate", r.text
        assert all(f"{when} ({orbit}" in r.json()["detail"] for when, orbit in (first, second)), r.text
        for when, _ in (first, second):
            r = png(when)
            assert r.status_code == 200 and r.headers["x-acquired"] == when  # as the ledger writes it
            expected = chip(two_pass_cube, [pid], registry=two_pass_region.parcels, collection="s1", size=24,
                            date=when).image(0, scale=4)
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA")), expected)
        r = png(single)
        assert r.status_code == 200 and r.headers["x-acquired"].startswith(f"{single}T")
        assert r.headers["x-acquired"].endswith("Z")
    finally:
        server.close()


DASHBOARD = "https://dashboard.agency.example"


@pytest.fixture(scope="module")
def deployed(tiny_cube):
    """A server started with the options of a deployment behind a reverse proxy: no --parcels, --root-path,
    --allow-origin, --body-wait 2 and --access-log. Each test below is about one of them, which none of the others
    changes (a request without an Origin header is no CORS request; a body sent at once is whole well within 2 s):
    one server for them all, rather than an interpreter and its imports started for each."""
    server = ServedCommand(["serve", "--cube", tiny_cube, "--root-path", "/cardcube/", "--allow-origin", DASHBOARD,
                            "--allow-origin", "http://localhost:3000", "--body-wait", "2", "--access-log"])
    yield server
    server.close()


def test_without_a_parcel_file_ids_are_refused_and_geojson_served(deployed, parcels, parcel_id):
    r = deployed.http.get(f"/collections/s2/parcels/{parcel_id}/timeseries")
    assert r.status_code == 404 and "--parcels" in r.json()["detail"]
    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    r = deployed.http.post("/collections/s2/timeseries", json=geom, params={"bands": "B04"})
    assert r.status_code == 200 and len(r.json()["rows"]) > 0


def test_behind_a_proxy_under_a_path_prefix_the_docs_find_the_openapi_document(deployed):
    """A reverse proxy serving the service under /cardcube/ (stripping the prefix, as nginx's proxy_pass with a
    URI does): with --root-path the docs page asks for /cardcube/openapi.json, which the proxy passes on."""
    http = deployed.http
    docs = http.get("/docs").text
    assert "url: '/cardcube/openapi.json'" in docs
    assets = _assets(docs)  # the proxy passes them on without the prefix
    assert assets and all(a.startswith("/cardcube/docs-assets/") for a in assets)
    assert all(http.get(a.removeprefix("/cardcube")).status_code == 200 for a in assets)
    assert http.get("/openapi.json").json()["servers"] == [{"url": "/cardcube"}]
    r = http.get("/collections/s2")  # the routes, as the proxy passes them on
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert http.get("/collections/s2", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    # a proxy passing the prefix on (nginx's proxy_pass without a URI) was told "no route GET /cardcube/cardcube/..."
    unstripped = http.get("/cardcube/collections/s2")
    assert unstripped.status_code == 404 and unstripped.json() == {"error": "RouteNotFound", "detail": (
        "no route GET /cardcube/collections/s2: the service was started under the path prefix /cardcube (--root-path), "
        "which the reverse proxy in front strips, and this request still holds it; ask /collections/s2 of the service "
        "itself, or have the proxy strip the prefix (nginx: proxy_pass with a URI, http://cardcube:8080/)")}
    assert http.get("/nothing").json()["detail"] == (  # as asked of the proxy, and where to look through it
        "no route GET /cardcube/nothing; GET /cardcube/ lists the collections, /cardcube/docs every route")


def test_behind_a_proxy_a_trailing_slash_is_redirected_where_the_client_asked(deployed):
    """A URL with a trailing slash too many (or one short) is a 307 to the route's own: its Location named the
    Host the service was asked by, which behind a reverse proxy is the proxy's name for it (nginx's default
    Host, the proxy_pass host), so a client following it went to http://cardcube:8080/..., which it cannot reach.
    It is relative now: the prefix (--root-path), the path and the query, on the host the client asked."""
    proxied = {"Host": "cardcube:8080", "X-Forwarded-Proto": "https"}
    for asked, moved in (("/collections/s2/?as_of=1", "/cardcube/collections/s2?as_of=1"), ("/docs/", "/cardcube/docs"),
                         ("/collections/s2/parcels/A%20b%3F/timeseries/", "/cardcube/collections/s2/parcels/A%20b%3F/"
                                                                          "timeseries")):
        r = deployed.http.get(asked, headers=proxied, follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == moved, (asked, r.headers.get("location"))
    followed = deployed.http.get("/collections/s2/", follow_redirects=False)
    assert deployed.http.get(followed.headers["location"].removeprefix("/cardcube")).json()["collection"] == "s2"
    r = deployed.http.post("/collections/s2/timeseries/", json={}, headers=proxied, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/cardcube/collections/s2/timeseries"  # POST kept
    assert deployed.http.get("/nothing/", follow_redirects=False).status_code == 404  # no route either way


def test_the_access_log_names_the_client_a_trusted_proxy_forwards_for(deployed):
    """--access-log: a line per request in the server's log (stderr), with the client's address, which from a proxy
    on the loopback (trusted: FORWARDED_ALLOW_IPS) is the X-Forwarded-For it sends, the public path and the status;
    without it, answers went unlogged and a 4xx or 5xx left no trace of who asked what."""
    deployed.http.get("/collections/s2", params={"as_of": 1}, headers={"X-Forwarded-For": "203.0.113.7"})
    deployed.http.get("/collections/s9", headers={"X-Forwarded-For": "198.51.100.23"})
    log = os.pread(deployed.log.fileno(), 1 << 22, 0).decode(errors="replace")
    assert re.search(r'203\.0\.113\.7:\d+ - "GET /cardcube/collections/s2\?as_of=1 HTTP/1\.1" 200', log), log[-2000:]
    assert re.search(r'198\.51\.100\.23:\d+ - "GET /cardcube/collections/s9 HTTP/1\.1" 404', log), log[-2000:]


def test_only_the_named_origins_may_read_when_given(deployed):
    """--allow-origin: a page of a named origin reads the answers; one of another origin gets no CORS header
    (its browser refuses to hand it the answer) and its preflight is refused."""
    dashboard, elsewhere, http = DASHBOARD, "https://evil.example", deployed.http
    ok = http.get("/collections/s2", headers={"Origin": dashboard})
    assert ok.headers["access-control-allow-origin"] == dashboard and "Origin" in ok.headers["vary"]
    other = http.get("/collections/s2", headers={"Origin": elsewhere})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    preflight = {"Origin": elsewhere, "Access-Control-Request-Method": "POST"}
    refused = http.options("/collections/s2/timeseries", headers=preflight)
    assert refused.status_code == 400 and refused.json()["error"] == "CorsRefused"  # JSON, as every error
    assert refused.json()["detail"].startswith("Disallowed CORS origin")
    delete = {"Origin": dashboard, "Access-Control-Request-Method": "DELETE"}
    assert http.options("/collections/s2/timeseries", headers=delete).json()["detail"].startswith(
        "Disallowed CORS method")


@pytest.mark.parametrize(("origins", "says"), [
    (["https://dashboard.example.org/"], "without a path or a trailing slash"),
    (["dashboard.example.org"], "is not an origin: give scheme://host[:port]"),
    (["*", "https://a.example"], "'*' goes alone"),
])
def test_an_allowed_origin_no_browser_would_send_is_refused(origins, says):
    from cardcube.errors import InvalidRequestError
    from cube.service import allowed_origins

    with pytest.raises(InvalidRequestError, match=re.escape(says)):
        allowed_origins(origins)
    assert allowed_origins(["none"]) == [] and allowed_origins(["*"]) == ["*"]
    assert allowed_origins(["http://localhost:3000"]) == ["http://localhost:3000"]


def test_a_folder_without_a_cube_is_refused_at_start(tmp_path):
    with pytest.raises(AssertionError, match=f"no cube at .*{tmp_path.name}"):
        ServedCommand(["serve", "--cube", tmp_path], timeout=30)


def test_a_file_given_as_the_cube_is_named_so(tmp_path):
    """``serve --cube parcels.gpkg`` said "no committed version of s2 or s1", not that a cube is a folder (as
    ``versions``, ``verify`` and ``expire`` say)."""
    from cardcube.errors import CubeNotFoundError
    from cube.service import make_app

    (tmp_path / "parcels.gpkg").write_bytes(b"")
    with pytest.raises(CubeNotFoundError, match="; it is a file: a cube is a folder"):
        make_app(tmp_path / "parcels.gpkg")


def test_the_array_cache_can_be_switched_off_but_not_made_negative(tiny_cube):
    """``array_cache=0`` (``--array-cache 0``) serves without keeping arrays (what ``benchmarks.service``
    compares: the same answers, byte for byte, from a server with the cache and one without); below 0 is refused."""
    from cardcube.errors import InvalidRequestError
    from cube.service import make_app

    assert make_app(tiny_cube, array_cache=0).title == "cardcube"
    with pytest.raises(InvalidRequestError, match="array_cache=-1"):
        make_app(tiny_cube, array_cache=-1)


def test_a_body_wait_of_0_is_refused(tiny_cube):
    """``--body-wait 0`` was taken, and every POST whose body arrived in more than one read (over ~64 KiB: a few
    parcels) was a 408 "not whole within 0 s"; it is refused, from the command line and from Python."""
    from cardcube.errors import InvalidRequestError
    from cube.service import make_app
    from tests.in_process import run_here

    refused = run_here(["serve", "--cube", str(tiny_cube), "--body-wait", "0", "--port", "-1"])  # no port: no server
    assert refused.returncode == 2 and "--body-wait: expected a number of seconds > 0, got '0'" in refused.stderr
    with pytest.raises(InvalidRequestError, match="body_wait=0: give the seconds a POST body may take to arrive whole"):
        make_app(tiny_cube, body_wait=0)


@pytest.fixture(scope="module")
def lpis_export(tiny_cube, parcels, tmp_path_factory):
    """A server of a parcel file as an LPIS export may hold them, a GeoPackage of four: one of an empty geometry,
    one as it is, and two whose ids have a slash (NL/000001, NL/000002); its ids: empty, good."""
    some = parcels.iloc[[10, 11, 12, 11]].reset_index(drop=True)
    some["parcel_id"] = [*some.parcel_id.iloc[:2], "NL/000001", "NL/000002"]
    some.loc[0, "geometry"] = Polygon()
    path = tmp_path_factory.mktemp("lpis") / "lpis.gpkg"
    some.to_file(path)
    server = ServedCommand(["serve", "--cube", tiny_cube, "--parcels", path])
    yield server, some.parcel_id.iloc[0], some.parcel_id.iloc[1]
    server.close()


def test_ids_with_a_slash_are_reached_by_url(lpis_export):
    server, _, _ = lpis_export
    r = server.http.get("/collections/s2/parcels/NL%2F000002/timeseries", params={"bands": "B04"})
    assert r.status_code == 200 and {row["parcel_id"] for row in r.json()["rows"]} == {"NL/000002"}, r.text
    r = server.http.get("/collections/s2/parcels/NL/000002/season.png", params={"size": 16})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert server.http.get("/collections/s2/parcels/NL/9/timeseries").status_code == 404


def test_a_parcel_file_with_an_empty_geometry_is_served_but_that_parcel(lpis_export):
    """A register with an empty geometry (an LPIS export often holds a few) stopped the service from starting;
    now only that parcel is refused, with its reason."""
    server, empty, good = lpis_export
    r = server.http.get(f"/collections/s2/parcels/{good}/timeseries", params={"bands": "B04"})
    assert r.status_code == 200 and {row["parcel_id"] for row in r.json()["rows"]} == {good}, r.text
    r = server.http.get(f"/collections/s2/parcels/{empty}/timeseries", params={"bands": "B04"})
    assert r.status_code == 422 and r.json() == {"error": "InvalidParcel",
                                                 "detail": f"parcel {empty}: has an empty geometry"}


@pytest.fixture(scope="module")
def broken_b04(tiny_cube, tiny_region, tmp_path_factory):
    """A server of a copy of the tiny cube whose band B04 has a zarr.json zarr cannot read (JSON, but no array's:
    an error nothing expects) and whose band B11's shards are overwritten (a CorruptShard); the other bands are
    whole."""
    import shutil

    cube = tmp_path_factory.mktemp("broken") / "cube"
    shutil.copytree(tiny_cube, cube)
    doc = cube / "s2" / "31UFU" / "cube.zarr" / "r10m" / "B04" / "zarr.json"
    doc.write_text('{"zarr_format": 3, "node_type": "array"}')
    for shard in (p for p in (cube / "s2" / "31UFU" / "cube.zarr").glob("**/B11/c/**/*") if p.is_file()):
        shard.write_bytes(b"\x07" * shard.stat().st_size)  # its index fails its checksum
    server = ServedCommand(["serve", "--cube", cube, "--parcels", tiny_region.parcels])
    yield server
    server.close()


def test_a_fault_of_the_server_is_a_500_a_front_end_on_another_origin_can_read(broken_b04, parcel_id):
    """An unexpected error (here a band's broken zarr.json) is a JSON 500 with the CORS header, answered by the app:
    Starlette's handler of Exception answered outside the CORS middleware, so a dashboard read no body, and raised
    the error on to uvicorn, which logged it a second time and dropped the keep-alive connection."""
    origin = {"Origin": "https://dashboard.example.org"}
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    r = broken_b04.http.get(url, params={"bands": "B04"}, headers=origin)
    assert r.status_code == 500 and r.json()["error"] == "Internal", r.text
    assert r.headers["access-control-allow-origin"] == "*"
    ok = broken_b04.http.get(url, params={"bands": "B08"})
    assert ok.status_code == 200 and ok.json()["rows"]
    log = os.pread(broken_b04.log.fileno(), 1 << 20, 0).decode(errors="replace")
    assert f"GET {url} failed" in log and "Exception in ASGI application" not in log  # logged once, by the app


def test_a_fault_of_the_cube_is_logged_by_the_server_as_well_as_answered(broken_b04, parcel_id):
    """A damaged shard is a 500 CorruptShard naming it to the client, and a line in the server's log naming the
    request and the shard: it was answered alone, so the operator of a service whose clients got 500s (or 502s,
    503s from the store) found nothing in its log. A request's own fault (a 4xx) is not logged."""
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    r = broken_b04.http.get(url, params={"bands": "B11"})
    assert r.status_code == 500 and r.json()["error"] == "CorruptShard" and "/B11/c/" in r.json()["detail"], r.text
    assert broken_b04.http.get(url, params={"bands": "B99"}).status_code == 422
    log = os.pread(broken_b04.log.fileno(), 1 << 20, 0).decode(errors="replace")
    assert f"GET {url}: 500 CorruptShard: s2/31UFU/cube.zarr/" in log and "/B11/c/" in log, log
    assert "B99" not in log


def test_a_season_sheet_too_large_is_refused_before_reading(broken_b04, parcel_id):
    """The sheet's panels alone exceed the limit: 413 before B04 is read (it would be a 500 here); a sheet of
    that size for fewer dates is drawn, and one that fits read as before."""
    url = f"/collections/s2/parcels/{parcel_id}/season.png"
    r = broken_b04.http.get(url, params={"size": 512})
    assert r.status_code == 413 and "would be at least" in r.json()["detail"], r.text
    assert broken_b04.http.get(url, params={"size": 512, "time": "2024-05-02"}).status_code == 500  # read: 1 date
    r = broken_b04.http.get(url, params={"size": 16, "bands": "B08,B03,B02"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("body", "why"), [(b"POLYGON ((5.7 52.68, ...))", "Expecting value"),
                                           (b"[5.7, 52.68]", "Input should be a valid dictionary"),
                                           *[(bad, "no UTF-8 JSON, or nested too deep")  # were bare 400s
                                             for bad in (b'{"type": "Polygon\xff"}', b"[" * 10**5 + b"]" * 10**5)]])
def test_a_posted_body_that_is_not_geojson_says_what_to_post(http, body, why):
    r = http.post("/collections/s2/timeseries", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json() == {"error": "InvalidRequest", "detail": (
        f"the body is not GeoJSON ({why}): POST a geometry, Feature or FeatureCollection as JSON, with "
        f"Content-Type: application/json")}


def test_a_posted_body_over_the_limit_is_refused_before_it_is_parsed(http, parcels, parcel_id):
    """A POST body over MAX_BODY_BYTES is a 413 (with its CORS header), whether it says its length or streams it
    in chunks: the whole body was read and parsed, whatever its size."""
    from cube.service import MAX_BODY_BYTES

    geom = mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])
    feature = {"type": "Feature", "properties": {"note": "x" * MAX_BODY_BYTES}, "geometry": geom}
    body = json.dumps(feature).encode()
    headers = {"content-type": "application/json", "Origin": "https://dashboard.example.org"}
    r = http.post("/collections/s2/timeseries", content=body, headers=headers, params={"bands": "B04"})
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge", r.text
    assert "limit 32 MiB" in r.json()["detail"] and r.headers["access-control-allow-origin"] == "*"
    streamed = http.post("/collections/s2/timeseries", content=iter([body[:2**20], body[2**20:]]), headers=headers,
                         params={"bands": "B04"})  # no Content-Length: chunked
    assert streamed.status_code == 413 and streamed.json()["error"] == "RequestTooLarge", streamed.text
    feature["properties"] = {"note": "x" * 2**20}  # under the limit: measured
    r = http.post("/collections/s2/timeseries", json=feature, params={"bands": "B04"})
    assert r.status_code == 200 and r.json()["rows"]


def test_a_posted_body_that_stops_arriving_is_a_408_not_a_connection_held_for_ever(deployed, tiny_region):
    """A client that stopped sending its body (or said a Content-Length beyond it) held its connection and what it
    had sent, up to 32 MiB each, for ever: uvicorn bounds no body's reading. Now the body must be whole within
    --body-wait seconds (here 2), else a 408; a body sent at once is answered as before."""
    import socket
    from urllib.parse import urlsplit

    import geopandas as gpd

    where = urlsplit(deployed.base)
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(b"POST /collections/s2/timeseries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{\"type\": \"Feat")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    error = json.loads(body)
    assert error["error"] == "RequestTimeout" and "not whole within 2 s (it had 14 bytes)" in error["detail"]
    field = gpd.read_parquet(tiny_region.parcels).to_crs(4326).geometry.iloc[10]
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(field)}
    r = deployed.http.post("collections/s2/timeseries", json=feature, params={"bands": "B04"})
    assert r.status_code == 200 and r.json()["rows"], r.text[:300]


def test_posted_requests_beyond_twice_the_reads_wait_unread_then_are_a_503(tiny_cube, tiny_region):
    """Each posted body is held parsed (up to 32 MiB, some 230 MB of memory) until its answer, and the read turns
    bounded only the answers: 8 POSTs of 30 MiB at once held 2.4 GB, so enough clients took all the memory. Now
    at most twice --reads POSTs are in the service at once; the others wait, their bodies unread, up to --read-wait
    seconds, then are a 503 Busy with Retry-After, and the routes that read nothing still answer."""
    import socket
    from urllib.parse import urlsplit

    import geopandas as gpd
    import httpx

    server = ServedCommand(["serve", "--cube", tiny_cube, "--reads", "1", "--read-wait", "2"])
    where = urlsplit(server.base)
    field = gpd.read_parquet(tiny_region.parcels).to_crs(4326).geometry.iloc[10]
    feature = {"type": "Feature", "properties": {}, "geometry": mapping(field)}
    held = []
    try:
        for _ in range(2):  # twice the one read: each POST's body still arriving (--body-wait is 60 s)
            sock = socket.create_connection((where.hostname, where.port), timeout=60)
            held.append(sock)
            sock.sendall(b"POST /collections/s2/timeseries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 1000\r\n\r\n{\"type\": \"Feat")
        # on connections of their own, after those: the server's keep-alive one could be read before them
        with httpx.Client(base_url=server.base, timeout=60) as http:
            assert http.get("/collections/s2").status_code == 200  # reads nothing: answered
        with httpx.Client(base_url=server.base, timeout=60) as http:
            busy = http.post("/collections/s2/timeseries", json=feature, params={"bands": "B04"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "10", busy.text[:300]
        assert busy.json() == {"error": "ServiceBusy", "detail": (
            "the service holds 2 posted requests, as many as it keeps at once (twice --reads), and this one waited "
            "2 s before its body was read: ask again later")}
        for sock in held:  # the clients leave: their places are free
            sock.close()
        r = server.http.post("/collections/s2/timeseries", json=feature, params={"bands": "B04"})
        assert r.status_code == 200 and r.json()["rows"], r.text[:300]
    finally:
        for sock in held:
            sock.close()
        server.close()


def test_a_cube_gone_from_its_store_is_a_500_not_an_unknown_collection(tiny_cube, tiny_region, parcel_id, tmp_path):
    """The cube's folder gone while the service runs (deleted, a volume unmounted): every route answers 500
    CubeLost naming what was served, "/" too (a health check sees it), instead of 404s and an empty "/"; the cube
    back, it is served again."""
    import shutil

    cube = tmp_path / "cube"
    shutil.copytree(tiny_cube / "s2" / "_ledger", cube / "s2" / "_ledger")  # s2 alone, its versions
    server = ServedCommand(["serve", "--cube", cube, "--parcels", tiny_region.parcels, "--refresh", "0"])
    try:
        assert server.http.get("/collections/s2").status_code == 200
        assert server.http.get("/collections/s1").json()["error"] == "CubeNotFound"  # never held: unknown
        cube.rename(tmp_path / "gone")
        for url in ("/", "/collections/s2", f"/collections/s2/parcels/{parcel_id}/timeseries"):
            r = server.http.get(url)
            assert r.status_code == 500 and r.json()["error"] == "CubeLost", (url, r.text)
            assert "had version" in r.json()["detail"] and "gone from the store" in r.json()["detail"]
        (tmp_path / "gone").rename(cube)
        assert server.http.get("/collections/s2").status_code == 200
    finally:
        server.close()


def test_a_posted_time_series_of_too_many_rows_is_refused_before_reading(http, parcels):
    """1,000 parcels x 19 dates x 10 bands (190,000 rows) is a 413 before anything is read: under the read limit,
    it was measured and written as JSON (the demo's 1,000 parcels with every band: 197 MB, 1.5 GB more RSS,
    224 s); the same parcels with one band are answered."""
    from cube.service import MAX_POSTED_PARCELS, MAX_ROWS

    some = parcels.to_crs(4326).sample(MAX_POSTED_PARCELS, replace=True, random_state=0)
    many = {"type": "FeatureCollection", "features": [{"type": "Feature", "id": f"p{i}", "geometry": mapping(g)}
                                                      for i, g in enumerate(some.geometry)]}
    r = http.post("/collections/s2/timeseries", json=many)
    assert r.status_code == 413 and r.json()["error"] == "RequestTooLarge", r.text[:300]
    assert f"(limit {MAX_ROWS:,})" in r.json()["detail"]
    r = http.post("/collections/s2/timeseries", json=many, params={"bands": "NDVI", "stats": "mean"})
    assert r.status_code == 200, r.text[:300]


def test_an_answer_is_asked_again_with_its_etag_and_changes_with_the_version(tiny_cube, tiny_region, parcel_id,
                                                                             tmp_path):
    """A dashboard polling a parcel gets 304s, read from nothing, until an ingest commits; pinned answers are
    kept an hour unless they depend on the parcel file (no longer immutable: a cube may be built again at the
    same place)."""
    import json
    import shutil

    from cube import layout

    root = tmp_path / "cube"
    shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))
    first = committed_versions(_store(root), "s2")[-1]
    server = ServedCommand(["serve", "--cube", root, "--parcels", tiny_region.parcels, "--refresh", "0"])
    try:
        http, url = server.http, f"/collections/s2/parcels/{parcel_id}/timeseries"
        r = http.get(url, params={"bands": "B04"})
        tag = r.headers["etag"]
        assert r.status_code == 200 and r.headers["cache-control"] == "no-cache" and tag.startswith('W/"')
        again = http.get(url, params={"bands": "B04"}, headers={"If-None-Match": tag})
        assert again.status_code == 304 and not again.content and again.headers["etag"] == tag
        assert again.headers["x-cube-version"] == str(first)
        other = http.get(url, params={"bands": "B08"}, headers={"If-None-Match": tag})  # another answer
        assert other.status_code == 200 and other.headers["etag"] != tag and other.json()["rows"]
        pinned = http.get(url, params={"bands": "B04", "as_of": first})  # also its parcel's geometry in --parcels,
        assert pinned.headers["cache-control"] == "no-cache"  # which a restart may amend: asked again, with its tag
        info = http.get("/collections/s2", params={"as_of": first})  # a version alone never changes
        assert info.headers["cache-control"] == "public, max-age=3600"  # an hour: the cube may be built again
        for missing in (f"{url}?bands=XYZ", "/collections/s2/parcels/NOPE/timeseries", "/collections/s2/no/route"):
            assert http.get(missing, headers={"If-None-Match": "*"}).status_code in (404, 422)  # not a 304
        png = http.get(f"/collections/s2/parcels/{parcel_id}/season.png", params={"size": 16})
        assert png.status_code == 200 and "etag" in png.headers
        cors = http.get(url, params={"bands": "B04"}, headers={"Origin": "https://dashboard.example.org",
                                                               "If-None-Match": tag})
        assert cors.status_code == 304 and cors.headers["access-control-allow-origin"] == "*"
        assert "ETag" in cors.headers["access-control-expose-headers"].split(", ")
        assert http.get("/collections/s2/parcels/NOPE/timeseries", headers={"If-None-Match": tag}).status_code == 404

        record = json.loads((root / layout.ledger_key("s2", first)).read_text())  # a commit: the same data, anew
        (root / layout.ledger_key("s2", first + 1)).write_text(json.dumps({**record, "version": first + 1}))
        new = http.get(url, params={"bands": "B04"}, headers={"If-None-Match": tag})
        assert new.status_code == 200 and new.headers["etag"] != tag and new.json()["cube_version"] == first + 1
        assert http.get(url, params={"bands": "B04", "as_of": first},
                        headers={"If-None-Match": pinned.headers["etag"]}).status_code == 304
    finally:
        server.close()


def test_a_version_that_only_records_a_rejection_keeps_the_answers_etags(tiny_cube, tiny_region, parcel_id,
                                                                         tmp_path):
    """An ingest that added nothing and rejected a new product committed a version (to record the rejection), and
    every answer's ETag changed with it: each client polling a parcel downloaded its answer again, the same data.
    Answers about parcels are tagged by the version whose data they read now; the collection's description,
    which names the version, changes."""
    import shutil

    from cardcube.spec import ChunkLayout
    from ingest.job import ingest
    from tests.conftest import TEST_CHUNKS
    from tests.ingest.scene_edits import broken_copy, items_of, truncate, write_items

    root = tmp_path / "cube"
    shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))
    first = committed_versions(_store(root), "s2")[-1]
    server = ServedCommand(["serve", "--cube", root, "--parcels", tiny_region.parcels, "--refresh", "0"])
    try:
        http, url = server.http, f"/collections/s2/parcels/{parcel_id}/timeseries"
        asked = {url: {"bands": "B04"}, f"/collections/s2/parcels/{parcel_id}/season.png": {"size": 16},
                 "/collections/s2": {}}
        tags = {path: http.get(path, params=params).headers["etag"] for path, params in asked.items()}
        source = items_of(tiny_region.items, "sentinel-2-l2a")[0]
        bad = broken_copy(tiny_region.items, source, "BAD-etag", truncate, props={"datetime": "2024-01-01T10:00:00Z"})
        result = ingest(write_items(tiny_region.items, [bad], "etag-bad.json"), root,
                        chunks=ChunkLayout.parse(TEST_CHUNKS), progress=False)
        assert result.version == first + 1 and not result.added and result.rejected
        for path, tag in tags.items():
            again = http.get(path, params=asked[path], headers={"If-None-Match": tag})
            assert again.headers["x-cube-version"] == str(first + 1), path
            if path == "/collections/s2":  # it names the version: a new answer
                assert again.status_code == 200 and again.headers["etag"] != tag
                assert again.json()["version"] == first + 1
            else:
                assert again.status_code == 304 and again.headers["etag"] == tag, path
        fresh = http.get(url, params={"bands": "B04"})
        assert fresh.json()["cube_version"] == first + 1 and fresh.headers["etag"] == tags[url]
    finally:
        server.close()

def _series(http, url: str, **params) -> pd.DataFrame:
    r = http.get(url, params={"bands": "B04", "stats": "mean", **params})
    assert r.status_code == 200, r.text[:300]
    return _frame(r.json())


@pytest.mark.parametrize("refresh", ["0", "3600"])
def test_a_cube_built_again_at_the_same_place_is_served_as_the_new_one(appended_cube, tiny_cube, tiny_region,
                                                                       parcel_id, tmp_path, refresh):
    """A running service, its cube wiped and built again with other versions (a reprocessed archive): its kept
    shard indexes pointed into other objects (500 "blosc decompression" on every series until a restart), a
    pinned version answered the old version's dates with the new cube's values, and the new version 1 had the old
    one's ETag (a client kept the old numbers with 304s). Now the service sees the latest go back, drops what it
    kept, and tags answers with each version's commit time; within ``--refresh`` seconds, by the failed read of
    the latest it took for current (its hot slots are not in the new cube)."""
    import shutil

    root = tmp_path / "cube"
    shutil.copytree(appended_cube, root)  # 9 versions, the first of 5 dates
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    server = ServedCommand(["serve", "--cube", root, "--parcels", tiny_region.parcels, "--refresh", refresh])
    try:
        http = server.http
        old_latest, old_first = _series(http, url), _series(http, url, as_of=1)
        old_tag = http.get(url, params={"bands": "B04", "as_of": 1}).headers["etag"]
        assert old_first.time.nunique() == 5 < old_latest.time.nunique()
        shutil.rmtree(root)
        shutil.copytree(tiny_cube, root, ignore=shutil.ignore_patterns("_parcels"))  # 1 version of every date
        for as_of in (None, 1):
            got = _series(http, url, **({} if as_of is None else {"as_of": as_of}))
            want = parcel_timeseries(root, as_parcels(tiny_region.parcels).select([parcel_id]), bands=["B04"],
                                     stats=["mean"], as_of=as_of)
            assert got.time.nunique() == want.time.nunique() == old_latest.time.nunique()
            np.testing.assert_array_equal(got["mean"].to_numpy(float), want["mean"].to_numpy(float))
        again = http.get(url, params={"bands": "B04", "as_of": 1}, headers={"If-None-Match": old_tag})
        assert again.status_code == 200 and again.headers["etag"] != old_tag
    finally:
        server.close()


def test_the_latest_version_expired_while_served_is_looked_up_again(appended_cube, tiny_region, parcel_id,
                                                                    tmp_path, capsys):
    """The service took version 7 for the latest (it looks again every --refresh seconds); an ingest committed 8,
    compacting 7's hot buffer, and ``cardcube expire`` deleted 7 and its hot slots: a request for the latest was a
    404 VersionNotFound telling the client to read the latest. It now reads 8; a pinned 7 is still a 404."""
    import shutil

    from cardcube.cli import main
    from catalog import rebuild_catalog
    from cube import layout

    root = tmp_path / "cube"
    shutil.copytree(appended_cube, root)
    hot = {v: len(read_version(_store(root), "s2", v).tiles["31UFU"].hot) for v in (7, 8)}
    assert hot[7] > 0 == hot[8]  # 8 compacted 7's hot buffer
    (root / layout.ledger_key("s2", 9)).unlink()  # the history up to 8,
    held = (root / layout.ledger_key("s2", 8)).read_bytes()
    (root / layout.ledger_key("s2", 8)).unlink()  # and 8 not committed yet: the catalog of 7 (one of 9 says 9 is lost)
    (root / "s2" / "collection.json").unlink()
    rebuild_catalog(root)
    url = f"/collections/s2/parcels/{parcel_id}/timeseries"
    server = ServedCommand(["serve", "--cube", root, "--parcels", tiny_region.parcels, "--refresh", "3600"])
    try:
        assert server.http.get(url, params={"bands": "B04"}).headers["x-cube-version"] == "7"
        (root / layout.ledger_key("s2", 8)).write_bytes(held)  # the commit
        assert main(["expire", "--cube", str(root), "--older-than", "0"]) == 0, capsys.readouterr().err
        assert committed_versions(_store(root), "s2") == [8]
        r = server.http.get(url, params={"bands": "B04"})
        assert r.status_code == 200 and r.headers["x-cube-version"] == "8", r.text[:300]
        want = parcel_timeseries(root, as_parcels(tiny_region.parcels).select([parcel_id]), bands=["B04"])
        assert _frame(r.json()).time.nunique() == want.time.nunique() == 12
        pinned = server.http.get(url, params={"bands": "B04", "as_of": 7})
        assert pinned.status_code == 404 and pinned.json()["error"] == "VersionNotFound"
    finally:
        server.close()


def test_the_readmes_uvicorn_factory_serves_with_workers_and_stops_on_sigterm(tiny_cube, tiny_region, parcels,
                                                                                parcel_id, tmp_path):
    """The README's module for ``uvicorn --factory --workers``, as it gives it, run by uvicorn with two workers: the
    same numbers as ``cardcube serve``'s Python API, a posted parcel of 600 vertices (its buffer tried in a child
    process of a worker), and on SIGTERM a clean stop."""
    import signal
    import socket
    import subprocess
    import sys
    import textwrap
    import time
    from pathlib import Path

    import httpx

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    module = re.search(r"```python\n( *# cardcube_app\.py: uvicorn --factory .*?) *```", readme, re.S).group(1)
    (tmp_path / "cardcube_app.py").write_text(textwrap.dedent(module))  # a block within a list item, indented
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "cardcube_app:app", "--workers", "2",
                                 "--port", str(port)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{tmp_path}",
                                     "CARDCUBE_CUBE": str(tiny_cube), "CARDCUBE_PARCELS": str(tiny_region.parcels)})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if http.get("/").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            got = _frame(http.get(f"/collections/s2/parcels/{parcel_id}/timeseries", params={"bands": "B04,NDVI"}
                                  ).json())
            _assert_same(got, parcel_timeseries(tiny_cube, [parcel_id], registry=parcels, bands=["B04", "NDVI"]))
            outline = parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id]
            dense = outline.segmentize(outline.length / 600)
            assert len(dense.exterior.coords) > 500  # the buffer is tried in a child process from 500 vertices
            r = http.post("/collections/s2/timeseries", json=mapping(dense), params={"bands": "NDVI"})
            assert r.status_code == 200 and r.json()["parcels"][0]["status"] == "ok", r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        text = log.read_text()
        assert "Finished server process" in text and "Traceback" not in text and "without limits" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_lets_the_requests_held_finish_and_refuses_new_ones(tiny_cube, parcels, parcel_id):
    """The README's "Running it": SIGTERM (a process manager's stop) while a POST is arriving: new connections are
    refused at once, the POST held is answered whole once its body is in, then the service exits 0, a stop asked
    for (it exited 143 "terminated", as a run cut short: systemd listed the unit as failed)."""
    import signal
    import socket
    import time

    server = ServedCommand(["serve", "--cube", tiny_cube])
    try:
        body = json.dumps(mapping(parcels.set_index("parcel_id").to_crs(4326).geometry[parcel_id])).encode()
        with socket.create_connection(("127.0.0.1", server.http.base_url.port)) as held:
            held.sendall(f"POST /collections/s2/timeseries?bands=NDVI HTTP/1.1\r\nHost: cardcube\r\nContent-Type: "
                         f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body[:100])
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while True:  # the listening socket closes as the shutdown begins
                try:
                    socket.create_connection(("127.0.0.1", server.http.base_url.port), timeout=5).close()
                except ConnectionRefusedError:
                    break
                assert time.monotonic() < deadline, "still taking connections"
                time.sleep(0.1)
            assert server.proc.poll() is None  # the request held keeps it serving
            held.sendall(body[100:])
            answer = b""
            while chunk := held.recv(1 << 16):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(payload)["rows"], answer[:300]
        assert server.proc.wait(timeout=60) == 0
        assert b"cardcube serve: stopped (SIGTERM)" in os.pread(server.log.fileno(), 1 << 20, 0)
    finally:
        server.close()
