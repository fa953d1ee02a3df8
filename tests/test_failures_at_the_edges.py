"""Failures outside cardcube's own checks, as a user meets them: an S3 endpoint that cannot be reached, a port
in use, a parcel file that is not one. Each is one clear error (exit status 2 on the command line)."""

from __future__ import annotations

import socket
import threading

import pandas as pd
import pytest

from cardcube.cli import main
from cardcube.errors import ParcelFileError, StoreError, StoreUnavailableError
from cardcube.storage import list_keys, open_store, read_bytes
from cube.ledger import read_version
from cube.parcels import read_parcels


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hangs_up_on_the_first(listener: socket.socket) -> threading.Thread:
    """A thread that takes the first connection to ``listener`` and closes it (the answer open_store's check
    waits for), then leaves the later ones unanswered: a store that stops answering once opened."""
    def serve() -> None:
        conn, _ = listener.accept()
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_an_unreachable_s3_endpoint_is_a_store_error(monkeypatch, capsys):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StoreUnavailableError, match=f"cannot reach the S3 endpoint {endpoint} of s3://bucket/cube"):
        open_store("s3://bucket/cube", read_only=True, storage_options={"endpoint_url": endpoint})
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the command line, endpoint from the environment
    assert main(["expire", "--cube", "s3://bucket/cube", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip().endswith("Connection refused")
    with socket.socket() as gone:  # an endpoint that goes away after the store is opened: botocore's error
        gone.bind(("127.0.0.1", 0))
        gone.listen()
        _hangs_up_on_the_first(gone)
        store = open_store("s3://bucket/cube", read_only=True, storage_options={
            "endpoint_url": f"http://127.0.0.1:{gone.getsockname()[1]}", "key": "k", "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}}})  # the default retries take up to a minute
    with pytest.raises(StoreUnavailableError, match=r"cannot read s2/x.json from s3://bucket/cube: the store cannot be "
                                                    r"reached or does not answer \(EndpointConnectionError"):
        read_bytes(store, "s2/x.json")
    with pytest.raises(StoreError, match="cannot list"):
        list_keys(store, "s2/")
    with pytest.raises(StoreError):
        read_version(store, "s2")


def test_a_store_opened_with_a_timeout_that_does_not_answer_is_unavailable():
    """An endpoint that takes connections and never answers (a hung store): with ``timeout`` the read fails after
    its connect and read timeouts and one retry, as a StoreUnavailableError naming the store, not a minute later."""
    from cardcube.errors import InvalidRequestError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshakes; nobody ever reads
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        _hangs_up_on_the_first(silent)
        store = open_store("s3://bucket/cube", read_only=True, timeout=1.0,
                           storage_options={"endpoint_url": endpoint, "key": "k", "secret": "s"})
        with pytest.raises(StoreUnavailableError, match=r"cannot read s2/x.json from s3://bucket/cube: the store "
                                                        r"cannot be reached or does not answer \(ReadTimeoutError"):
            read_bytes(store, "s2/x.json")
    with pytest.raises(InvalidRequestError, match="a store timeout of 0 s"):
        open_store("s3://bucket/cube", timeout=0, storage_options={"endpoint_url": endpoint})


def test_an_s3_endpoint_without_its_scheme_is_named_so(monkeypatch, capsys):
    from cardcube.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=r"the S3 endpoint minio:9000 of s3://bucket/cube is no http:// or "
                                                  r"https:// URL: write it with its scheme, e.g. http://minio:9000"):
        open_store("s3://bucket/cube", read_only=True, storage_options={"endpoint_url": "minio:9000"})
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:9000")  # not a refused connection to port 80
    assert main(["versions", "--cube", "s3://bucket/cube"]) == 2
    assert capsys.readouterr().err.strip().endswith("e.g. http://127.0.0.1:9000")


def test_no_s3_credentials_say_where_they_are_looked_for(s3_bucket, tmp_path):
    """A command run without keys (a pod whose Secret was not mounted): one line naming the variables. (A command
    of its own: fsspec keeps the S3 clients of a process, with the keys of their time.)"""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": s3_bucket.server.endpoint_url}
    run = subprocess.run([sys.executable, "-m", "cardcube.cli", "versions", "--cube", s3_bucket.url_for("cube")],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.strip().endswith("no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                                       "AWS_PROFILE), or pass key and secret in storage_options")


def test_a_missing_bucket_is_named_with_what_to_do(s3_bucket, tiny_region, monkeypatch, capsys):
    for name, value in s3_bucket.server.environment().items():
        monkeypatch.setenv(name, value)
    missing = f"{s3_bucket.name}-not-made"
    assert main(["versions", "--cube", f"s3://{missing}/cube"]) == 2  # reading
    assert capsys.readouterr().err.strip().endswith(f"the bucket {missing} does not exist; create it first (cardcube "
                                                    f"creates no buckets) or correct the URL")
    assert main(["ingest", str(tiny_region.items), "--cube", f"s3://{missing}/cube", "--quiet"]) == 2  # writing
    assert f"the bucket {missing} does not exist; create it first" in capsys.readouterr().err


def test_a_port_in_use_fails_before_the_banner(tiny_cube, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--cube", str(tiny_cube), "--port", str(port)]) == 2
        captured = capsys.readouterr()
        assert f"cannot listen on 127.0.0.1:{port}" in captured.err and "serving" not in captured.out
        assert main(["catalog", "serve", "--cube", str(tiny_cube), "--port", str(port)]) == 2
        assert "cannot listen" in capsys.readouterr().err


def test_a_file_that_is_no_parcel_file(tmp_path):
    garbage = tmp_path / "parcels.gpkg"
    garbage.write_bytes(b"not a geopackage")
    with pytest.raises(ParcelFileError, match="is not a readable parcel file"):
        read_parcels(garbage)
    with pytest.raises(ParcelFileError, match="no parcel file at"):
        read_parcels(tmp_path / "missing.parquet")
    pd.DataFrame({"parcel_id": ["a"], "rain_mm": [3.0]}).to_parquet(tmp_path / "weather.parquet")
    with pytest.raises(ParcelFileError, match=r"weather\.parquet is not a GeoParquet file \(no geometry column\)"):
        read_parcels(tmp_path / "weather.parquet")
    pd.DataFrame({"parcel_id": ["a"], "crop_code": [259]}).to_csv(tmp_path / "register.csv", index=False)
    with pytest.raises(ParcelFileError, match=r"register\.csv has no geometry column: give the parcels with their "):
        read_parcels(tmp_path / "register.csv")  # an AttributeError ('DataFrame' object has no attribute 'crs')


def test_a_folder_given_for_the_parcels_is_named(tmp_path):
    """A folder given for --parcels (the region's folder, not its parcels.gpkg) said GDAL's "not recognized as being
    in a supported file format ... prefixing the file path with '<DRIVER>:', e.g. 'CSV:path'"."""
    (tmp_path / "region").mkdir()
    with pytest.raises(ParcelFileError, match=r"region is a folder, of no parcel file GDAL reads: give the parcel"):
        read_parcels(tmp_path / "region")


def test_a_json_command_answers_its_error_in_json(tmp_path, capsys):
    """With --json, an error printed nothing on stdout: a script parsing the command's output met an empty one
    (JSONDecodeError) in place of the error, which was on stderr alone."""
    import json

    (tmp_path / "empty").mkdir()
    assert main(["versions", "--cube", str(tmp_path / "empty"), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "CubeNotFound",
                                        "detail": f"no 's2' cube at {tmp_path / 'empty'}: no committed version"}
    assert captured.err.startswith("cardcube versions: error: no 's2' cube at")  # the line as without --json
    assert main(["layers", str(tmp_path / "missing"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == "InvalidRequest"
    assert main(["versions", "--cube", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().out == ""  # without --json, stdout is left alone


def test_an_area_or_point_outside_the_cube_is_named(tiny_cube):
    from shapely.geometry import Point

    from cardcube.errors import AreaOutsideCubeError
    from cube.chips import chip
    from cube.dataset import open_cube

    with pytest.raises(AreaOutsideCubeError, match=r"the area \(5.0, 40.0, 5.1, 40.1\) \(in EPSG:4326\)"):
        open_cube(tiny_cube, bbox=(5.0, 40.0, 5.1, 40.1), crs="EPSG:4326")
    with pytest.raises(AreaOutsideCubeError, match=r"the point at lon 5.05, lat 40.05 \(EPSG:4326\): no tile"):
        chip(tiny_cube, Point(5.05, 40.05), size=16)


def test_a_ledger_of_another_format_is_named(tiny_cube, tiny_region, tmp_path, capsys):
    import json
    import shutil

    from cardcube.errors import CorruptDocumentError

    cube = tmp_path / "cube"
    shutil.copytree(tiny_cube, cube)
    (record,) = sorted((cube / "s1" / "_ledger").glob("*.json"))[-1:]
    record.write_text(json.dumps({**json.loads(record.read_text()), "format": "cardcube-ledger/99"}))
    with pytest.raises(CorruptDocumentError, match=rf"{record.name} in .* has ledger format 'cardcube-ledger/99'"):
        read_version(open_store(cube), "s1")
    assert main(["timeseries", "--cube", str(cube), "--collection", "s1", "--parcels", str(tiny_region.parcels),
                 "--out", str(tmp_path / "ts.csv")]) == 2
    assert "has ledger format 'cardcube-ledger/99', not cardcube-ledger/1" in capsys.readouterr().err


def test_bad_synthetic_settings_are_one_line_and_v_shows_the_traceback(tmp_path, capsys):
    from cardcube.errors import InvalidRequestError

    assert main(["synth", "--tiny", "--cloudiness", "2", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == "cardcube synth: error: cloudiness 2.0 must be within [0, 1]"
    with pytest.raises(InvalidRequestError):
        main(["-v", "synth", "--tiny", "--cloudiness", "2", str(tmp_path / "out")])


def _help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    """``cardcube COMMAND --help``'s text, its lines joined (argparse wraps them at the terminal's width): the parser
    the console entry point runs, called in this process (an interpreter's start costs more than the help), as wide
    as a command whose output is a pipe (COLUMNS, else 80: a terminal running pytest would wrap it otherwise)."""
    import os

    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
        patch.setenv("COLUMNS", os.environ.get("COLUMNS", "80"))
        main([*command, "--help"])
    captured = capsys.readouterr()
    assert done.value.code == 0 and captured.err == "", captured.err
    return " ".join(captured.out.split())


def test_the_help_says_what_v_shows_and_what_options_take_and_cost(capsys):
    """``cardcube --help`` gave -v as "log progress details" only, while the README sends a user to ``cardcube -v
    COMMAND`` for an error's traceback; ``ingest --help`` wrote --tiles as T31UFU,..., the README and the tests
    31UFU,31UGU (both are read); ``extract --help`` said a --time-block below the time chunk decodes each chunk
    "once per run"."""
    from functools import partial

    help_of = partial(_help_of, capsys)
    assert "-v, --verbose log progress details, and show the traceback of an error" in help_of()
    assert "[--tiles 31UFU,...]" in help_of("ingest")
    # --time-block: "decoding each chunk once per run" read as once per command, the reverse of what it costs
    assert "below the time chunk each chunk is decoded again for every run of dates it holds" in help_of("extract")
    # every age with its unit: a bare "--older-than 7", meant as a week, is refused (tests/ingest/test_expire.py)
    assert "7d (default), 12h, 30m, 45s, or 0 (all)" in help_of("expire")
    assert "30d, 12h, 30m, 45s, or 0 (all)" in help_of("layers")


def test_the_help_names_the_defaults_the_commands_use(capsys):
    """``chip --help`` gave --scale's default as 4, while a --sheet's panels are drawn at 3 (its error then named
    "at scale 3", a scale never given); ``synth --help`` named no default of --size-km, --start and --end (the
    demo's 10 km, March to October; --tiny's 2 km, May to July); ``flag --help`` did not say that without
    --grassland two of its three markers are not checked; ``verify --help`` that every fault is listed, where the
    first 20 are and the others counted."""
    from functools import partial

    from cardcube.synth.config import SynthConfig
    from cube.chips import SHEET_SCALE

    help_of = partial(_help_of, capsys)
    assert f"(default 4, {SHEET_SCALE} for a --sheet's panels;" in help_of("chip")
    from cardcube.storage import LISTED_LINES

    assert LISTED_LINES == 20  # as verify --help says
    demo, tiny = SynthConfig.demo(), SynthConfig.tiny()
    synth = help_of("synth")
    assert f"in km (default {demo.size_m[0] / 1000:g}; --tiny: {tiny.size_m[0] / 1000:g})" in synth
    assert f"default {demo.start}, --tiny: {tiny.start};" in synth
    assert f"default {demo.end}, --tiny: {tiny.end})" in synth
    assert "(without them, bare_soil and no_mowing are not checked)" in help_of("flag")
    # it said "(each listed)": the first 20 are, the others counted (cube.verify's summary, LISTED_LINES)
    assert "(listed: the first 20, the others counted; --json names each)" in help_of("verify")


def test_a_reader_of_the_output_that_goes_away_is_no_error(tiny_region, tmp_path):
    """``cardcube ingest ... | head -c 0`` (or ``| grep -q``): the pipe's reader leaves before the summary is
    written. The ingest is committed all the same, and the command ends as a process killed by SIGPIPE (141 under
    ``set -o pipefail``), saying nothing of an error: not "error: BrokenPipeError" with status 2 as if it failed."""
    import subprocess
    import sys

    from cardcube.storage import open_store
    from cube.ledger import committed_versions
    from tests.ingest.scene_edits import items_of, write_items

    cube = tmp_path / "cube"
    # two scenes: the summary is written after the commit whatever the scenes, and the region's all cost seconds
    items = write_items(tiny_region.items, items_of(tiny_region.items, "sentinel-1-card-bs")[:2], "pipe-s1.json")
    run = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -m cardcube.cli ingest '
                          f'"{items}" --cube "{cube}" --collection s1 --quiet | head -c 0'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 141 and "error" not in run.stderr.lower() and "Exception" not in run.stderr, run.stderr
    assert committed_versions(open_store(cube, read_only=True), "s1") == [1]


@pytest.fixture
def tls_proxy(s3_server, tmp_path):
    """The session's S3 server behind TLS, with a certificate signed by a CA of the test's own (an on-premises Ceph
    gateway's): the proxy and the CA's certificate file."""
    from cardcube.testing.s3proxy import start_s3_proxy
    from cardcube.testing.tls import loopback_tls

    tls = loopback_tls(tmp_path / "tls")
    with start_s3_proxy(s3_server.endpoint_url, tls=tls.server_context) as proxy:
        yield proxy, tls.ca_file


def test_an_endpoint_of_the_wrong_scheme_or_an_untrusted_certificate_is_named_at_once(s3_bucket, tls_proxy,
                                                                                      monkeypatch, capsys):
    """``https://`` to a plain HTTP port, ``http://`` to a TLS one and a certificate of a CA the client does not
    trust passed the endpoint check: each request then failed its handshake or had its connection closed, and
    botocore's and s3fs's retries spent 30 s to 4.5 minutes on it before "the store cannot be reached"."""
    from cardcube.errors import InvalidRequestError
    from cardcube.storage import write_bytes

    proxy, ca_file = tls_proxy
    plain, tls_port = s3_bucket.server.port, proxy.port
    url = s3_bucket.url_for("cube")
    keys = {"key": "testing", "secret": "testing"}
    with pytest.raises(InvalidRequestError, match=rf"https://127.0.0.1:{plain} of {url} answers in plain HTTP, not "
                                                  rf"TLS: write it http://127.0.0.1:{plain}"):
        open_store(url, storage_options={"endpoint_url": f"https://127.0.0.1:{plain}", **keys})
    with pytest.raises(InvalidRequestError, match=rf"http://127.0.0.1:{tls_port} of {url} answers with TLS, not "
                                                  rf"plain HTTP: write it https://127.0.0.1:{tls_port}"):
        open_store(url, storage_options={"endpoint_url": f"http://127.0.0.1:{tls_port}", **keys})
    untrusted = {"endpoint_url": f"https://127.0.0.1:{tls_port}", **keys}
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(StoreError, match=r"has a TLS certificate the S3 client does not trust \(unable to get local "
                                         r"issuer certificate\): give the certificate of the CA that signed it, "
                                         r"AWS_CA_BUNDLE=/path/ca.pem"):
        open_store(url, storage_options=untrusted)
    for trusted in ({**untrusted, "client_kwargs": {"verify": str(ca_file)}},  # the CA given, or no check asked for
                    {**untrusted, "client_kwargs": {"verify": False}}):
        write_bytes(open_store(url, storage_options=trusted), "a.json", b"{}")
    for name, value in {**s3_bucket.server.environment(proxy.endpoint_url), "AWS_CA_BUNDLE": str(ca_file)}.items():
        monkeypatch.setenv(name, value)  # the command line: the endpoint, keys and CA from the environment
    assert main(["versions", "--cube", url]) == 2
    assert capsys.readouterr().err.strip().endswith(f"no 's2' cube at {url}: no committed version")


def test_a_store_refusing_a_request_names_the_keys_not_retries(s3_bucket, s3_proxy):
    """A 403 (wrong keys, or keys that may only read) said "(after retries): PermissionError: Access Denied": it is
    not retried, and what to check is the keys."""
    from cardcube.storage import write_bytes

    store = open_store(s3_bucket.url_for("cube"), storage_options=s3_proxy.storage_options())
    s3_proxy.fail_next(1, status=403, code="AccessDenied", methods=["PUT"])
    with pytest.raises(StoreError, match=r"^cannot write s2/_ledger/1.json to s3://\S+/cube: the store refused it "
                                         r"\(403 AccessDenied: Injected.*\): the S3 keys in use \(AWS_ACCESS_KEY_ID "
                                         r"and AWS_SECRET_ACCESS_KEY.*\) are wrong, or not allowed to do this there$"):
        write_bytes(store, "s2/_ledger/1.json", b"{}")
    assert s3_proxy.snapshot().requests["PUT"] == 1


def test_a_store_gone_in_the_middle_of_a_read_is_one_error_line(tiny_cube, tiny_region, s3_bucket):
    """A store that went away while a command read its shards: a failed read's siblings were left running in zarr's
    I/O loop, and at exit each printed a traceback after the error line ("Exception ignored in: <coroutine ...>
    ValueError: ... was created in a different Context")."""
    import os
    import subprocess
    import sys
    import time

    import s3fs

    from cardcube.testing.s3proxy import start_s3_proxy

    s3fs.S3FileSystem(**s3_bucket.storage_options()).put(f"{tiny_cube}/", f"{s3_bucket.name}/cube/", recursive=True)
    with start_s3_proxy(s3_bucket.server.endpoint_url, latency_s=0.2) as proxy:
        env = {**os.environ, **s3_bucket.server.environment(proxy.endpoint_url)}
        run = subprocess.Popen([sys.executable, "-m", "cardcube.cli", "timeseries", "--cube", s3_bucket.url_for("cube"),
                                "--parcels", str(tiny_region.parcels), "--collection", "s1", "--out",
                                str(tiny_cube.parent / f"{s3_bucket.name}.csv")], env=env, stderr=subprocess.PIPE,
                               text=True)
        while proxy.snapshot().requests.get("GET", 0) < 30 and run.poll() is None:  # reading shards
            time.sleep(0.02)
    _, err = run.communicate(timeout=120)  # the proxy stopped: its port refuses every retry
    assert run.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("cardcube timeseries: error: cannot read shards of s1/") and "cannot be reached" in err
