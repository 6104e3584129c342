"""sr-upload: real uploads to a real sr-receive, rate limited, skipping stale versions, retrying."""

import json
import socket
import subprocess
import time
from pathlib import Path

from srtools import archs, loader, modelfile
from srtools.fsutil import write_json_atomic
from srtools.spool import Spool

from conftest import LineReader, Server, expect_error, run_command, running_command, stop_command

TOKEN = "0123456789abcdef-upload-test-token"
TOKEN_ENV = {"SRTOOLS_UPLOAD_TOKEN": TOKEN}


def write_token(path: Path) -> Path:
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def publish(spool: Spool, channels: int = 4, blocks: int = 1):
    hparams = {"scale": 2, "channels": channels, "blocks": blocks}
    return spool.publish(archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, 2))


def receiver(tmp_path: Path, listen: str = "127.0.0.1:0") -> Server:
    return Server("sr-receive", "--spool", tmp_path / "server", "--token-file", write_token(tmp_path / "token"),
                  "--listen", listen)


def lines(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def test_once_uploads_the_current_model_then_finds_it_present(tmp_path):
    push = Spool(tmp_path / "push", create=True)
    publish(push)
    pointer = publish(push)
    with receiver(tmp_path) as server:
        args = ["--spool", push.root, "--to", f"{server.url}/models/default", "--uplink", 8000, "--once"]
        result = run_command("sr-upload", *args, env=TOKEN_ENV)
        assert result.returncode == 0, result.stderr.decode()
        [line] = lines(result.stdout)
        assert line["version"] == 2 and line["status"] == "uploaded" and line["http"] == 201
        assert line["bytes"] == pointer.path.stat().st_size and line["attempts"] == 1
        served = Spool(tmp_path / "server")
        assert served.current("fedsr", 2).path.read_bytes() == pointer.path.read_bytes()
        assert loader.load_current(served, archs.UPSCALE, 2)[2] == 2
        # Nothing is sent again: the server's GET says it has v2.
        result = run_command("sr-upload", *args, "--token-file", write_token(tmp_path / "t"))
        assert result.returncode == 0, result.stderr.decode()
        assert [(x["version"], x["status"]) for x in lines(result.stdout)] == [(2, "present")]
        assert served.versions("fedsr", 2) == [2]
        # A model the server rejects is reported and skipped, without an error.
        (push.models_dir / "broken.safetensors").write_bytes(b"not a model")
        write_json_atomic(push.pointer_path("fedsr", 2), {"version": 3, "file": "models/broken.safetensors"})
        result = run_command("sr-upload", *args, env=TOKEN_ENV)
        assert result.returncode == 0, result.stderr.decode()
        assert [(x["version"], x["status"], x["http"]) for x in lines(result.stdout)] == [(3, "rejected", 422)]
        assert served.current("fedsr", 2).version == 2


def test_rate_limited_upload_skips_stale_versions(tmp_path):
    """v1 is being sent at 50 KB/s when v2 and v3 are published: v3 follows, v2 is never sent."""
    push = Spool(tmp_path / "push", create=True)
    first = publish(push, channels=16, blocks=4)  # 123 KB: about 2.5 s at 400 kbit/s
    uplink, share = 2000, 0.2
    with receiver(tmp_path) as server, running_command(
            "sr-upload", "--spool", push.root, "--to", f"{server.url}/models/default", "--token-file",
            tmp_path / "token", "--uplink", uplink, "--share", share, "--poll-interval", 0.1, deadline=120,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE) as uploader:
        try:
            server_tmp = tmp_path / "server" / "tmp"
            deadline = time.monotonic() + 60
            while not any(server_tmp.iterdir()):  # the receiver is writing v1's body
                assert time.monotonic() < deadline and uploader.poll() is None, "the upload of v1 did not start"
                time.sleep(0.02)
            publish(push, channels=16, blocks=4)
            publish(push, channels=16, blocks=4)
            done = [json.loads(uploader.stdout.readline()) for _ in range(2)]
        finally:
            _, err = stop_command(uploader)
    assert [(x["version"], x["status"]) for x in done] == [(1, "uploaded"), (3, "uploaded")], err.decode()
    served = Spool(tmp_path / "server")
    assert served.versions("fedsr", 2) == [1, 3] and served.current("fedsr", 2).version == 3
    # The token bucket held the body to its share of the uplink (the GET and headers are not paced).
    for x in done:
        assert x["bytes"] == first.path.stat().st_size
        assert x["seconds"] >= x["bytes"] * 8 / (uplink * share * 1e3) * 0.9, x
        assert x["kbit_s"] <= uplink * share * 1.1, x


def test_retries_until_the_server_comes_up(tmp_path):
    push = Spool(tmp_path / "push", create=True)
    publish(push)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with running_command("sr-upload", "--spool", push.root, "--to", f"http://127.0.0.1:{port}/models/default",
                         "--token-file", write_token(tmp_path / "token"), "--uplink", 8000, "--once",
                         "--max-backoff", 1, deadline=120, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as uploader:
        log = LineReader(uploader.stderr)
        log.wait_for(lambda lines: sum(b"retrying in" in line for line in lines) >= 2, 60,
                     "two refused connections")
        assert uploader.poll() is None
        with receiver(tmp_path, f"127.0.0.1:{port}"):
            uploader.wait(timeout=60)
        out, err = uploader.stdout.read(), log.text()
    assert uploader.returncode == 0, err
    [line] = lines(out)
    assert line["status"] == "uploaded" and line["attempts"] >= 3, line
    assert "retrying in" in err
    assert Spool(tmp_path / "server").current("fedsr", 2).version == 1


def test_refusals_that_end_it_and_bad_arguments(tmp_path):
    push = Spool(tmp_path / "push", create=True)
    with receiver(tmp_path) as server:
        url = f"{server.url}/models/default"
        args = ["--spool", push.root, "--uplink", 8000, "--once", "-q"]
        expect_error(run_command("sr-upload", *args, "--to", url, env=TOKEN_ENV), 3, "no fedsr-x2 model")
        publish(push)
        expect_error(run_command("sr-upload", *args, "--to", url, env={"SRTOOLS_UPLOAD_TOKEN": "w" * 20}), 1,
                     "refused the token")
        expect_error(run_command("sr-upload", *args, "--to", f"{server.url}/models/nope", env=TOKEN_ENV), 1,
                     "HTTP 404")
    assert Spool(tmp_path / "server").current("fedsr", 2) is None
    # The token never comes from the command line.
    help_text = run_command("sr-upload", "--help").stdout.decode()
    assert "--token-file" in help_text and "--token " not in help_text
    expect_error(run_command("sr-upload", *args, "--to", url, "--token", TOKEN), 2, "No such option")
    expect_error(run_command("sr-upload", *args, "--to", url, env={"SRTOOLS_UPLOAD_TOKEN": ""}), 2, "no upload token")
    expect_error(run_command("sr-upload", *args, "--to", "ftp://x/models/a", env=TOKEN_ENV), 2, "expected http")
    expect_error(run_command("sr-upload", *args[:-1], "--to", url, "--share", 0, env=TOKEN_ENV), 2, "--share")


def test_the_newest_training_request_goes_with_the_upload(tmp_path):
    """sr-receive reports the training request sr-monitor left in the push spool when the model came."""
    push = Spool(tmp_path / "push", create=True)
    pointer = publish(push)
    (push.root / "requests").mkdir()
    for pair, t in ((17, 4.25), (42, 10.5)):
        write_json_atomic(push.root / "requests" / f"request-{pair:09d}.json",
                          {"format": "srtools-request/1", "t": t, "pair": pair, "psnr": 31.2, "smoothed": 35.0,
                           "change": 0.8, "model": None, "created": "2025-01-01T00:00:10+0000"})
    stats = tmp_path / "receive.json"
    with Server("sr-receive", "--spool", tmp_path / "server", "--token-file", write_token(tmp_path / "token"),
                "--stats", stats) as server:
        result = run_command("sr-upload", "--spool", push.root, "--to", f"{server.url}/models/default",
                             "--uplink", 8000, "--once", env=TOKEN_ENV)
        assert result.returncode == 0, result.stderr.decode()
    received = json.loads(stats.read_text())["streams"]["default"]
    assert received["last_upload"]["version"] == pointer.version
    request = received["last_request"]
    assert (request["t"], request["pair"], request["psnr"]) == (10.5, 42, 31.2)
    assert request["created"] == "2025-01-01T00:00:10+0000" and request["received"]
