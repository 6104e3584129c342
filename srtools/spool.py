"""srtools-spool - the model spool directory shared by trainers and servers

DESCRIPTION
A spool is a plain directory through which trainers (sr-train) hand models to servers (sr-serve
for upscaling models such as F-EDSR, sr-tcsr for refining models such as TCSR) on the same host,
or on another one through a synchronised or network file system. Every file in it is published
atomically: written under tmp/, flushed with fsync, then moved into place with a link or rename on
the same file system, with the mode a plain file write gets (0666 & ~umask) so that servers running
as other users can read it. A reader never sees a partial file, and a trainer that
crashes mid-publish leaves the previous model current.

LAYOUT
    SPOOL/models/ARCH-xSCALE-VERSION.safetensors
        Immutable model files (see MODEL FILES). VERSION is a six-digit counter per ARCH and SCALE,
        allocated with an exclusive link so that concurrent publishers never collide. A server's
        spool fed by sr-receive keeps the push side's VERSION instead (see UPLOADED MODELS).
        Long-running publishers (sr-train --watch, sr-receive) keep the newest --keep-models
        versions (default 10) and remove older ones; the current model is never removed.
    SPOOL/current/ARCH-xSCALE.json
        Pointer to the current model of that architecture and scale:
        {"version": 7, "file": "models/fedsr-x2-000007.safetensors", "published": "...", "gain_db": 1.4}
        Replaced atomically after the model file is in place, under SPOOL/current/.lock, and only
        ever by a newer version: of two publishers racing, the older model stays a file in models/
        but never becomes current. Servers poll it between frames and hot-swap.
    SPOOL/tmp/
        Files being written. Leftovers of a crashed publisher are harmless; files older than an
        hour are removed by the next publisher.

    SPOOL/pool/pair-NNNNNNNNN.npz
        Training pairs sampled by the push side (sr-push), numbered in order: a numpy archive
        (arrays only, loaded without pickle) with t (stream time, s), hr_y hr_u hr_v (the high-res
        frame) and lr_y lr_u lr_v (the low-res frame as the server decodes it: the pushed stream
        decoded again). Linked into place whole; the oldest are removed before a new pair goes in,
        so that the pool never holds more than its bound (sr-push --max-pairs, default 480: two
        minutes at 4 pairs/s); a reader skips a pair that was removed meanwhile.

    SPOOL/requests/request-NNNNNNNNN.json
        Training requests written by sr-monitor on a scene change (the model's PSNR departing
        from its trend on a new picture, or a wholly new picture), named after the pair that
        showed it: {"format": "srtools-request/1", "t": 12.5, "pair": 42, "psnr": 31.2,
        "smoothed": 35.0, "change": 0.8, "model": 3, "created": "..."}.

    SPOOL/monitor.jsonl, SPOOL/train.jsonl, SPOOL/upload.jsonl
        On the push side, where its service appends the JSON lines of sr-monitor, sr-train --watch
        and sr-upload (conf/systemd/sr-push@.service, make demo): sr-push's status line reads the
        last line of each (the current gain, the training state, the last upload).

Later tools add directories beside these; readers ignore names they do not know.

UPLOADED MODELS
A server away from the trainer gets its models over HTTP: sr-upload sends the push side's current
model, sr-receive validates it and publishes it into the server's spool under the version number
the push side gave it, so that a version means the same model on both sides. Such a model is
written under tmp/ like any other, then, under current/.lock, linked into models/ with an
exclusive link and made current, only if its version is newer than the current one and no file
has that version yet; otherwise nothing is added (sr-receive answers 409). A spool that receives
uploads for an ARCH and SCALE should have no local trainer for them: the two would number their
versions independently.

MODEL FILES
A model file is a safetensors file: tensors and string metadata, nothing executable. The metadata
holds format (srtools-model/1), arch and hparams (the network is rebuilt from these alone), scale,
color (y: luma through the network, chroma bicubic; yuv: all planes), created, source, and the
training figures val_psnr_db and gain_db (Y-PSNR gain over bicubic on held-out frames). A file
whose metadata, tensor names or shapes do not match is rejected; a server keeps its previous model.

EXAMPLES
    sr-train --spool /var/spool/srtools --hr clip.mp4 --scale 2 --max-seconds 180
    sr-train --spool /var/spool/srtools --arch tcsr --hr clip.mp4 --max-seconds 300
    cat /var/spool/srtools/current/fedsr-x2.json /var/spool/srtools/current/tcsr-x2.json
    sr-receive --spool /var/spool/srtools --token-file /etc/srtools/upload.token   # on the server
    sr-upload --spool /var/spool/srtools --to https://server/models/default --uplink 2000 \
        --token-file /etc/srtools/upload.token                                   # on the push side
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from . import modelfile
from .errors import SrError
from .fsutil import fsync_dir, write_json_atomic, write_temp

_STALE_TMP_SECONDS = 3600


class StaleVersion(SrError):
    """A model offered under a version that is not newer than the current one, or already taken."""


@dataclasses.dataclass(frozen=True)
class Pointer:
    """The content of a current/ARCH-xSCALE.json file."""

    version: int
    path: Path
    raw: dict[str, Any]


class Spool:
    """A spool directory (see the module docstring for the layout).

    Args:
        root: the directory; created with its subdirectories when ``create`` is true.
        keep: after each publish, remove all but the newest ``keep`` versions of that architecture
            and scale (never the current one); None keeps every version.
    """

    def __init__(self, root: str | os.PathLike, create: bool = False, keep: int | None = None):
        self.root = Path(root)
        self.keep = keep
        self.models_dir = self.root / "models"
        self.current_dir = self.root / "current"
        self.tmp_dir = self.root / "tmp"
        if create:
            try:
                for d in (self.models_dir, self.current_dir, self.tmp_dir):
                    d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SrError(f"{self.root}: cannot create spool: {exc.strerror}") from None

    @staticmethod
    def key(arch: str, scale: int) -> str:
        return f"{arch}-x{scale}"

    def pointer_path(self, arch: str, scale: int) -> Path:
        return self.current_dir / f"{self.key(arch, scale)}.json"

    def current(self, arch: str, scale: int) -> Pointer | None:
        """The current model of ``arch`` at ``scale``, or None when none was published yet."""
        path = self.pointer_path(arch, scale)
        try:
            raw = json.loads(path.read_text())
            return Pointer(int(raw["version"]), self.root / raw["file"], raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SrError(f"{path}: unreadable spool pointer ({exc})") from None

    def versions(self, arch: str, scale: int) -> list[int]:
        prefix = self.key(arch, scale) + "-"
        found = []
        for path in self.models_dir.glob(prefix + "*.safetensors"):
            suffix = path.stem[len(prefix):]
            if suffix.isdigit():
                found.append(int(suffix))
        return sorted(found)

    def model_path(self, arch: str, scale: int, version: int) -> Path:
        return self.models_dir / f"{self.key(arch, scale)}-{version:06d}.safetensors"

    def publish(self, model: torch.nn.Module, info: modelfile.ModelInfo) -> Pointer:
        """Publish ``model`` as the next version and make it current, unless a racing publisher
        already made a newer version current.

        Returns:
            The pointer to the new version (``raw["current"]`` says whether it became current).
        """
        self._remove_stale_tmp()
        tmp_model = write_temp(self.tmp_dir, lambda path: modelfile.save(path, model, info), suffix=".safetensors")
        try:
            version, final = self._link_next_version(tmp_model, info.arch, info.scale)
        finally:
            tmp_model.unlink(missing_ok=True)
        fsync_dir(self.models_dir)
        raw = self._pointer_raw(version, final, info)
        with self._pointer_lock():
            current = self._current_or_none(info.arch, info.scale)
            newest = current is None or current.version < version
            if newest:
                write_json_atomic(self.pointer_path(info.arch, info.scale), raw, tmp_dir=self.tmp_dir)
            self._prune(info.arch, info.scale)
        return Pointer(version, final, {**raw, "current": newest})

    def publish_file(self, path: str | os.PathLike, info: modelfile.ModelInfo, version: int) -> Pointer:
        """Publish the model file ``path`` under the given ``version`` (the push side's, for an
        uploaded model) and make it current; all or nothing.

        Args:
            path: a complete, fsynced model file the caller has validated, on the spool's file
                system (written under :attr:`tmp_dir`); it is linked, not moved: the caller removes it.
            info: what the file says about itself (arch and scale name the pointer).
            version: the version it gets; must be newer than the current one.

        Raises:
            StaleVersion: ``version`` is not newer than the current one, or a file already has it;
                nothing was added to the spool.
        """
        self._remove_stale_tmp()
        with self._pointer_lock():
            current = self._current_or_none(info.arch, info.scale)
            if current is not None and current.version >= version:
                raise StaleVersion(f"version {version} is not newer than the current version {current.version}")
            final = self.model_path(info.arch, info.scale, version)
            try:
                os.link(path, final)
            except FileExistsError:
                raise StaleVersion(f"{final.name} already exists in the spool") from None
            fsync_dir(self.models_dir)
            raw = self._pointer_raw(version, final, info)
            write_json_atomic(self.pointer_path(info.arch, info.scale), raw, tmp_dir=self.tmp_dir)
            self._prune(info.arch, info.scale)
        return Pointer(version, final, {**raw, "current": True})

    def _prune(self, arch: str, scale: int) -> None:
        """Remove versions beyond :attr:`keep` (under the pointer lock, so never the current one)."""
        if not self.keep:
            return
        current = self._current_or_none(arch, scale)
        for version in self.versions(arch, scale)[:-self.keep]:
            if current is None or version != current.version:
                self.model_path(arch, scale, version).unlink(missing_ok=True)

    def _pointer_raw(self, version: int, final: Path, info: modelfile.ModelInfo) -> dict[str, Any]:
        return {"version": version, "file": str(final.relative_to(self.root)), "arch": info.arch,
                "scale": info.scale, "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gain_db": info.gain_db}

    def _current_or_none(self, arch: str, scale: int) -> Pointer | None:
        try:
            return self.current(arch, scale)
        except SrError:  # a damaged pointer is replaced by any valid version
            return None

    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        """An exclusive lock serialising pointer updates (released by the kernel if we crash)."""
        with open(self.current_dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _link_next_version(self, tmp: Path, arch: str, scale: int) -> tuple[int, Path]:
        version = max(self.versions(arch, scale), default=0) + 1
        while True:
            final = self.model_path(arch, scale, version)
            try:
                os.link(tmp, final)  # fails if another publisher took this version
                return version, final
            except FileExistsError:
                version += 1

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for path in self.tmp_dir.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass
