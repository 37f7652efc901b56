"""The ``sozu`` command."""

from __future__ import annotations

import argparse
import os
import sys

from sozu_config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sozu")
    parser.add_argument("-c", "--config", default=os.environ.get("SOZU_CONFIG"))
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start")
    start.add_argument("-c", "--config", dest="start_config")
    args = parser.parse_args(argv)
    path = getattr(args, "start_config", None) or args.config
    if not path:
        print("error: no configuration file: give -c FILE or set SOZU_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    from sozu_runtime.main import run

    return run(config)


if __name__ == "__main__":
    sys.exit(main())
