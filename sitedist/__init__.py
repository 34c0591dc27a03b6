"""sitedist: hash-addressed software stacks and environment modules for HPC sites."""

__version__ = "0.1.0"
