"""F-EDSR, model files and the spool."""

import json
import multiprocessing
import os
import pickle
import stat
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from srtools import archs, loader, modelfile
from srtools.archs.fedsr_arch import FEDSR
from srtools.errors import ModelError
from srtools.fsutil import write_json_atomic
from srtools.spool import Spool, StaleVersion


def tiny(scale=2, **kw):
    hparams = {"scale": scale, "channels": 4, "blocks": 1, **kw}
    return archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fedsr_shapes_and_bicubic_start(scale):
    model = FEDSR(scale=scale, channels=8, blocks=2).eval()
    x = torch.rand(2, 1, 12, 20)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 1, 12 * scale, 20 * scale)
    # Untrained, the network is exactly bicubic: training starts from the baseline.
    assert torch.equal(out, F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False))
    assert model.head.kernel_size == (5, 5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_fedsr_rejects_bad_config():
    with pytest.raises(ValueError):
        FEDSR(scale=5)
    with pytest.raises(ValueError):
        FEDSR(in_channels=2)


def test_model_file_round_trip(tmp_path):
    model, info = tiny()
    torch.nn.init.normal_(model.tail.weight)
    info.gain_db = 1.25
    modelfile.save(tmp_path / "m.safetensors", model, info)
    loaded, loaded_info = modelfile.load(tmp_path / "m.safetensors", scale=2, arch="fedsr")
    assert loaded_info.gain_db == 1.25 and loaded_info.hparams == info.hparams and loaded_info.color == "y"
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_model_file_validation(tmp_path):
    model, info = tiny()
    path = tmp_path / "m.safetensors"
    modelfile.save(path, model, info)
    with pytest.raises(ModelError, match="upscales x2, expected x3"):
        modelfile.load(path, scale=3)
    with pytest.raises(ModelError, match="architecture 'fedsr', expected 'tcsr'"):
        modelfile.load(path, arch="tcsr")
    # Metadata that promises another shape than the weights have.
    info.hparams = {**info.hparams, "channels": 8}
    modelfile.save(tmp_path / "lying.safetensors", model, info)
    with pytest.raises(ModelError, match="weights do not fit"):
        modelfile.load(tmp_path / "lying.safetensors")
    info.hparams = {"scale": 2, "colour": "blue"}
    modelfile.save(tmp_path / "badparams.safetensors", model, info)
    with pytest.raises(ModelError, match="hyperparameters rejected"):
        modelfile.load(tmp_path / "badparams.safetensors")


def test_model_file_never_unpickles(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelError, match="unreadable model file"):
        modelfile.load(evil)
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_nan_models_are_rejected(tmp_path):
    model, info = tiny()
    path = tmp_path / "m.safetensors"
    modelfile.save(path, model, info)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        modelfile.load(tmp_path / "cut.safetensors")
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    modelfile.save(tmp_path / "nan.safetensors", model, info)
    with pytest.raises(ModelError, match="NaN"):
        modelfile.load(tmp_path / "nan.safetensors")


def test_spool_publish_versions_and_pointer(tmp_path):
    spool = Spool(tmp_path / "spool", create=True)
    assert spool.current("fedsr", 2) is None
    first = spool.publish(*tiny())
    second = spool.publish(*tiny())
    assert (first.version, second.version) == (1, 2)
    pointer = spool.current("fedsr", 2)
    assert pointer.version == 2 and pointer.path == second.path and pointer.path.exists()
    assert json.loads(spool.pointer_path("fedsr", 2).read_text())["file"] == "models/fedsr-x2-000002.safetensors"
    assert spool.versions("fedsr", 2) == [1, 2]
    assert list(spool.tmp_dir.iterdir()) == []
    modelfile.load(pointer.path, scale=2)



def test_publish_file_keeps_the_given_version_all_or_nothing(tmp_path):
    """An uploaded model keeps the push side's version; a stale one adds nothing to the spool."""
    spool = Spool(tmp_path / "spool", create=True)
    model, info = tiny()
    upload = tmp_path / "upload.safetensors"
    modelfile.save(upload, model, info)
    pointer = spool.publish_file(upload, info, 5)
    assert pointer.version == 5 and pointer.raw["current"]
    assert spool.current("fedsr", 2).path == spool.models_dir / "fedsr-x2-000005.safetensors"
    assert spool.current("fedsr", 2).path.read_bytes() == upload.read_bytes() and upload.exists()
    # A leftover of a publisher that crashed before its pointer update holds version 7.
    os.link(upload, spool.models_dir / "fedsr-x2-000007.safetensors")
    before = sorted(p.name for p in spool.models_dir.iterdir())
    for version, reason in ((5, "not newer than the current version 5"), (4, "not newer"), (7, "already exists")):
        with pytest.raises(StaleVersion, match=reason):
            spool.publish_file(upload, info, version)
        assert sorted(p.name for p in spool.models_dir.iterdir()) == before
        assert spool.current("fedsr", 2).version == 5
    assert spool.publish_file(upload, info, 8).version == 8
    assert spool.publish(*tiny()).version == 9  # local publishers continue after the uploaded versions

def _publish_many(root, count):
    spool = Spool(root)
    for _ in range(count):
        spool.publish(*tiny())


def test_concurrent_publishers_never_collide(tmp_path):
    root = tmp_path / "spool"
    Spool(root, create=True)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_publish_many, args=(root, 5)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
        assert w.exitcode == 0
    assert Spool(root).versions("fedsr", 2) == list(range(1, 16))
    assert Spool(root).current("fedsr", 2).version == 15  # the newest, whoever finished last


def test_pointer_never_moves_back_to_an_older_version(tmp_path, monkeypatch):
    """Publisher A takes v1, then B publishes v2 completely before A updates the pointer."""
    spool = Spool(tmp_path / "spool", create=True)
    link = Spool._link_next_version
    racing = []

    def link_then_let_b_publish(self, tmp, arch, scale):
        taken = link(self, tmp, arch, scale)
        if self is spool:
            racing.append(Spool(self.root).publish(*tiny()))
        return taken

    monkeypatch.setattr(Spool, "_link_next_version", link_then_let_b_publish)
    a = spool.publish(*tiny())
    [b] = racing
    assert (a.version, b.version) == (1, 2)
    assert not a.raw["current"] and b.raw["current"]
    assert spool.current("fedsr", 2).version == 2
    assert spool.versions("fedsr", 2) == [1, 2]  # A's model is kept, just not current


def test_published_files_are_readable_by_other_users(tmp_path):
    """Model files, pointers and JSON documents get 0666 & ~umask, like a plain write, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "spool", create=True)
        pointer = spool.publish(*tiny())
        write_json_atomic(tmp_path / "plan.json", {"format": "x"})
        for path in (pointer.path, spool.pointer_path("fedsr", 2), tmp_path / "plan.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
        os.umask(0o077)
        private = spool.publish(*tiny())
        assert stat.S_IMODE(private.path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_one_loader_for_every_task(tmp_path):
    spool = Spool(tmp_path / "spool", create=True)
    assert loader.current_pointer(spool, archs.UPSCALE, 2) is None
    assert loader.current_pointer(Spool(tmp_path / "missing"), archs.UPSCALE, 2) is None
    spool.publish(*tiny())
    model, info, version = loader.load_current(spool, archs.UPSCALE, 2)
    assert (info.arch, version) == ("fedsr", 1) and isinstance(model, FEDSR)
    with pytest.raises(ModelError, match="expected x3"):
        loader.load(spool.current("fedsr", 2).path, archs.UPSCALE, 3)
    with pytest.raises(ModelError, match="not one that does refine"):
        loader.load(spool.current("fedsr", 2).path, "refine", 2)


CRASH_SCRIPT = """
import os, sys
from srtools import archs, modelfile, loader
from srtools.spool import Spool, StaleVersion
spool = Spool(sys.argv[1])
hparams = {"scale": 2, "channels": 4, "blocks": 1}
real_save = modelfile.save
def save_then_die(path, model, info):
    real_save(path, model, info)
    os._exit(9)  # killed after writing the temp file, before it is linked into place
modelfile.save = save_then_die
spool.publish(archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, 2))
"""


def test_crash_mid_publish_keeps_previous_model(tmp_path):
    root = tmp_path / "spool"
    spool = Spool(root, create=True)
    spool.publish(*tiny())
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root)])
    assert result.returncode == 9
    assert spool.current("fedsr", 2).version == 1
    assert spool.versions("fedsr", 2) == [1]
    modelfile.load(spool.current("fedsr", 2).path)
