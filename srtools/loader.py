"""The one place that picks, loads and validates a model: from a file, or the spool's current one.

Commands say what they need a model *for* (an architecture task, see :mod:`srtools.archs`) and at
which scale; the architecture itself always comes from the model file. Servers follow the spool
with :class:`ModelWatcher`, which loads each newly published model off the frame loop and keeps
the previous one when a new one fails validation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from typing import Callable, Generic, TypeVar

import torch

from . import archs, modelfile, y4m
from .errors import ModelError, SrError
from .modelfile import ModelInfo
from .spool import Pointer, Spool

log = logging.getLogger("srtools.loader")

Engine = TypeVar("Engine")
# Turns a loaded network into what the server runs (an upscaler, a refiner): (model, info, version).
EngineFactory = Callable[[torch.nn.Module, ModelInfo, "int | None"], Engine]


def load(path: str | os.PathLike, task: str, scale: int) -> tuple[torch.nn.Module, ModelInfo]:
    """Load and validate a model file that does ``task`` at ``scale``.

    Raises:
        ModelError: unreadable, invalid, or a model for another task or scale.
    """
    info = modelfile.read_info(path)
    if info.arch in archs.ARCHITECTURES and archs.ARCHITECTURES[info.arch].task != task:
        raise ModelError(f"{os.fspath(path)}: a {info.arch} model ({archs.ARCHITECTURES[info.arch].task}), "
                         f"not one that does {task}")
    return modelfile.load(path, scale=scale)


def current_pointer(spool: Spool, task: str, scale: int) -> Pointer | None:
    """The spool's current model for ``task`` at ``scale``: the most recently published one among the
    architectures doing that task, or None when none was published yet (or the spool is missing)."""
    pointers = [p for arch in archs.for_task(task) if (p := spool.current(arch, scale)) is not None]
    return max(pointers, key=lambda p: p.raw.get("published", ""), default=None)


def load_current(spool: Spool, task: str, scale: int) -> tuple[torch.nn.Module, ModelInfo, int] | None:
    """(network, info, version) of the spool's current model for ``task``, or None."""
    pointer = current_pointer(spool, task, scale)
    if pointer is None:
        return None
    model, info = load(pointer.path, task, scale)
    return model, info, pointer.version


def open_engine(factory: EngineFactory, task: str, scale: int, model_path: str | None = None,
                spool: str | None = None) -> Engine | None:
    """The engine of ``--model FILE``, else of the spool's current model, else None (no model yet)."""
    if model_path is not None:
        model, info = load(model_path, task, scale)
        return factory(model, info, None)
    if spool is not None:
        found = load_current(Spool(spool), task, scale)
        if found is not None:
            return factory(*found)
    return None


class ModelWatcher(threading.Thread, Generic[Engine]):
    """Polls the spool and builds an engine for each newly published model, off the frame loop.

    The frame loop takes :attr:`latest` between two frames, so a swap never drops or repeats a
    frame. A model that fails validation is logged once and the previous one stays in use. A
    spool that does not exist yet is waited for: servers start before the first model is trained.

    Args:
        spool: the spool to follow.
        task / scale: which models (see :mod:`srtools.archs`).
        interval: seconds between polls.
        factory: builds the engine from a loaded model.
        prepare: called on each new engine before it is offered (e.g. a warm-up on the stream's size).
    """

    def __init__(self, spool: Spool, task: str, scale: int, interval: float, factory: EngineFactory,
                 prepare: Callable[[Engine], None] | None = None):
        super().__init__(name="model-watcher", daemon=True)
        self.spool, self.task, self.scale, self.interval = spool, task, scale, interval
        self.factory, self.prepare = factory, prepare
        self.latest: Engine | None = None
        self._seen: str | None = None  # the pointer already handled
        self._stopping = threading.Event()

    def poll(self) -> None:
        try:
            pointer = current_pointer(self.spool, self.task, self.scale)
        except SrError as exc:
            log.warning("spool: %s", exc)
            return
        key = None if pointer is None else json.dumps(pointer.raw, sort_keys=True)
        if pointer is None or key == self._seen:
            return
        self._seen = key
        try:
            model, info = load(pointer.path, self.task, self.scale)
        except ModelError as exc:
            log.warning("rejected model v%d, keeping the previous one: %s", pointer.version, exc)
            return
        engine = self.factory(model, info, pointer.version)
        if self.prepare is not None:
            self.prepare(engine)
        self.latest = engine

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.poll()

    def stop(self) -> None:
        self._stopping.set()


def follow_spool(stack: contextlib.ExitStack, engine: Engine | None, factory: EngineFactory, task: str, scale: int,
                 header: y4m.Header, spool: str | None, interval: float) -> tuple[Engine | None, ModelWatcher | None]:
    """A filter's engine and the watcher that replaces it: the spool's current model takes over from
    ``engine`` (from --model) when there is one, and every engine is warmed up on ``header``'s size.

    The watcher is stopped and joined when ``stack`` closes.
    """
    watcher = None
    if spool is not None:
        watcher = ModelWatcher(Spool(spool), task, scale, interval, factory, prepare=lambda e: e.warm_up(header))
        watcher.poll()
        engine = watcher.latest or engine
        watcher.start()
        stack.callback(watcher.join)  # a model load cut off by interpreter exit aborts the process
        stack.callback(watcher.stop)
    if engine is not None and engine.cost is None:
        engine.warm_up(header)
    return engine, watcher
