"""A faithful Gestimum REST import simulator (real HTTP server), for tests and demos.

See docs/simulator.md. The public API lives in `gestimum_pipeline.simulator.server`.
"""

from gestimum_pipeline.simulator.server import (
    Document,
    Fault,
    GestimumSimulator,
    RequestRecord,
    SimulatorConfig,
    SimulatorState,
    add_cli_arguments,
    config_from_args,
    serve,
)

__all__ = [
    "Document",
    "Fault",
    "GestimumSimulator",
    "RequestRecord",
    "SimulatorConfig",
    "SimulatorState",
    "add_cli_arguments",
    "config_from_args",
    "serve",
]
