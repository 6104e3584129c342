"""End to end: train on the first seconds of a clip, serve the rest through a real shell pipeline
(ffmpeg | sr-serve | ffmpeg), and beat ffmpeg's own bicubic on frames the model never saw."""

import json
import subprocess

import pytest

from conftest import COMMAND_ENV, ROOT, make_clip, run_command


@pytest.mark.slow
def test_trained_model_beats_ffmpeg_bicubic_through_the_shell_pipeline(tmp_path):
    clip = make_clip(tmp_path / "hr.mp4", size="320x192", seconds=4, source="testsrc2")
    trained = run_command("sr-train", "--spool", tmp_path / "spool", "--hr", clip, "--duration", "2",
                          "--channels", "8", "--blocks", "2", "--max-seconds", "25")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["gain_db"] > 0

    rest = f"-ss 2 -i {clip}"
    script = f"""
    set -e
    ffmpeg -v error {rest} -f yuv4mpegpipe original.y4m
    ffmpeg -v error {rest} -vf scale=iw/2:ih/2:flags=area -c:v libx264 -crf 23 received.mp4
    ffmpeg -v error -i received.mp4 -vf scale=iw*2:ih*2:flags=bicubic -f yuv4mpegpipe bicubic.y4m
    ffmpeg -v error -i received.mp4 -f yuv4mpegpipe - | {ROOT}/bin/sr-serve --spool spool \\
        | ffmpeg -v error -f yuv4mpegpipe -i - -c:v ffv1 served.mkv
    {ROOT}/bin/sr-compare original.y4m served.mkv bicubic.y4m -l served -l bicubic
    """
    result = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=COMMAND_ENV, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    served, bicubic = (json.loads(line) for line in result.stdout.splitlines())
    assert served["frames"] == bicubic["frames"] == 50
    assert served["y_psnr_db"] > bicubic["y_psnr_db"] + 0.5, (served, bicubic)
