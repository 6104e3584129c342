"""Network architectures, one ``*_arch.py`` module each, and the registry model files refer to.

A model file names its architecture by registry key and stores the constructor's keyword
arguments; :func:`build` re-creates the network from those alone, so loading a model never runs
code from the file. Each architecture class states its ``task``: what a server does with it.

- ``upscale``: (N, C, H, W) low-res frames -> (N, C, sH, sW) (F-EDSR; sr-serve, tile reconstruction)
- ``refine``: (N, 2k+1, C, H, W) consecutive upscaled frames -> (N, C, H, W) the refined middle one
  (TCSR; sr-tcsr). Its model file's ``scale`` is that of the upscaler whose output it refines.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .fedsr_arch import FEDSR
from .tcsr_arch import TCSR

UPSCALE = "upscale"
REFINE = "refine"

ARCHITECTURES: dict[str, type[torch.nn.Module]] = {"fedsr": FEDSR, "tcsr": TCSR}


def build(arch: str, hparams: dict[str, Any]) -> torch.nn.Module:
    """Instantiate architecture ``arch`` with keyword arguments ``hparams``.

    Raises:
        KeyError: unknown architecture.
        TypeError / ValueError: hyperparameters the architecture does not accept.
    """
    return ARCHITECTURES[arch](**hparams)


def for_task(task: str) -> list[str]:
    """Registry keys of the architectures doing ``task``, in registry order."""
    return [name for name, cls in ARCHITECTURES.items() if cls.task == task]


def default_hparam(arch: str, name: str) -> Any:
    """The default of constructor argument ``name`` of architecture ``arch``."""
    return inspect.signature(ARCHITECTURES[arch]).parameters[name].default


def default_hparams(arch: str, **given: Any) -> dict[str, Any]:
    """Every constructor argument of architecture ``arch``: ``given`` ones, the defaults for the rest."""
    return {name: given.get(name, parameter.default)
            for name, parameter in inspect.signature(ARCHITECTURES[arch]).parameters.items()}
