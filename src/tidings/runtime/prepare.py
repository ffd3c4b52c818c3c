"""``python -m tidings.runtime.prepare [--config FILE]``: a run's once-only set-up, alone.

The supervisor of ``tidings serve --processes N`` runs :func:`tidings.runtime.service.prepare`
in this short-lived process rather than in itself: importing the whole service would keep
~45 MB in a process that only watches its children. Prints the generated admin key, if one
was made, as the only line on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from tidings.config import load_settings
from tidings.errors import ConfigError
from tidings.runtime.service import prepare


def main() -> None:
    """Run :func:`prepare` for the config the supervisor was given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--role", default="all", choices=("all", "api", "worker"))
    args = parser.parse_args()
    try:
        generated = asyncio.run(prepare(load_settings(args.config), role=args.role))
    except ConfigError as exc:  # a short API key …: one line, never the value
        print(f"config error {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    print(generated or "")


if __name__ == "__main__":
    main()
