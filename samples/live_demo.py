"""make demo: the whole live system on one machine, from separate commands, for about a minute of stream.

Push side (its own spool): sr-push publishes the low-res stream over RTMP and samples training pairs,
sr-monitor watches the model's Y-PSNR and asks for training on scene changes, sr-train --watch
trains F-EDSR online, sr-upload sends each new model through the token bucket; their JSON lines go
into the push spool, where sr-push's status line reads them. Server side (its own spool): sr-live
(ffmpeg ingest, sr-serve --realtime, sr-tcsr, sr-hls --serve with the LR rendition and the
comparison player, sr-receive). At the end, a summary (Y-PSNR over stream time against bicubic as
sr-monitor measured it, models published, uploaded and swapped in, TCSR frames refined, the delay
from the publisher's start to the first HLS segment), and a picture, demo-output/quality.png.

How the picture measures the server's output: sr-hls keeps every segment of the session (the
playlists list them all), so the SR and LR renditions, joined and decoded, are the stream the
viewers got, frame by frame; frame n of both is frame n of the sample (every stage passes every
frame in order), which the demo checks first, at the start and at the end of the session: among
offsets of up to three frames, the best match is 0. The super-resolved rendition and bicubic of the
LR rendition are scored against the sample (Y-PSNR per second of stream); the events come from the
stages' records: scene cuts from the sample's pictures, training requests from sr-monitor's lines
(stream time), publications from the push spool's model files (their time, moved to stream time by
the pool's pairs, whose files are written as they are sampled), swap-ins and TCSR's frames from the
per-frame logs of sr-serve and sr-tcsr (--frame-log).

    python samples/live_demo.py [--input CLIP] [--out demo-output] [--seconds 60] [--serve 127.0.0.1:8080]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import plot, video  # noqa: E402
from srtools.evaluate import Evaluation, best_offset, evaluate, hr_filter  # noqa: E402
from srtools.ladder import parse_media_playlist  # noqa: E402
from srtools.live.chain import Chain, srtools_command  # noqa: E402
from srtools.live.pool import Pool  # noqa: E402

FPS = 25
SCALE = 2
SEGMENT = 2.0
SCENES = [  # lavfi sources of the embedded sample, one scene each, with a tone that changes with the scene
    ("testsrc2=size=640x360:rate=25", 440),
    ("mandelbrot=size=640x360:rate=25", 660),
    ("testsrc=size=640x360:rate=25,hue=H=0.5*t", 550),
]


def make_sample(path: Path, seconds: float) -> None:
    """A multi-scene clip with audio, from ffmpeg's lavfi sources (so online retraining shows)."""
    part = seconds / len(SCENES)
    args = ["ffmpeg", "-v", "error", "-y"]
    for source, _ in SCENES:
        args += ["-f", "lavfi", "-t", f"{part:g}", "-i", source]
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


def wait_for_segments(hls: Path, seconds: float, timeout: float) -> None:
    """Until the SR and LR renditions both list ``seconds`` of stream (their last segments written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(sum(e.duration for e in parse_media_playlist((hls / f"{r}.m3u8").read_text()).entries) >= seconds
                   for r in ("sr", "lr")):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.5)


def forward(stream, prefix: bytes = b"") -> threading.Thread:
    """Copy a child's pipe to our stderr, line by line, on a thread."""
    def run() -> None:
        for line in stream:
            sys.stderr.buffer.write(prefix + line)
            sys.stderr.buffer.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@dataclasses.dataclass
