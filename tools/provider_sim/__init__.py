"""A local server speaking the OpenAI chat-completions API, with deterministic answers and
scripted faults: the "simulated" provider of tests, benchmarks and ``lumina up``.

``python -m tools.provider_sim --port 8090`` serves it; ``tools.provider_sim.testing`` runs it
inside tests. Behaviour per request: ``x-sim-*`` headers (see ``config.Knobs``).
"""

from tools.provider_sim.app import SimulatorApp
from tools.provider_sim.config import DEFAULT_MODELS, FAULTS, Knobs, SimConfig
from tools.provider_sim.server import PortInUse, bind_socket, build_server
from tools.provider_sim.stats import RequestRecord, Stats, StatsSnapshot

__all__ = [
    "DEFAULT_MODELS",
    "FAULTS",
    "Knobs",
    "PortInUse",
    "RequestRecord",
    "SimConfig",
    "SimulatorApp",
    "Stats",
    "StatsSnapshot",
    "bind_socket",
    "build_server",
]
