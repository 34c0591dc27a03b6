"""Every error sitedist reports to a user is one of these types.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; no traceback. Messages say what
is wrong, where (file:line when the error comes from a config or recipe), and what to do.
"""


class SitedistError(Exception):
    """Base of every error that is the user's to act on."""

    exit_code = 1


class ConfigError(SitedistError):
    """A site config or recipe is wrong. ``where`` is "file:line" when known."""

    exit_code = 2

    def __init__(self, message, where=None, hint=None):
        self.where = where
        self.hint = hint
        text = f"{where}: {message}" if where else message
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


class SourceError(SitedistError):
    """A source could not be fetched, verified or unpacked."""


class ChecksumError(SourceError):
    pass


class BuildError(SitedistError):
    """A build failed; the message names the log and shows its tail."""

    def __init__(self, message, log_path=None, build_dir=None, diagnosed=False):
        self.log_path = log_path
        self.build_dir = build_dir
        self.diagnosed = diagnosed   # the build explained the failure itself (admin_docs/python.md)
        super().__init__(message)


class HostError(SitedistError):
    """A host package (compiler, MPI) is missing, broken or not what the config pins."""


class StoreError(SitedistError):
    """The store cannot be used: permissions, layout, or a corrupt artifact."""


class LockError(SitedistError):
    """A lock could not be taken in time."""


class ModulesError(SitedistError):
    """The module tree cannot be generated or published (for example a name clash)."""


class ProfileError(SitedistError):
    pass


class DriftError(SitedistError):
    """``sync --locked``: the plan differs from the lock file; the message says which package and why."""

    exit_code = 3

    def __init__(self, message, hint=None):
        super().__init__(message + (f"\n  hint: {hint}" if hint else ""))


class CacheError(SitedistError):
    """A binary cache cannot be read, written or trusted, or an entry of it cannot be installed."""


class RelocationError(CacheError):
    """An artifact from a cache cannot be relocated to this store's path (admin_docs/caches.md)."""
