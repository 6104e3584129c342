"""sr-receive: a real server on an ephemeral port; every refusal leaves the spool as it was."""

import hashlib
import http.client
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch

from srtools import archs, loader, modelfile
from srtools.spool import Spool

from conftest import NGINX, Server, check_metrics, expect_error, free_port, raw_http, run_command, running_nginx

TOKEN = "0123456789abcdef-receive-test-token"
NGINX_TEMPLATE = Path(__file__).resolve().parent.parent / "conf" / "nginx-receive.conf"


def write_token(path: Path, token: str = TOKEN) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def model_file(path: Path, scale: int = 2, channels: int = 4, arch: str = "fedsr") -> bytes:
    """A tiny F-EDSR (or TCSR) model file with non-trivial weights; its bytes."""
    if arch == "fedsr":
        hparams = {"scale": scale, "channels": channels, "blocks": 1}
        model = archs.build(arch, hparams)
        last = model.tail
    else:
        hparams = {"k": 1, "channels": channels, "flow_channels": channels, "flow_blocks": 1, "grid": 2}
        model = archs.build(arch, hparams)
        last = model.reconstruction[-1]
    torch.nn.init.normal_(last.weight, std=0.01)
    modelfile.save(path, model, modelfile.ModelInfo(arch, hparams, scale))
    return path.read_bytes()


