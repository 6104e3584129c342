"""make demo: the whole live system on one machine, from separate commands, for about a minute of stream.

Push side (its own spool): sr-push publishes the low-res stream over RTMP and samples training pairs,
sr-monitor watches the model's Y-PSNR and asks for training on scene changes, sr-train --watch
trains F-EDSR online, sr-upload sends each new model through the token bucket. Server side (its own
spool): sr-live (ffmpeg ingest, sr-serve --realtime, sr-tcsr, sr-hls --serve, sr-receive). At the
end, a summary: Y-PSNR over stream time against bicubic, models published, uploaded and swapped in,
TCSR frames refined, and the delay from the publisher's start to the first HLS segment.

    python samples/live_demo.py [--input CLIP] [--out demo-output] [--seconds 60] [--serve 127.0.0.1:8080]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools.live.chain import Chain, srtools_command  # noqa: E402

SCENES = [  # lavfi sources of the embedded sample, one scene each, with a tone that changes with the scene
    ("testsrc2=size=640x360:rate=25", 440),
    ("mandelbrot=size=640x360:rate=25", 660),
    ("testsrc=size=640x360:rate=25,hue=H=0.5*t", 550),
]


def make_sample(path: Path, seconds: float) -> None:
    """A multi-scene clip with audio, from ffmpeg's lavfi sources (so online retraining shows)."""
    part = seconds / len(SCENES)
    args = ["ffmpeg", "-v", "error", "-y"]
    for video, _ in SCENES:
        args += ["-f", "lavfi", "-t", f"{part:g}", "-i", video]
    for _, tone in SCENES:
        args += ["-f", "lavfi", "-t", f"{part:g}", "-i", f"sine=frequency={tone}:sample_rate=48000"]
    n = len(SCENES)
    chains = ";".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}]" for i in range(n))
    pairs = "".join(f"[v{i}][{n + i}:a]" for i in range(n))
    args += ["-filter_complex", f"{chains};{pairs}concat=n={n}:v=1:a=1[v][a]", "-map", "[v]", "-map", "[a]",
             "-c:v", "libx264", "-crf", "16", "-preset", "veryfast", "-c:a", "aac", str(path)]
    subprocess.run(args, check=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def announced(stage) -> dict:
    line = stage.process.stdout.readline()
    if not line:
        raise SystemExit(f"demo: {stage.name} did not start")
    return json.loads(line)


def first_segment_time(playlist: Path, start: float, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if playlist.exists() and "#EXTINF" in playlist.read_text():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def wait_for_frames(stats: Path, frames: int, timeout: float) -> None:
    """Until the stage publishing ``stats`` has passed ``frames`` frames (its final figures)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(stats.read_text())["frames"] >= frames:
                return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.5)


def summary(out: Path, seconds: float, startup: float | None) -> None:
    samples = [json.loads(line) for line in (out / "monitor.jsonl").read_text().splitlines() if line.strip()]
    uploads = [json.loads(line) for line in (out / "upload.jsonl").read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines() if line.strip()]
    stats = {p.stem.rsplit("-", 1)[0]: json.loads(p.read_text()) for p in sorted((out / "stats").glob("*.json"))}
    print("\n== summary", file=sys.stderr)
    print(f"{'stream time':>12} {'model Y-PSNR':>13} {'bicubic':>8} {'gain':>6} {'model':>6} {'requests':>8}",
          file=sys.stderr)
    window = 10.0
    for start in range(0, int(seconds), int(window)):
        part = [s for s in samples if start <= s["t"] < start + window]
        if part:
            psnr = sum(s["psnr"] for s in part) / len(part)
            bicubic = sum(s["bicubic_psnr"] for s in part) / len(part)
            models = {s["model"] for s in part if s["model"] is not None}
            label = f"v{max(models)}" if models else "none"
            print(f"{start:>5}-{start + window:<4.0f} s {psnr:13.2f} {bicubic:8.2f} {psnr - bicubic:+6.2f} {label:>6} "
                  f"{sum(s['request'] for s in part):>8}", file=sys.stderr)
    published = [e for e in events if e["event"] == "published"]
    sessions = [e for e in events if e["event"] == "session"]
    uploaded = [u for u in uploads if u.get("status") == "uploaded"]
    serve, tcsr = stats.get("sr-serve", {}), stats.get("sr-tcsr", {})
    print(f"training sessions: {len(sessions)} ({', '.join(e['reason'] for e in sessions)}); models published: "
          f"{len(published)}; uploaded: {len(uploaded)} ({', '.join('v' + str(u['version']) for u in uploaded)}); "
          f"swapped in by sr-serve: {serve.get('swaps', 0)}", file=sys.stderr)
    print(f"sr-serve: {serve.get('frames', 0)} frames, {serve.get('engine_frames', 0)} with network output, "
          f"{serve.get('late', 0)} late; sr-tcsr: {tcsr.get('engine_frames', 0)} frames refined"
          + (" (no TCSR model in the spool: frames pass through unchanged, gain 0; train one with "
             "sr-train --arch tcsr)" if not tcsr.get("engine_frames") else ""), file=sys.stderr)
    if startup is not None:
        print(f"first HLS segment listed {startup:.1f} s after the publisher started", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="your clip (with audio) instead of the embedded sample")
    parser.add_argument("--out", default="demo-output")
    parser.add_argument("--seconds", type=float, default=60, help="length of the embedded sample")
    parser.add_argument("--serve", default="127.0.0.1:8080", help="where the HLS player is served")
    parser.add_argument("--keep-serving", action="store_true", help="serve the HLS stream until Ctrl-C at the end")
    args = parser.parse_args()
    keep_serving = args.keep_serving
    out = Path(args.out)
    for name in ("push-spool", "server-spool", "hls", "stats"):
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.input) if args.input else out / "sample.mp4"
    if not args.input:
        print(f"== sample: {args.seconds:g} s, {len(SCENES)} scenes with audio -> {clip}", file=sys.stderr)
        make_sample(clip, args.seconds)
    token = out / "token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    rtmp = f"rtmp://127.0.0.1:{free_port()}/live/demo"
    with Chain(prefix="sr-demo-") as chain:
        server = chain.start("sr-live", srtools_command(
            "sr-live", rtmp, "--spool", out / "server-spool", "--hls", out / "hls", "--serve", args.serve,
            "--receive", "127.0.0.1:0", "--token-file", token, "--sessions", "1", "--stats-dir", out / "stats"),
            stdout=subprocess.PIPE)
        urls = announced(server)
        print(f"== watch: {urls['hls']}/  (HLS: {urls['hls']}/index.m3u8)", file=sys.stderr)
        push_spool = out / "push-spool"
        with open(out / "train.jsonl", "w") as train_log, open(out / "upload.jsonl", "w") as upload_log:
            chain.start("sr-train", srtools_command("sr-train", "--watch", "--spool", push_spool, "--mode", "adaptive",
                                                    "--max-seconds", "20", "--threads", "1"), stdout=train_log)
            chain.start("sr-monitor", srtools_command("sr-monitor", "--spool", push_spool, "--threads", "1",
                                                      "--log", out / "monitor.jsonl"))
            chain.start("sr-upload", srtools_command("sr-upload", "--spool", push_spool, "--to",
                                                     f"{urls['receive']}/models/default", "--token-file", token,
                                                     "--uplink", "2000", "--share", "0.2"), stdout=upload_log)
            started = time.monotonic()
            chain.start("sr-push", srtools_command("sr-push", clip, "--to", rtmp, "--spool", push_spool))
            startup = first_segment_time(out / "hls" / "index.m3u8", started, timeout=60)
            chain.wait(["sr-push"])
            print("== the publisher is done; waiting for the server to finish the stream", file=sys.stderr)
            length = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                           "-of", "csv=p=0", str(clip)], capture_output=True, text=True,
                                          check=True).stdout)
            wait_for_frames(out / "stats" / "sr-tcsr-1.json", round(length * 25) - 5, timeout=60)
            time.sleep(2)  # the last monitor samples
            summary(out, length, startup)
            if keep_serving:
                print(f"== the HLS stream stays at {urls['hls']}/ until you press Ctrl-C", file=sys.stderr)
                chain.wait(["sr-live"])


if __name__ == "__main__":
    main()
