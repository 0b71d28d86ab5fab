"""The `zfarm` command line (entry point `zfarm.cli:main`)."""

from zfarm.cli.main import main

__all__ = ["main"]
