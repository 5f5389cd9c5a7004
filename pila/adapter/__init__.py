"""The trainable PILA adapter (paper Sec. 3.1–3.3, App. A.2).

``PILAAdapter(config)`` holds the physical encoder, the AFE bank, the condition encoder,
the LPMER router, the masked operator experts and the attribute-to-flow decoder;
``forward(x_t, sigma, v_theta, cond)`` returns the corrected velocity and everything
training logs. ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` write and read
a folder with ``adapter_config.json`` and ``model.safetensors``, locally or on the hub
(:mod:`pila.adapter.pretrained`); :mod:`pila.adapter.loading` checks an adapter against a
backbone and loads it for generation.
"""

from pila.adapter.adapter import PARAMETER_GROUPS, PILAAdapter, describe
from pila.adapter.condition import AdapterCondition, ConditionEncoder, randomize_labels
from pila.adapter.config import AdapterConfig
from pila.adapter.interface import AdapterOutput, BankEncoding
from pila.adapter.loading import load_adapter
from pila.adapter.objective import RoutedResidual, routed_residual_objective
from pila.adapter.pretrained import CONFIG_NAME, WEIGHTS_NAME, AdapterLoadError
from pila.adapter.router import (
    LPMERRouter,
    Routing,
    RoutingStatistics,
    dense_routing,
    route,
    routing_statistics,
)

__all__ = [
    "CONFIG_NAME",
    "PARAMETER_GROUPS",
    "WEIGHTS_NAME",
    "AdapterCondition",
    "AdapterConfig",
    "AdapterLoadError",
    "AdapterOutput",
    "BankEncoding",
    "ConditionEncoder",
    "LPMERRouter",
    "PILAAdapter",
    "RoutedResidual",
    "Routing",
    "RoutingStatistics",
    "dense_routing",
    "describe",
    "load_adapter",
    "randomize_labels",
    "route",
    "routed_residual_objective",
    "routing_statistics",
]
