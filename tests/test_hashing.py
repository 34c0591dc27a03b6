"""Golden vectors of the hash protocol: a release that changes any of these changes every artifact id
in every store. Change them only together with hashing.PROTOCOL (or resolve.BUILDER), on purpose, and
say so in admin_docs/hash-protocol.md."""

import pytest

from sitedist.core.hashing import PROTOCOL, artifact_id, canonical, digest
from sitedist.host.probe import Compiler
from sitedist.host.toolchains import Host, Toolchain, _compiler_package, tool_package
from sitedist.host.tools import Tool
from sitedist.spec.config import load_config
from sitedist.spec.resolve import BUILDER, Resolver

from conftest import site_config

GCC = Compiler(name="gcc", version="12.2.0", prefix="/usr", cc="/usr/bin/gcc", cxx="/usr/bin/g++",
               fc="/usr/bin/gfortran", languages=("c", "c++", "fortran"), triple="x86_64-linux-gnu")


TOOLS = {"make": Tool(name="make", version="4.3", prefix="/usr", executables=(("make", "/usr/bin/make"),)),
         "cmake": Tool(name="cmake", version="3.25.1", prefix="/usr", executables=(("cmake", "/usr/bin/cmake"),))}


def test_protocol_versions():
    assert PROTOCOL == 2 and BUILDER == 3


def test_canonical_form():
    doc = {"b": [1, "é", None, True], "a": {"z": "x", "y": {}}}
    assert canonical(doc) == '{"a":{"y":{},"z":"x"},"b":[1,"é",null,true]}'.encode("utf-8")
    assert digest(doc) == "6c85a49ae4993683e460fd957f5dc337d59b2c0a249c2a0a1a28087c2b056687"


@pytest.mark.parametrize("doc, expected", [
    # base32(sha256(b"{}")) = "IQJW7I2VWNTYUEKGVULP..." (check: python3 -c 'import base64,hashlib;
    # print(base64.b32encode(hashlib.sha256(b"{}").digest())[:20].lower())')
    ({}, "iqjw7i2vwntyuekgvulp"),
    ({"protocol": 1, "name": "zlib"}, "uuab73e7rhjuydmpqdch"),
])
def test_artifact_id_vectors(doc, expected):
    assert artifact_id(doc) == expected


def test_floats_are_refused():
    with pytest.raises(TypeError):
        canonical({"x": 1.5})


def resolve(tmp_path, packages, compiler=GCC, tools=TOOLS):
    config = load_config(site_config(tmp_path, packages))
    pkg = _compiler_package(compiler)
    host = Host(packages={"gcc": pkg}, toolchains={"default": Toolchain("default", pkg, default=True)},
                tools={name: [tool_package(t)] for name, t in tools.items()})
    return Resolver(config, host, {"generic": "x86_64"}).plan()


def test_real_recipes_golden_ids(tmp_path):
    plan = resolve(tmp_path, {"libpng": None, "zlib": None, "libyaml": "{options: {shared: false}}"})
    ids = {n.name: n.aid for n in plan.nodes}
    assert ids == GOLDEN, f"hash protocol changed: {ids}"


def test_ids_contain_no_store_path(tmp_path):
    a = resolve(tmp_path / "a", {"libpng": None})
    b = resolve(tmp_path / "b", {"libpng": None})
    assert [n.aid for n in a.nodes] == [n.aid for n in b.nodes]
    for node in a.nodes:
        assert str(tmp_path) not in canonical(node.doc).decode()


def test_compiler_change_changes_every_package_id(tmp_path):
    old = {n.name: n.aid for n in resolve(tmp_path, {"libpng": None}).nodes}
    newer = Compiler(**{**GCC.__dict__, "version": "12.3.0"})
    new = {n.name: n.aid for n in resolve(tmp_path, {"libpng": None}, newer).nodes}
    assert all(old[k] != new[k] for k in old if k != "make"), "make is a host tool: not built with the compiler"
    moved = Compiler(**{**GCC.__dict__, "prefix": "/opt/gcc", "cc": "/opt/gcc/bin/gcc"})
    assert {n.name: n.aid for n in resolve(tmp_path, {"libpng": None}, moved).nodes} == old, \
        "a compiler's path must not enter the hash"


def test_tool_version_changes_ids_of_what_it_builds_and_its_path_does_not(tmp_path):
    old = {n.name: n.aid for n in resolve(tmp_path, {"libyaml": None, "zlib": None}).nodes}
    newer = dict(TOOLS, cmake=Tool(name="cmake", version="3.28.3", prefix="/usr", executables=TOOLS["cmake"].executables))
    new = {n.name: n.aid for n in resolve(tmp_path, {"libyaml": None, "zlib": None}, tools=newer).nodes}
    assert new["libyaml"] != old["libyaml"] and new["zlib"] == old["zlib"], "only the cmake build changes"
    moved = dict(TOOLS, cmake=Tool(name="cmake", version="3.25.1", prefix="/opt/cmake",
                                   executables=(("cmake", "/opt/cmake/bin/cmake"),)))
    assert {n.name: n.aid for n in resolve(tmp_path, {"libyaml": None, "zlib": None}, tools=moved).nodes} == old, \
        "a tool's path must not enter the hash"


# Protocol 2 (build tools in the document, after sitedist 0.1.0), builder 2: recomputed from the same
# recipes and compiler, with make 4.3 and cmake 3.25.1 as host tools; every package id changed because the
# protocol number and the new "tools" field are part of every document (host packages' ids change with the
# protocol number only). Protocol 1, builder 2 had gcc xx4cizikyswm6o5xc5wl, zlib cmsszxrhxrs53nj3m52l,
# libpng k7tfo6wq47l4o7i5inhk, libyaml czccjx3gqjcdc36n7lgq. Protocol 2, builder 2 had zlib
# 3zgpfcfcobf4vb3szq2v, libpng yrzy5altrdp63ahbqavb, libyaml rnzj6zmtasldnvpp7zr5.
GOLDEN = {"gcc": "lrkbvyfz2kqsfpusxuhs", "make": "jgejpr67uz3q7uzkd3ua", "cmake": "fhcfsa4dkacswg4r3lr5",
          "zlib": "2jzddogtowsjaqh5i5ne", "libpng": "xne2o54zuizbyxxjxe63", "libyaml": "gfwc54h6bsypeaye5bkt"}
