r"""srtools-live - running the live system: the push side, the server side, shell recipes and services

DESCRIPTION
The live system is separate commands wired with pipes, named FIFOs and two spools, one on each
side. The push side (the broadcaster's machine) sends low-resolution video over RTMP, samples
training pairs, trains F-EDSR online when the content asks for it and uploads each new model; the
server side upscales the stream in real time with the newest model, refines what it can with TCSR
and serves HLS. (This module, srtools.live, holds their code; it never imports srtools.tiled.)

PUSH SIDE
    sr-push camera.mp4 --to rtmp://server:1935/live/studio --token-file token --spool push &
    sr-monitor --spool push --threads 1 --log monitor.jsonl &
    sr-train --watch --spool push --mode adaptive --threads 1 > train.jsonl &
    sr-upload --spool push --to https://server/models/studio --token-file token --uplink 4000 &

The token is the stream's secret, one file on each side (chmod 600), never on a command line:
sr-push adds it to the publish URL (?token=, checked by the server's listener or by nginx-rtmp
through sr-receive), sr-upload sends it with every model. sr-push decodes the input once,
publishes the degraded stream (area downscale, x264) and samples HR and decoded-LR pairs into
push/pool; sr-monitor writes a request into push/requests when the
model's Y-PSNR departs from its trend; sr-train --watch trains on the pool and publishes into
push/models; sr-upload sends the newest version at 20% of the uplink. Use --threads 1 where the
commands share a few cores: two torch threads per process ran 20x slower on a loaded 2-core machine.

SERVER SIDE
One stream, with the embedded RTMP listener:

    sr-live rtmp://0.0.0.0:1935/live/studio --spool server --hls /var/www/hls \
        --serve 0.0.0.0:8080 --receive 127.0.0.1:8090 --token-file token

The listener admits a publisher only to the stream key studio with the token of the file token
(rtmp://server:1935/live/studio?token=..., as sr-push --token-file sends it); anyone else is
refused in one log line while sr-live waits for the next publisher, as it does when a connection
ends before publishing anything. The receiver takes the models of /models/studio. The frame rate
is the publisher's (--fps normalises it); a publisher without audio makes HLS without audio.
Every stage dies with sr-live, even killed with SIGKILL, and a new sr-live clears what a killed
one left. Limits: frames of at most 3840x2160 pixels once upscaled (--max-pixels); the HTTP
servers give a request 10 s for its head, cap connections at 256 and answer a malformed request
with 400 (sr-receive(1), docs/design.md).

The same chain by hand (sr-live adds teardown, restarts per publisher, the publisher check and
the receiver):

    d=$(mktemp -d); mkfifo $d/video.y4m $d/audio.aac
    sr-hls $d/video.y4m --audio $d/audio.aac --audio-format aac --out hls --continue \
        --serve 127.0.0.1:8080 &
    ffmpeg -listen 1 -i rtmp://0.0.0.0:1935/live/studio -map 0:v:0 -vf format=yuv420p \
        -fps_mode cfr -f yuv4mpegpipe - -map 0:a:0 -c:a copy -f adts -y $d/audio.aac |
      sr-serve --realtime --spool server --threads 1 |
      sr-tcsr --spool server --budget-ms 15 --threads 1 > $d/video.y4m

(ffmpeg's listener takes any publisher to its port, whatever the key, and needs audio.)

Many streams: nginx-rtmp with conf/nginx-rtmp.conf accepts the publishers, asks sr-receive (one
--stream KEY=SPOOL:TOKEN_FILE per stream, --max-publishers N) whether each key and token may
publish, and starts sr-live --pull per stream (exec_push) with its own spool and HLS directory;
when a stream ends, nginx sends its sr-live SIGUSR1, which lets the end of the stream drain into
HLS before it exits. How many streams one server carries: docs/benchmarks.md (bench_capacity.py).

SERVICES
conf/systemd/ in the srtools sources has units templated per stream (the instance name is the
stream key), restarting on failure:

    systemctl enable --now sr-live@studio.service      # server: /etc/srtools/studio.env
    systemctl enable --now sr-push@studio.service      # push side: the four commands above

Batch evaluation of recorded streams, e.g. nightly from cron: score a recording's pool with the
current model and keep the series, or evaluate whole recordings with sr-eval(1) (a model trained
on each, SR and bicubic scored frame by frame; its man page has the cron line).

    15 3 * * *  sr-monitor --once --spool /srv/push/studio > /srv/eval/studio-$(date +\%F).jsonl

WATCHING AND MONITORING
sr-live --serve serves, beside the HLS ladder (index.m3u8: the super-resolved rendition and the
low-res one as received, one audio), a comparison player at / (either rendition, or a wipe
between them with a draggable divider, kept in sync) with a statistics panel fed by /stats.json,
and /metrics in the Prometheus text format; sr-receive and sr-proxy answer /metrics too
(conf/prometheus.yml in the srtools sources scrapes all three). sr-push keeps a status line on
its terminal (the bit rate sent, pairs, gain, training, last upload) when its spool holds the
other push commands' JSON lines, as the systemd unit writes them.

FILES
Spools: srtools-spool(5). Frames between commands: srtools-y4m(7).
"""