class DemoRun:
    """What a demo run left behind, for the summary's sections and the plot."""

    out: Path
    clip: Path
    seconds: float  # of the stream
    startup: float | None  # from the publisher's start to the first HLS segment
    quality: Evaluation | None = None
    plot: Path | None = None

    @property
    def push_spool(self) -> Path:
        return self.out / "push-spool"

    def lines(self, name: str) -> list[dict]:
        """The JSON lines a push-side command appended to the push spool (sr-monitor, sr-train, sr-upload)."""
        try:
            text = (self.push_spool / name).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def stats(self, stage: str) -> dict:
        """The final counters of ``stage`` in the session (--stats)."""
        try:
            return json.loads((self.out / "stats" / f"{stage}-1.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def frames(self, stage: str) -> list[dict]:
        """The per-frame log of ``stage`` in the session (--frame-log)."""
        try:
            text = (self.out / "stats" / f"{stage}-1.jsonl").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def joined_rendition(hls: Path, rendition: str, target: Path) -> Path:
    """The rendition's segments, as its playlist lists them, in one MPEG-TS file."""
    entries = parse_media_playlist((hls / f"{rendition}.m3u8").read_text()).entries
    with open(target, "wb") as out:
        for entry in entries:
            out.write((hls / entry.name).read_bytes())
    return target


def first_lumas(source: str, count: int, **decode_options) -> list[np.ndarray]:
    with video.open_source(source, **decode_options) as reader:
        return [frame.y.copy() for frame, _ in zip(reader, range(count))]


def measure_quality(run: DemoRun) -> Evaluation | None:
    """The SR rendition and bicubic of the LR rendition against the sample, frame by frame, once their
    alignment is checked (see the module docstring); None, with the reason printed, when it is off."""
    work = run.out / "measure"
    work.mkdir(exist_ok=True)
    sr, lr = joined_rendition(run.out / "hls", "sr", work / "sr.ts"), joined_rendition(run.out / "hls", "lr",
                                                                                        work / "lr.ts")
    served = round(sum(e.duration for e in parse_media_playlist((run.out / "hls/sr.m3u8").read_text()).entries) * FPS)
    # 4 s after the first second, and the last 4 s: a frame lost or added on the way would show in one.
    for window in (slice(FPS, 5 * FPS), slice(max(0, served - 4 * FPS), served)):
        hr = first_lumas(str(run.clip), window.stop, vf=hr_filter(SCALE, FPS))[window]
        offsets = {name: best_offset(hr, first_lumas(str(path), window.stop)[window], scale)[0]
                   for name, path, scale in (("SR rendition", sr, 1), ("LR rendition", lr, SCALE))}
        if any(offsets.values()):
            say(f"== no quality plot: from frame {window.start}, the renditions are off the sample by {offsets} "
                "frames")
            return None
    return evaluate(str(run.clip), str(lr), SCALE, sr_source=str(sr), fps=FPS, strict=False)


def stream_time_offset(pool: Pool) -> float | None:
    """Wall-clock time minus stream time on the push side: the median over the pool's pairs of a pair
    file's time (written as it is sampled) minus the pair's stream time."""
    gaps = []
    for seq in pool.sequence():
        path = pool.dir / pool.name(seq)
        try:
            with np.load(path, allow_pickle=False) as data:
                gaps.append(path.stat().st_mtime - float(data["t"]))
        except (OSError, ValueError, KeyError):
            continue
    return statistics.median(gaps) if gaps else None


def events(run: DemoRun) -> list[plot.Event]:
    """Scene cuts, training requests, model publications and swap-ins, in stream time, during the stream."""
    found = [plot.Event(t, "scene cut") for t in (run.quality.cuts() if run.quality else [])]
    found += [plot.Event(s["t"], "training request") for s in run.lines("monitor.jsonl") if s.get("request")]
    offset = stream_time_offset(Pool(run.push_spool))
    if offset is not None:
        for path in sorted((run.push_spool / "models").glob("fedsr-x2-*.safetensors")):
            version = int(path.stem.rsplit("-", 1)[1])
            found.append(plot.Event(path.stat().st_mtime - offset, "model published", f"v{version}"))
    on_air = None
    for line in run.frames("sr-serve"):
        if line["model"] != on_air:
            on_air = line["model"]
            if on_air is not None:
                found.append(plot.Event(line["frame"] / FPS, "model on air", on_air))
    return [event for event in found if event.t <= run.seconds]


def tcsr_share(run: DemoRun, seconds: int) -> list[float]:
    """The share of each second's frames that sr-tcsr refined."""
    refined, counts = np.zeros(seconds), np.zeros(seconds)
    for line in run.frames("sr-tcsr"):
        second = line["frame"] // FPS
        if second < seconds:
            counts[second] += 1
            refined[second] += line["engine"]
    return [float(r / c) if c else 0.0 for r, c in zip(refined, counts)]


def draw_quality(run: DemoRun) -> Path | None:
    """demo-output/quality.png: Y-PSNR per second of the SR rendition and of bicubic, the events, TCSR's share."""
    run.quality = measure_quality(run)
    if run.quality is None:
        return None
    seconds = run.quality.per_second()
    path = run.out / "quality.png"
    plot.quality_chart(path, [t for t, _ in seconds],
                       {"super-resolved (the SR rendition, as served)": [m["sr_psnr"] for _, m in seconds],
                        "bicubic (of the LR rendition)": [m["bicubic_psnr"] for _, m in seconds]},
                       title=f"make demo: {run.clip.name} through the live system, Y-PSNR against the source",
                       events=events(run), share=("frames refined by TCSR", tcsr_share(run, len(seconds))))
    return path


# The summary: one function per section, each printing its lines (add a section by adding a function).

def say(text: str) -> None:
    print(text, file=sys.stderr)


def monitor_section(run: DemoRun) -> None:
    """Y-PSNR of the current model against bicubic per 10 s of stream, as sr-monitor measured it."""
    samples = run.lines("monitor.jsonl")
    say(f"{'stream time':>12} {'model Y-PSNR':>13} {'bicubic':>8} {'gain':>6} {'model':>6} {'requests':>8}")
    window = 10
    for start in range(0, int(run.seconds), window):
        part = [s for s in samples if start <= s["t"] < start + window]
        if part:
            psnr = sum(s["psnr"] for s in part) / len(part)
            bicubic = sum(s["bicubic_psnr"] for s in part) / len(part)
            models = {s["model"] for s in part if s["model"] is not None}
            label = f"v{max(models)}" if models else "none"
            say(f"{start:>5}-{start + window:<4} s {psnr:13.2f} {bicubic:8.2f} {psnr - bicubic:+6.2f} {label:>6} "
                f"{sum(s['request'] for s in part):>8}")


def models_section(run: DemoRun) -> None:
    events = run.lines("train.jsonl")
    published = [e for e in events if e["event"] == "published"]
    sessions = [e for e in events if e["event"] == "session"]
    uploaded = [u for u in run.lines("upload.jsonl") if u.get("status") == "uploaded"]
    say(f"training sessions: {len(sessions)} ({', '.join(e['reason'] for e in sessions)}); models published: "
        f"{len(published)}; uploaded: {len(uploaded)} ({', '.join('v' + str(u['version']) for u in uploaded)}); "
        f"swapped in by sr-serve: {run.stats('sr-serve').get('swaps', 0)}")


def tcsr_training(run: DemoRun) -> str:
    """What sr-train's refine sessions did (TCSR trains in the compute the F-EDSR sessions leave)."""
    tcsr = [e for e in run.lines("train.jsonl") if e.get("arch") == "tcsr"]
    stopped = [e for e in tcsr if e["event"] == "stopped"]
    published = [e for e in tcsr if e["event"] == "published"]
    if not stopped and not published:
        return "no TCSR refine session ran"
    seconds = sum(e["seconds"] for e in stopped)
    return (f"{len(stopped)} TCSR refine session(s) ended, {seconds:.0f} s of compute, "
            + (f"{len(published)} TCSR model(s) published, best held-out gain "
               f"{max(e['gain_db'] for e in published):+.2f} dB" if published else "no held-out gain yet"))


def stages_section(run: DemoRun) -> None:
    serve, tcsr = run.stats("sr-serve"), run.stats("sr-tcsr")
    share = serve.get("block_share")
    say(f"sr-serve: {serve.get('frames', 0)} frames, {serve.get('engine_frames', 0)} with network output"
        + (f" ({100 * share:.0f}% of the blocks of those upscaled in blocks)" if share is not None else "")
        + f", {serve.get('late', 0)} late; sr-tcsr: {tcsr.get('engine_frames', 0)} frames refined, "
        + f"{tcsr.get('predicted_to_lose', 0)} passed through as predicted to lose ({tcsr_training(run)})")


def quality_section(run: DemoRun) -> None:
    if run.quality is None:
        return
    q = run.quality
    say(f"as served, against the source ({len(q.scores)} frames): the SR rendition {q.mean('sr_psnr'):.2f} dB, "
        f"bicubic of the LR rendition {q.mean('bicubic_psnr'):.2f} dB "
        f"({q.mean('sr_psnr') - q.mean('bicubic_psnr'):+.2f} dB)")


def startup_section(run: DemoRun) -> None:
    if run.startup is not None:
        say(f"first HLS segment listed {run.startup:.1f} s after the publisher started")


SECTIONS: list[Callable[[DemoRun], None]] = [monitor_section, models_section, stages_section, quality_section,
                                             startup_section]


def summary(run: DemoRun) -> None:
    say("\n== summary")
    for section in SECTIONS:
        section(run)
    if run.plot is not None:
        say(f"== quality plot: {run.plot}")


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
    for name in ("push-spool", "server-spool", "hls", "stats", "measure"):
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    clip = Path(args.input) if args.input else out / "sample.mp4"
    if not args.input:
        say(f"== sample: {args.seconds:g} s, {len(SCENES)} scenes with audio -> {clip}")
        make_sample(clip, args.seconds)
    length = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                   str(clip)], capture_output=True, text=True, check=True).stdout)
    token = out / "token"
    token.write_text(secrets.token_hex(16) + "\n")
    token.chmod(0o600)
    key = "demo"  # the stream key: sr-receive takes the stream's models at /models/KEY
    rtmp = f"rtmp://127.0.0.1:{free_port()}/live/{key}"
    push_spool = out / "push-spool"
    push_spool.mkdir()
    with Chain(prefix="sr-demo-") as chain:
        # Every segment stays listed (the quality plot decodes the whole session); every frame is logged.
        server = chain.start("sr-live", srtools_command(
            "sr-live", rtmp, "--spool", out / "server-spool", "--hls", out / "hls", "--serve", args.serve,
            "--receive", "127.0.0.1:0", "--token-file", token, "--sessions", "1", "--stats-dir", out / "stats",
            "--frame-logs", "--segment", SEGMENT, "--list-size", 1000), stdout=subprocess.PIPE)
        urls = announced(server)
        say(f"== watch: {urls['hls']}/  (the comparison player; HLS: {urls['hls']}/index.m3u8, "
            f"statistics: {urls['hls']}/stats.json and /metrics)")
        with open(push_spool / "train.jsonl", "w") as train_log, open(push_spool / "upload.jsonl", "w") as upload_log:
            chain.start("sr-train", srtools_command("sr-train", "--watch", "--spool", push_spool, "--mode", "adaptive",
                                                    "--max-seconds", "20", "--threads", "1", "--keep-models", "0"),
                        stdout=train_log)  # every model kept: the plot marks each publication
            chain.start("sr-monitor", srtools_command("sr-monitor", "--spool", push_spool, "--threads", "1",
                                                      "--log", push_spool / "monitor.jsonl"))
            chain.start("sr-upload", srtools_command("sr-upload", "--spool", push_spool, "--to",
                                                     f"{urls['receive']}/models/{key}", "--token-file", token,
                                                     "--uplink", "2000", "--share", "0.2"), stdout=upload_log)
            started = time.monotonic()
            # Its status as log lines (a pipe, not the terminal the other commands write to too).
            push = chain.start("sr-push", srtools_command("sr-push", clip, "--to", rtmp, "--token-file", token,
                                                          "--spool", push_spool, "--segment", SEGMENT),
                               stderr=subprocess.PIPE)
            forwarding = forward(push.process.stderr)
            startup = first_segment_time(out / "hls" / "sr.m3u8", started, timeout=60)
            chain.wait(["sr-push"])
            forwarding.join(5)
            say("== the publisher is done; waiting for the server to finish the stream")
            wait_for_frames(out / "stats" / "sr-tcsr-1.json", round(length * FPS) - 5, timeout=60)
            wait_for_segments(out / "hls", length - SEGMENT / 2, timeout=30)
            time.sleep(2)  # the last monitor samples
            run = DemoRun(out, clip, length, startup)
            say("== measuring the renditions against the source")
            run.plot = draw_quality(run)
            summary(run)
            if keep_serving:
                say(f"== the HLS stream stays at {urls['hls']}/ until you press Ctrl-C")
                chain.wait(["sr-live"])


if __name__ == "__main__":
    main()
