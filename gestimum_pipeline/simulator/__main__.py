"""`python -m gestimum_pipeline.simulator`: the simulator without the project's CLI."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from gestimum_pipeline.simulator.server import add_cli_arguments, config_from_args, serve


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gestimum_pipeline.simulator",
        description="Serve a simulated Gestimum REST import API (prints its base URL on stdout).",
    )
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