def put(url: str, body: bytes, version: int | None = 1, token: str | None = TOKEN,
        headers: dict | None = None) -> tuple[int, dict]:
    """PUT ``body``; a refusal that resets the connection before the body is sent is still read."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    conn.putrequest("PUT", parts.path, skip_accept_encoding=True)
    fields = {"Content-Length": str(len(body)), **(headers or {})}
    if token is not None:
        fields["Authorization"] = f"Bearer {token}"
    if version is not None:
        fields["X-Srtools-Version"] = str(version)
    for name, value in fields.items():
        conn.putheader(name, value)
    conn.endheaders()
    try:
        conn.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    return response.status, answer


def get(url: str, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def listing(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def receiver(tmp_path):
    """sr-receive on --spool with a 64 KiB limit: (server, spool directory)."""
    spool = tmp_path / "server-spool"
    with Server("sr-receive", "--spool", spool, "--token-file", write_token(tmp_path / "token"),
                "--listen", "127.0.0.1:0", "--max-bytes", 65536) as server:
        yield server, spool


def test_a_good_upload_becomes_current_under_the_push_side_version(receiver, tmp_path):
    server, spool = receiver
    url = f"{server.url}/models/default/fedsr-x2"
    assert server.info["streams"] == {"default": str(spool)}
    assert get(url) == (200, {"stream": "default", "arch": "fedsr", "scale": 2, "version": None,
                              "max_bytes": 65536})
    body = model_file(tmp_path / "m.safetensors")
    status, answer = put(url, body, version=7)
    assert status == 201, answer
    assert answer["version"] == 7 and answer["file"] == "models/fedsr-x2-000007.safetensors"
    assert (spool / answer["file"]).read_bytes() == body
    pointer = Spool(spool).current("fedsr", 2)
    assert pointer.version == 7
    model, info, version = loader.load_current(Spool(spool), archs.UPSCALE, 2)
    assert version == 7 and info.hparams["channels"] == 4
    assert get(url)[1]["version"] == 7
    assert list((spool / "tmp").iterdir()) == []
    # A newer version replaces it.
    assert put(url, model_file(tmp_path / "m2.safetensors", channels=6), version=9)[0] == 201
    assert loader.load_current(Spool(spool), archs.UPSCALE, 2)[2] == 9
    code, err = server.stop()
    assert code == 130 and "2 models accepted" in err and "Traceback" not in err


@pytest.mark.parametrize("arch, other", [("fedsr", "tcsr"), ("tcsr", "fedsr")])
def test_every_refusal_leaves_the_spool_unchanged(receiver, tmp_path, arch, other):
    """TCSR models (the server's second stage) are refused and accepted exactly as F-EDSR's."""
    server, spool = receiver
    url = f"{server.url}/models/default/{arch}-x2"
    good = model_file(tmp_path / "m.safetensors", arch=arch)
    assert put(url, good, version=5)[0] == 201
    before = listing(spool)
    assert f"current/{arch}-x2.json" in before

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    cases = [
        ("no token", put(url, good, version=6, token=None), 401),
        ("wrong token", put(url, good, version=6, token=TOKEN[:-1] + "X"), 401),
        ("token as another scheme", put(url, good, version=6, token=None,
                                        headers={"Authorization": f"Basic {TOKEN}"}), 401),
        ("oversized", put(url, os.urandom(200_000), version=6), 413),
        ("corrupt", put(url, os.urandom(4000), version=6), 422),
        ("truncated", put(url, good[: len(good) // 2], version=6), 422),
        ("pickle", put(url, pickle.dumps(Boom()), version=6), 422),
        ("wrong scale", put(url, model_file(tmp_path / "x3.safetensors", scale=3, arch=arch), version=6), 422),
        ("wrong architecture", put(f"{server.url}/models/default/{other}-x2", good, version=6), 422),
        ("older version", put(url, good, version=4), 409),
        ("equal version", put(url, good, version=5), 409),
        ("no version", put(url, good, version=None), 400),
        ("unknown stream", put(f"{server.url}/models/other/{arch}-x2", good, version=6), 404),
        ("unknown architecture", put(f"{server.url}/models/default/resnet-x2", good, version=6), 404),
    ]
    for name, (status, answer), expected in cases:
        assert status == expected, (name, answer)
        assert answer["error"], name
        assert listing(spool) == before, name
    assert not (tmp_path / "pwned").exists()
    assert get(url, token=None)[0] == 401 and get(url, token="nope")[0] == 401
    assert Spool(spool).current(arch, 2).version == 5
    # and a newer good one is accepted
    assert put(url, model_file(tmp_path / "m2.safetensors", channels=6, arch=arch), version=6)[0] == 201
    assert Spool(spool).current(arch, 2).version == 6
    code, err = server.stop()
    assert f"{len(cases) + 2} requests refused" in err and "Traceback" not in err


def test_refusals_come_before_the_body(tmp_path):
    """Expect: 100-continue is answered with the refusal, so no body is sent; a client that sends
    its whole body anyway (urllib) reads the refusal rather than a reset connection."""
    spool = tmp_path / "spool"
    with Server("sr-receive", "--spool", spool, "--token-file", write_token(tmp_path / "token")) as server:
        before = listing(spool)
        parts = urllib.parse.urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port)) as sock:
            sock.sendall(b"PUT /models/default/fedsr-x2 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\nX-Srtools-Version: 1\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 413 ")
        # 4 MiB (the default limit) with a wrong token: more than the socket buffers hold while
        # the server does not read, so closing at once would reset the connection under urllib.
        request = urllib.request.Request(f"{server.url}/models/default/fedsr-x2", data=os.urandom(4 << 20),
                                         method="PUT", headers={"Authorization": "Bearer wrong",
                                                                "X-Srtools-Version": "1"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=30)
        assert info.value.code == 401
        assert listing(spool) == before


def test_several_streams_each_with_its_spool_and_token(tmp_path):
    token_a, token_b = "a" * 32, "b" * 32
    spool_a, spool_b = tmp_path / "spool-a", tmp_path / "spool-b"
    body = model_file(tmp_path / "m.safetensors")
    with Server("sr-receive", "--stream", f"studio-1={spool_a}:{write_token(tmp_path / 'ta', token_a)}",
                "--stream", f"studio-2={spool_b}:{write_token(tmp_path / 'tb', token_b)}") as server:
        assert server.info["streams"] == {"studio-1": str(spool_a), "studio-2": str(spool_b)}
        url_a, url_b = f"{server.url}/models/studio-1/fedsr-x2", f"{server.url}/models/studio-2/fedsr-x2"
        assert put(url_a, body, version=3, token=token_b)[0] == 401
        assert put(url_b, body, version=3, token=token_a)[0] == 401
        assert put(url_a, body, version=3, token=token_a)[0] == 201
        assert put(url_b, body, version=8, token=token_b)[0] == 201
    assert Spool(spool_a).current("fedsr", 2).version == 3 and Spool(spool_a).versions("fedsr", 2) == [3]
    assert Spool(spool_b).current("fedsr", 2).version == 8 and Spool(spool_b).versions("fedsr", 2) == [8]


def on_publish(url: str, **form) -> int:
    """POST an nginx-rtmp on_publish form; the status."""
    data = urllib.parse.urlencode({"call": "publish", "app": "live", "addr": "127.0.0.1", **form}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/on_publish", data=data), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_on_publish_admits_a_known_key_with_its_token_only(receiver):
    server, _ = receiver
    assert on_publish(server.url, name="default", token=TOKEN) == 204
    assert on_publish(server.url, name="default", token=TOKEN[:-1] + "x") == 403
    assert on_publish(server.url, name="default") == 403
    assert on_publish(server.url, name="other", token=TOKEN) == 403


def test_a_publisher_over_the_limit_is_refused_until_one_leaves(tmp_path):
    streams = [arg for key in ("a", "b", "c") for arg in ("--stream", f"{key}={tmp_path / key}")]
    token = write_token(tmp_path / "token")
    with Server("sr-receive", *streams, "--token-file", token, "--max-publishers", 2) as server:
        assert on_publish(server.url, name="a", token=TOKEN, clientid="1") == 204
        assert on_publish(server.url, name="b", token=TOKEN, clientid="2") == 204
        assert on_publish(server.url, name="c", token=TOKEN, clientid="3") == 403  # a third stream
        assert on_publish(server.url, name="a", token=TOKEN, clientid="4") == 204  # a key again: counted once
        assert post_form(f"{server.url}/on_publish_done", name="b", clientid="2") == 204
        assert on_publish(server.url, name="c", token=TOKEN, clientid="5") == 204
        code, err = server.stop()
    refusals = [line for line in err.splitlines() if "warning: refused" in line]
    assert refusals == ["sr-receive: warning: refused POST /on_publish from 127.0.0.1: 403 stream 'c' may not "
                        "publish: 2 streams are publishing, the most allowed (--max-publishers 2)"], err


def post_form(url: str, **form) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=urllib.parse.urlencode(form).encode()),
                                    timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_unknown_stream_is_404_naming_the_keys_that_work(tmp_path):
    with Server("sr-receive", "--stream", f"studio={tmp_path / 's'}", "--stream", f"news={tmp_path / 'n'}",
                "--token-file", write_token(tmp_path / "token")) as server:
        status, answer = get(f"{server.url}/models/default/fedsr-x2")
    assert status == 404 and "KEY one of news, studio" in answer["error"] and "fedsr, tcsr" in answer["error"]


def metadata_bomb(path: Path, hparams: dict) -> bytes:
    """A valid safetensors file of a few hundred bytes whose metadata describes a big F-EDSR."""
    from safetensors.torch import save_file

    save_file({"head.weight": torch.zeros(1)}, str(path),
              metadata={"format": modelfile.FORMAT, "arch": "fedsr", "hparams": json.dumps(hparams), "scale": "2"})
    return path.read_bytes()


def test_metadata_that_describes_a_huge_network_is_refused_before_building_it(receiver, tmp_path):
    server, spool = receiver
    before = listing(spool)
    url = f"{server.url}/models/default/fedsr-x2"
    for hparams, message in [({"scale": 2, "channels": 1024, "blocks": 8}, "channels=1024 is over fedsr's limit"),
                             ({"scale": 2, "channels": 4096, "blocks": 64}, "channels=4096 is over fedsr's limit"),
                             ({"scale": 2, "channels": 256, "blocks": 64}, "weights do not fit")]:
        body = metadata_bomb(tmp_path / "bomb.safetensors", hparams)
        assert len(body) < 400
        status, answer = put(url, body, version=9)
        assert (status, message in answer["error"]) == (422, True), answer
    assert listing(spool) == before
    peak = int(re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{server.process.pid}/status").read_text(), re.M)[1])
    assert peak < 400 * 1024, f"{peak} kB"  # building 256x64 alone would take 300 MB more
    code, err = server.stop()
    assert "Traceback" not in err and "internal error" not in err, err
    expect_error(run_command("sr-serve", "--model", tmp_path / "bomb.safetensors", input=b""), 4, "weights do not fit")


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1e3"])
def test_a_content_length_that_is_not_a_number_is_400(receiver, length):
    server, _ = receiver
    answer = raw_http(server.url, b"POST /on_publish HTTP/1.1\r\nHost: x\r\nContent-Length: " + length +
                      b"\r\n\r\nname=default")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Length is not one number" in answer, answer
    assert on_publish(server.url, name="default", token=TOKEN) == 204  # still serving
    code, err = server.stop()
    assert "Traceback" not in err, err


@pytest.mark.slow
def test_slow_clients_hold_neither_threads_nor_temporary_files(receiver):
    """300 uploads trickling their body a byte a second: each is cut off when its time (10 s, and its
    length at 16 KiB/s) is up, at most 256 hold a thread meanwhile, and no temporary file is left."""
    server, spool = receiver
    head = (b"PUT /models/default/fedsr-x2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-Srtools-Version: 1\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    parts = urllib.parse.urlsplit(server.url)
    clients = []
    try:
        for _ in range(300):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            sock.sendall(head)
            clients.append(sock)
        began, threads, open_clients = time.monotonic(), [], set(clients)
        while open_clients and time.monotonic() - began < 30:
            for sock in list(open_clients):
                try:
                    sock.send(b"x")
                    sock.setblocking(False)
                    if sock.recv(4096) == b"":
                        open_clients.discard(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    open_clients.discard(sock)
                finally:
                    sock.setblocking(True)
            status = Path(f"/proc/{server.process.pid}/status").read_text()
            threads.append(int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1]))
            time.sleep(1)
        elapsed = time.monotonic() - began
    finally:
        for sock in clients:
            sock.close()
    assert not open_clients and elapsed < 25, (len(open_clients), elapsed)
    assert max(threads) <= 256 + 8, max(threads)  # the cap, and the server's own few threads
    assert list((spool / "tmp").iterdir()) == []
    assert get(f"{server.url}/models/default/fedsr-x2")[0] == 200  # serving again
    code, err = server.stop()
    assert "Traceback" not in err and "refused: 256 connections served at once" in err, err[-2000:]


def test_bad_arguments(tmp_path):
    token = write_token(tmp_path / "token")
    no_env = {"SRTOOLS_UPLOAD_TOKEN": ""}
    expect_error(run_command("sr-receive", "--token-file", token), 2, "give --spool")
    expect_error(run_command("sr-receive", "--spool", tmp_path / "s", env=no_env), 2, "no upload token")
    expect_error(run_command("sr-receive", "--spool", tmp_path / "s", "--token-file", tmp_path / "missing"), 2,
                 "cannot read the token file")
    expect_error(run_command("sr-receive", "--stream", "no-equals-sign", "--token-file", token), 2, "KEY=SPOOL_DIR")
    expect_error(run_command("sr-receive", "--stream", "../x=dir", "--token-file", token), 2, "KEY=SPOOL_DIR")
    expect_error(run_command("sr-receive", "--spool", tmp_path / "s", "--stream", f"default={tmp_path}/t",
                             "--token-file", token), 2, "given twice")
    assert b"--token " not in run_command("sr-receive", "--help").stdout


@pytest.fixture
def nginx_receive(tmp_path, receiver):
    """conf/nginx-receive.conf on a free port with a self-signed certificate for 127.0.0.1, in front
    of ``receiver``: (https URL, certificate, server spool)."""
    if NGINX is None or shutil.which("openssl") is None:
        pytest.skip("nginx or openssl is not installed")
    server, spool = receiver
    prefix = tmp_path / "nginx"
    (prefix / "state").mkdir(parents=True)
    cert, key = prefix / "cert.pem", prefix / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_TEMPLATE.read_text().replace("@RECEIVE_LISTEN@", f"127.0.0.1:{port}")
                    .replace("@RECEIVE_CERT@", str(cert)).replace("@RECEIVE_KEY@", str(key))
                    .replace("@RECEIVE_UPSTREAM@", server.url.removeprefix("http://"))
                    .replace("@RECEIVE_STATE@", str(prefix / "state")))
    with running_nginx(conf, prefix, port):
        yield f"https://127.0.0.1:{port}", cert, spool


def test_behind_nginx_with_tls(nginx_receive, tmp_path):
    url, cert, spool = nginx_receive
    push = Spool(tmp_path / "push", create=True)
    hparams = {"scale": 2, "channels": 4, "blocks": 1}
    push.publish(archs.build("fedsr", hparams), modelfile.ModelInfo("fedsr", hparams, 2))
    upload = ["--spool", push.root, "--to", f"{url}/models/default", "--uplink", 8000, "--once", "-q"]
    result = run_command("sr-upload", *upload, env={"SRTOOLS_UPLOAD_TOKEN": TOKEN, "SSL_CERT_FILE": str(cert)})
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["status"] == "uploaded"
    assert Spool(spool).current("fedsr", 2).version == 1
    # The certificate is checked, and refusals pass through nginx.
    expect_error(run_command("sr-upload", *upload, env={"SRTOOLS_UPLOAD_TOKEN": TOKEN, "SSL_CERT_FILE": ""}), 1)
    expect_error(run_command("sr-upload", *upload, env={"SRTOOLS_UPLOAD_TOKEN": "w" * 20,
                                                        "SSL_CERT_FILE": str(cert)}), 1, "refused the token")


def test_metrics_and_stats_count_uploads_refusals_and_the_reported_request(tmp_path):
    spool, stats = tmp_path / "server-spool", tmp_path / "stats" / "sr-receive.json"
    stats.parent.mkdir()
    with Server("sr-receive", "--spool", spool, "--token-file", write_token(tmp_path / "token"),
                "--stats", stats) as server:
        def scrape() -> dict[str, float]:
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:  # no token needed
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return check_metrics(response.read().decode())

        before = scrape()
        assert before['srtools_receive_uploads_total{stream="default"}'] == 0
        body = model_file(tmp_path / "m.safetensors")
        request = {"t": 12.5, "pair": 50, "psnr": 30.1, "created": "2025-01-01T00:00:00+0000", "secret": "x" * 10}
        status, _ = put(f"{server.url}/models/default/fedsr-x2", body, version=3,
                        headers={"X-Srtools-Request": json.dumps(request)})
        assert status == 201
        assert put(f"{server.url}/models/default/fedsr-x2", body, version=3)[0] == 409  # not newer
        assert put(f"{server.url}/models/nobody/fedsr-x2", body, version=4)[0] == 404
        after = scrape()
    assert after['srtools_receive_uploads_total{stream="default"}'] == 1
    assert after['srtools_receive_upload_bytes_total{stream="default"}'] == len(body)
    assert after['srtools_receive_refusals_total{stream="default"}'] == 1
    assert after['srtools_receive_refusals_total{stream=""}'] == 1
    assert after['srtools_receive_model_version{stream="default",model="fedsr-x2"}'] == 3
    assert after['srtools_receive_last_request_stream_seconds{stream="default"}'] == 12.5
    document = json.loads(stats.read_text())
    assert document["format"] == "sr-receive-stats/1" and document["refused"] == 1
    default = document["streams"]["default"]
    assert (default["accepted"], default["refused"], default["bytes"]) == (1, 1, len(body))
    upload = default["last_upload"]
    assert (upload["arch"], upload["scale"], upload["version"], upload["bytes"]) == ("fedsr", 2, 3, len(body))
    assert default["models"]["fedsr-x2"] == upload
    assert default["last_request"] == {"t": 12.5, "pair": 50, "psnr": 30.1, "created": "2025-01-01T00:00:00+0000",
                                       "received": upload["received"]}  # the unknown field is dropped
