"""The command line (`python -m surrogate_nas ...`, entry point `surrogate_nas.cli:main`):
argparse only. `main` builds the parser from `cli.commands.*`; `flags` turns flags
into settings.

May import: everything below it; nothing imports `cli`.
"""

from surrogate_nas.cli.main import main

__all__ = ["main"]
