"""Network architectures, one ``*_arch.py`` module each, and the registry model files refer to.

A model file names its architecture by registry key and stores the constructor's keyword
arguments; :func:`build` re-creates the network from those alone, so loading a model never runs
code from the file.
"""

from __future__ import annotations

from typing import Any

import torch

from .fedsr_arch import FEDSR
from .tcsr_arch import TCSR

ARCHITECTURES: dict[str, type[torch.nn.Module]] = {"fedsr": FEDSR, "tcsr": TCSR}


def build(arch: str, hparams: dict[str, Any]) -> torch.nn.Module:
    """Instantiate architecture ``arch`` with keyword arguments ``hparams``.

    Raises:
        KeyError: unknown architecture.
        TypeError / ValueError: hyperparameters the architecture does not accept.
    """
    return ARCHITECTURES[arch](**hparams)
