"""What the module tree is generated from: one ``ModuleEntry`` per artifact (package, host compiler or MPI)."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ModuleEntry:
    name: str                 # package name, e.g. 'zlib'
    version: str              # '1.2.13'
    prefix: str               # absolute artifact prefix in the store
    artifact_id: str          # the hash part of the prefix
    kind: str = "package"     # 'package' | 'compiler' | 'mpi'
    description: str = ""
    homepage: str = ""
    keywords: tuple = ()      # the recipe's keywords (the catalog page's search)
    compiler: Optional[tuple] = None   # (name, version) it was built with; None for Core
    mpi: Optional[tuple] = None        # (name, version) of its MPI; None if none
    toolchain: str = ""       # toolchain name in the config, e.g. 'gcc-openmpi'
    options: tuple = ()       # ((key, value), ...) the non-default options
    run_depends: tuple = ()   # ((name, version, artifact_id), ...) modules this one loads
    link_depends: tuple = ()  # ((name, version, artifact_id), ...) libraries it links (the catalog lists them)
    env: tuple = ()           # ((op, VAR, value), ...); op in set/prepend/append; value may hold '{prefix}'
    subdirs: tuple = ()       # standard subdirectories present in the prefix: 'bin', 'share/man', ...
    explicit: bool = True     # the admin asked for it (else a dependency, hidden when hide_implicit)

    def describe(self):
        """One line naming the artifact, for error messages."""
        bits = [f"{self.name} {self.version}"]
        if self.toolchain:
            bits.append(f"toolchain {self.toolchain}")
        if self.options:
            bits.append("options " + ",".join(f"{k}={v}" for k, v in self.options))
        bits.append(f"artifact {self.artifact_id}")
        return ", ".join(bits)
