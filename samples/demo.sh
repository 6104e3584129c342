#!/bin/sh
# make demo: make a sample clip, train F-EDSR briefly on its first seconds, serve the rest through
# the real shell pipeline (ffmpeg | sr-serve | file) and compare with ffmpeg's bicubic.
#   DEMO_CLIP=path.mp4  use a clip of your own instead of the generated one
#   DEMO_TRAIN_SECONDS  training time budget (default 60)
set -eu
out=${DEMO_DIR:-demo-output}
train_part=${DEMO_TRAIN_PART:-6}
rm -rf "$out/spool"
mkdir -p "$out"

if [ -n "${DEMO_CLIP:-}" ]; then
    clip=$DEMO_CLIP
else
    clip=$out/sample.mp4
    echo "== sample clip: 10 s of ffmpeg's testsrc2 source (moving shapes and text), 640x360 -> $clip" >&2
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=640x360:rate=25" -t 10 \
        -c:v libx264 -crf 14 -preset veryfast -pix_fmt yuv420p "$clip"
fi

echo "== sr-train on the first $train_part s (area downscale + x264 CRF 23, as the push side sends)" >&2
sr-train --spool "$out/spool" --hr "$clip" --duration "$train_part" --max-seconds "${DEMO_TRAIN_SECONDS:-60}" \
    > "$out/train.json"

echo "== the rest of the clip as the server receives it: low-res H.264" >&2
ffmpeg -v error -y -ss "$train_part" -i "$clip" -vf "crop=trunc(iw/4)*4:trunc(ih/4)*4:0:0,scale=iw/2:ih/2:flags=area" \
    -c:v libx264 -crf 23 "$out/received.mp4"
ffmpeg -v error -y -ss "$train_part" -i "$clip" -vf "crop=trunc(iw/4)*4:trunc(ih/4)*4:0:0" \
    -f yuv4mpegpipe "$out/original.y4m"

echo "== ffmpeg -f yuv4mpegpipe | sr-serve | ffmpeg" >&2
ffmpeg -v error -i "$out/received.mp4" -f yuv4mpegpipe - | sr-serve --spool "$out/spool" \
    | ffmpeg -v error -y -f yuv4mpegpipe -i - -c:v libx264 -crf 18 "$out/upscaled.mp4"
ffmpeg -v error -i "$out/received.mp4" -f yuv4mpegpipe - | sr-serve --spool "$out/spool" -q > "$out/upscaled.y4m"
ffmpeg -v error -y -i "$out/received.mp4" -vf "scale=iw*2:ih*2:flags=bicubic" -f yuv4mpegpipe "$out/bicubic.y4m"

echo "== quality against the original (frames not used for training)" >&2
sr-compare "$out/original.y4m" "$out/upscaled.y4m" "$out/bicubic.y4m" -l "F-EDSR (sr-serve)" \
    -l "ffmpeg bicubic" > "$out/compare.jsonl"
rm -f "$out/original.y4m" "$out/upscaled.y4m" "$out/bicubic.y4m"
echo "== done: $out/upscaled.mp4, $out/train.json, $out/compare.jsonl" >&2
