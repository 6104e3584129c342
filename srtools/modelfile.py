"""Self-describing model files: safetensors weights plus metadata, loaded without executing code.

A model file is a safetensors file (tensors only, no pickle) whose string metadata holds:

- ``format``: ``srtools-model/1``
- ``arch``: architecture registry key (see :mod:`srtools.archs`), ``hparams``: its constructor
  arguments as JSON
- ``scale``: upscaling factor; ``color``: ``y`` (luma through the network, chroma bicubic) or
  ``yuv`` (chroma upsampled to luma size, all three planes through the network)
- ``created`` (UTC, ISO 8601), ``source``, and training figures ``val_psnr_db``, ``gain_db``
  (Y-PSNR over bicubic on held-out frames), ``train_seconds``, ``steps``

Loading validates all of it: the format tag, a known architecture, hyperparameters it accepts
and within its size limits (``LIMITS`` of each architecture: F-EDSR at most 256 channels and 64
blocks, TCSR k at most 8), exactly the expected tensor names and shapes, and the scale the caller
needs. All of that is checked on the metadata and the file's header before the network is built:
the shapes come from the network built on PyTorch's meta device, which allocates nothing, so a
small file whose metadata describes a huge network costs nothing to refuse.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import archs
from .errors import ModelError

FORMAT = "srtools-model/1"
COLOR_MODES = ("y", "yuv")


@dataclasses.dataclass
class ModelInfo:
    """Everything a model file says about itself besides its weights."""

    arch: str
    hparams: dict[str, Any]
    scale: int
    color: str = "y"
    created: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    source: str = ""
    val_psnr_db: float | None = None
    gain_db: float | None = None
    train_seconds: float | None = None
    steps: int | None = None

    def to_metadata(self) -> dict[str, str]:
        meta = {"format": FORMAT}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                meta[field.name] = json.dumps(value) if field.name == "hparams" else str(value)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], name: str) -> ModelInfo:
        if meta.get("format") != FORMAT:
            raise ModelError(f"{name}: not an srtools model file (format {meta.get('format')!r})")
        try:
            kwargs: dict[str, Any] = {"arch": meta["arch"], "hparams": json.loads(meta["hparams"]),
                                      "scale": int(meta["scale"]), "color": meta.get("color", "y"),
                                      "created": meta.get("created", ""), "source": meta.get("source", "")}
            for key in ("val_psnr_db", "gain_db", "train_seconds"):
                if key in meta:
                    kwargs[key] = float(meta[key])
            if "steps" in meta:
                kwargs["steps"] = int(meta["steps"])
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{name}: bad model metadata ({exc})") from None
        if not isinstance(kwargs["hparams"], dict) or kwargs["color"] not in COLOR_MODES:
            raise ModelError(f"{name}: bad model metadata (hparams or color)")
        return cls(**kwargs)


def save(path: str | os.PathLike, model: torch.nn.Module, info: ModelInfo) -> None:
    """Write ``model``'s weights and ``info`` to ``path`` (not atomic: see :mod:`srtools.spool`)."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata=info.to_metadata())


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read and check only the metadata of a model file."""
    name = os.fspath(path)
    try:
        with safe_open(name, framework="pt") as f:
            return ModelInfo.from_metadata(f.metadata() or {}, name)
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{name}: unreadable model file ({exc})") from None


def load(path: str | os.PathLike, *, scale: int | None = None,
         arch: str | None = None) -> tuple[torch.nn.Module, ModelInfo]:
    """Load and validate a model file.

    Args:
        path: the file.
        scale / arch: when given, the model must have this scale / architecture.

    Returns:
        (network in eval mode on the CPU, its info).

    Raises:
        ModelError: anything wrong with the file, with a one-line reason.
    """
    name = os.fspath(path)
    info = read_info(name)
    if arch is not None and info.arch != arch:
        raise ModelError(f"{name}: architecture {info.arch!r}, expected {arch!r}")
    if scale is not None and info.scale != scale:
        raise ModelError(f"{name}: model upscales x{info.scale}, expected x{scale}")
    if info.arch not in archs.ARCHITECTURES:
        raise ModelError(f"{name}: unknown architecture {info.arch!r}")
    try:
        meta, expected = archs.shapes(info.arch, info.hparams)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{name}: hyperparameters rejected by {info.arch}: {exc}") from None
    if getattr(meta, "scale", info.scale) != info.scale:
        raise ModelError(f"{name}: metadata scale x{info.scale} disagrees with hparams")
    try:
        with safe_open(name, framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if found != expected:
                missing, extra = expected.keys() - found.keys(), found.keys() - expected.keys()
                wrong = [k for k in expected.keys() & found.keys() if expected[k] != found[k]]
                raise ModelError(f"{name}: weights do not fit {info.arch} {info.hparams} "
                                 f"(missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}, "
                                 f"wrong shape {sorted(wrong)[:3]})")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{name}: unreadable model file ({exc})") from None
    model = archs.build(info.arch, info.hparams)  # only now: the file's tensors are this network's
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise ModelError(f"{name}: weights contain NaN or infinity")
    model.load_state_dict(state)
    return model.eval(), info
