"""The cmake build style finds a recipe's store dependencies without help: CMake's own find modules
(FindZLIB, FindPNG) called with no hint find the store's zlib and libpng, never the host's (Debian's
zlib1g-dev and libpng-dev would do otherwise), through the build's CMAKE_PREFIX_PATH with more than one
dependency; the program is linked to the store's libraries, by RUNPATH."""

import os
import subprocess

import pytest

from conftest import run_cli, site_config, write

PROJECT = """
cmake_minimum_required(VERSION 3.13)
project(pngversion C)
find_package(ZLIB REQUIRED)
find_package(PNG REQUIRED)
file(WRITE "${CMAKE_BINARY_DIR}/found.txt" "")
foreach(found ${ZLIB_LIBRARIES} ${PNG_LIBRARIES} ${ZLIB_INCLUDE_DIRS} ${PNG_INCLUDE_DIRS})
  file(APPEND "${CMAKE_BINARY_DIR}/found.txt" "${found}\\n")
endforeach()
add_executable(pngversion main.c)
target_link_libraries(pngversion PNG::PNG ZLIB::ZLIB)
install(TARGETS pngversion DESTINATION bin)
install(FILES "${CMAKE_BINARY_DIR}/found.txt" DESTINATION share)
"""

MAIN = """
#include <png.h>
#include <stdio.h>
#include <zlib.h>
int main(void) { printf("%s %s\\n", png_get_libpng_ver(NULL), zlibVersion()); return 0; }
"""


@pytest.mark.slow
def test_cmake_finds_the_store_dependencies_without_hints(shared_store, sources, tmp_path):
    recipes = tmp_path / "recipes"
    write(recipes / "src" / "CMakeLists.txt", PROJECT)
    write(recipes / "src" / "main.c", MAIN)
    write(recipes / "pngversion.yml", """
        name: pngversion
        versions: {"1.0": {path: src}}
        depends: {link: [libpng, zlib]}
        build: cmake
        """)
    config = site_config(tmp_path, {"pngversion": None}, recipes=[recipes], store=shared_store)
    run_cli("sync", config, "-j", "2")
    show = run_cli("show", config, "pngversion").stdout
    prefix = next(line.split(None, 1)[1] for line in show.splitlines() if line.strip().startswith("prefix:"))
    found = open(os.path.join(prefix, "share", "found.txt")).read().split()
    assert found and all(f.startswith(str(shared_store)) for f in found), found
    out = subprocess.run([os.path.join(prefix, "bin", "pngversion")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert out == ["1.6.39", "1.2.13"]
    ldd = subprocess.run(["ldd", os.path.join(prefix, "bin", "pngversion")], capture_output=True, text=True).stdout
    for lib in ("libpng16.so", "libz.so"):
        line = next(line for line in ldd.splitlines() if lib in line)
        assert str(shared_store) in line, line
