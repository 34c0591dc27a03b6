"""The build report: JSON round trip, latest copies, the HTML timeline, the text table."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from sitedist.build.report import critical_path, format_report, load_report, write_report
from sitedist.build.scheduler import Job, JobRecord, RunResult, run_jobs
from sitedist.errors import StoreError


def noop(ctx):
    pass


def fail(ctx):
    raise RuntimeError("make: *** [all] Error 2\nmore detail")


@pytest.fixture
def run_result():
    jobs = [Job("zlib/1-aaa", (), noop, label="zlib 1"), Job("hdf5/2-bbb", ("zlib/1-aaa",), fail, label="hdf5 2"),
            Job("netcdf/3-ccc", ("hdf5/2-bbb",), noop, label="netcdf 3"),
            Job("fftw/4-ddd", (), noop, label="fftw 4"), Job("gsl/5-eee", ("fftw/4-ddd",), noop, label="gsl 5")]
    return run_jobs(jobs, slots=2, keep_going=True)


def meta_for(tmp_path, result):
    nodes = {key: {"log": str(tmp_path / key / "build.log"), "prefix": str(tmp_path / "store" / key)}
             for key in result.labels}
    return {"config": "site.yml", "store": str(tmp_path / "store"), "slots": 2, "started": 1700000000.0,
            "finished": 1700000060.0, "nodes": nodes}


def test_json_round_trip_and_latest(tmp_path, run_result):
    reports = tmp_path / "reports"
    paths = write_report(reports, run_result, meta_for(tmp_path, run_result))
    assert re.fullmatch(r"\d{8}T\d{6}Z\.json", os.path.basename(paths["json"]))
    assert os.path.splitext(paths["html"])[0] == os.path.splitext(paths["json"])[0]
    report = load_report(reports)
    with open(paths["json"]) as f:
        assert json.load(f) == report
    assert load_report(reports, os.path.basename(paths["json"])[:-5]) == report
    assert (reports / "latest.html").read_text() == open(paths["html"]).read()
    assert not [n for n in os.listdir(reports) if ".tmp" in n]

    states = {p["key"]: p["state"] for p in report["packages"]}
    assert states == {"zlib/1-aaa": "done", "hdf5/2-bbb": "failed", "netcdf/3-ccc": "skipped",
                      "fftw/4-ddd": "done", "gsl/5-eee": "done"}
    by_key = {p["key"]: p for p in report["packages"]}
    assert by_key["hdf5/2-bbb"]["error"].startswith("make: *** [all] Error 2")
    assert by_key["hdf5/2-bbb"]["log"] == str(tmp_path / "hdf5/2-bbb" / "build.log")
    assert by_key["netcdf/3-ccc"]["cause"] == "hdf5/2-bbb"
    assert by_key["gsl/5-eee"]["deps"] == ["fftw/4-ddd"]
    assert report["summary"]["elapsed"] == 60.0 and not report["ok"]
    assert report["meta"]["config"] == "site.yml" and "nodes" not in report["meta"]


def test_second_report_in_the_same_second_gets_its_own_name(tmp_path, run_result):
    meta = meta_for(tmp_path, run_result)
    first, second = (write_report(tmp_path, run_result, meta) for _ in range(2))
    assert first["json"] != second["json"] and os.path.exists(first["json"]) and os.path.exists(second["json"])


def test_html_timeline(tmp_path, run_result):
    paths = write_report(tmp_path, run_result, meta_for(tmp_path, run_result))
    page = open(paths["html"]).read()
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    svg = ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])  # well-formed inline SVG
    ns = "{http://www.w3.org/2000/svg}"
    rects = [r for r in svg.iter(ns + "rect") if "job" in r.get("class", "").split()]
    assert len(rects) == len(run_result.records) == 4
    titles = {r.find(ns + "title").text.split(" (")[0]: r for r in rects}
    assert set(titles) == {"zlib 1", "hdf5 2", "fftw 4", "gsl 5"}
    assert "failed" in titles["hdf5 2"].get("class").split()
    critical = {label for label, r in titles.items() if "critical" in r.get("class").split()}
    assert critical in ({"zlib 1", "hdf5 2"}, {"fftw 4", "gsl 5"})
    for r in rects:
        assert float(r.get("width")) >= 1 and float(r.get("x")) >= 0


def test_critical_path_follows_the_longest_chain():
    records = [JobRecord("a", "a", "done", 0, 0, 10, 1), JobRecord("b", "b", "done", 1, 0, 2, 1),
               JobRecord("c", "c", "done", 1, 2, 5, 1), JobRecord("d", "d", "done", 0, 10, 11, 1),
               JobRecord("e", "e", "done", 1, 5, 20, 1)]
    result = RunResult(succeeded=list("abcde"), records=records,
                       deps={"a": (), "b": (), "c": ("b",), "d": ("a", "c"), "e": ("c",)})
    assert critical_path(result) == ["b", "c", "e"]  # 2 + 3 + 15 beats a + d = 11
    assert critical_path(RunResult()) == []


def test_format_report_names_failures_logs_and_skips(tmp_path, run_result):
    write_report(tmp_path, run_result, meta_for(tmp_path, run_result))
    text = format_report(load_report(tmp_path))
    lines = text.splitlines()
    assert lines[0].startswith("build report: 2023-11-14 22:13:20 UTC to 2023-11-14 22:14:20 UTC (1m00s, 2 slots)")
    header = next(line for line in lines if line.startswith("PACKAGE"))
    assert header.split() == ["PACKAGE", "STATE", "TIME", "LOG"]
    row = next(line for line in lines if line.startswith("hdf5 2 "))
    assert row.split()[2] == "failed" and row.endswith(str(tmp_path / "hdf5/2-bbb" / "build.log"))
    failed = lines.index("failed:")
    assert lines[failed + 1] == "  hdf5 2: make: *** [all] Error 2"
    assert lines[failed + 2] == "    log: " + str(tmp_path / "hdf5/2-bbb" / "build.log")
    assert lines[lines.index("skipped:") + 1] == "  netcdf 3: needs hdf5/2-bbb, which failed"
    assert lines[-1] == "3 built, 1 failed, 1 skipped"


def test_missing_or_corrupt_report_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no build report"):
        load_report(tmp_path)
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot read the build report"):
        load_report(tmp_path)
