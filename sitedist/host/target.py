"""The CPU target a package is built for, named the way archspec (and Spack) name microarchitectures.

The default is the generic target of the host's family (``x86_64``, ``aarch64``, ...): artifacts built
for it run on every node of a mixed cluster. ``host`` is the build machine's own microarchitecture.
"""

import difflib
import re

import archspec.cpu
from archspec.cpu import UnsupportedMicroarchitecture

from sitedist.errors import ConfigError

# sitedist compiler family -> archspec compiler name. Cray wrappers get their target flags from the
# craype-<target> module, so they have none here.
ARCHSPEC_COMPILERS = {"gcc": "gcc", "clang": "clang", "intel": "oneapi", "nvhpc": "nvhpc", "aocc": "aocc"}


def host_target():
    host = archspec.cpu.host()
    return {"name": host.name, "family": host.family.name, "generic": host.generic.name,
            "vendor": host.vendor, "features": sorted(host.features)}


def resolve_target(spec="generic"):
    """'host', 'generic' or an archspec target name -> the archspec target name."""
    if spec == "host":
        return archspec.cpu.host().name
    if spec == "generic":
        return archspec.cpu.host().family.name
    if spec in archspec.cpu.TARGETS:
        return spec
    close = difflib.get_close_matches(str(spec), list(archspec.cpu.TARGETS) + ["host", "generic"], n=3)
    raise ConfigError(f"unknown CPU target {spec!r}",
                      hint=(f"did you mean {' or '.join(close)}? " if close else "")
                      + "use 'generic', 'host' or an archspec name such as x86_64_v3, skylake_avx512, zen3")


def resolve_targets(config):
    """{target as the config names it: resolved target} of a config; ConfigError at 'target:' for an
    unknown target or two names of one target."""
    out = {}
    for target in config.targets:
        try:
            resolved = resolve_target(target)
        except ConfigError as exc:
            raise ConfigError(str(exc), where=config.where("target")) from None
        same = [t for t, r in out.items() if r == resolved]
        if same:
            raise ConfigError(f"target: {same[0]} and {target} are the same target ({resolved})",
                              where=config.where("target"), hint="list each target once")
        out[target] = resolved
    return out


def target_flags(target, compiler):
    """The optimization flags ``compiler`` (a probe.Compiler) needs to build for ``target``."""
    micro = archspec.cpu.TARGETS[target]
    name = ARCHSPEC_COMPILERS.get(compiler.name)
    if micro.family.name == micro.name or name is None:
        return ()
    version = re.match(r"\d+(?:\.\d+)*", compiler.version)
    try:
        flags = micro.optimization_flags(name, version.group(0) if version else compiler.version)
    except UnsupportedMicroarchitecture as exc:
        raise ConfigError(f"{compiler.name} {compiler.version} cannot build for CPU target {target}: {exc}",
                          hint="choose an older target, or a newer compiler for this target") from None
    return tuple(flags.split())
