"""The patterns of names and versions: of packages, toolchains, profiles and options in configs and
recipes (sitedist.spec.schema), and of the artifact directories in a store (sitedist.core.store).

Whole-string patterns: \\A and \\Z, never ^ and $ ($ also matches before a final newline, and a JSON
Schema "pattern" is a search). Use them with re.fullmatch or as schema patterns."""

NAME = r"\A[A-Za-z0-9][A-Za-z0-9_+.-]{0,63}\Z"  # package, toolchain, profile and option names
VERSION = r"\A[A-Za-z0-9][A-Za-z0-9_+.~-]{0,63}\Z"
