"""Engines for the F-EDSR forward on this CPU: torch (eager, channels-last, bf16), OpenVINO, ONNX Runtime
(fp32 and int8 post-training quantization calibrated on the stream's own frames), in one run.

Speed: frames per second of the network alone (batch 1, luma), median of --repeats timed calls after
warm-up (srtools.framefilter.measure_cost), as a ratio to torch channels-last fp32 measured in the same
run. Agreement: Y-PSNR of each engine's output against torch fp32's on real frames (99 = identical;
a trained model from --model, else random weights with a real residual, which still shows rounding
and quantization error).
OpenVINO and ONNX Runtime are optional: a line says so when the package is absent (pip install
openvino onnxruntime onnx).

    .venv/bin/python benchmarks/bench_engines.py [--model FILE] [--clip FILE] [--sizes 320x180,640x360]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from srtools import archs, metrics, modelfile, video  # noqa: E402
from srtools.framefilter import measure_cost  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


def to_luma(out: np.ndarray) -> np.ndarray:
    return np.clip(np.round(out[0, 0] * 255), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained x2 F-EDSR model file")
    parser.add_argument("--clip", default=str(MEDIA / "bottle-detection.mp4"))
    parser.add_argument("--sizes", default="320x180,640x360", help="input sizes")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        model, _ = modelfile.load(args.model, scale=2)
    else:
        torch.manual_seed(0)
        model = archs.build("fedsr", {"scale": 2, "channels": 16, "blocks": 4, "in_channels": 1})
        torch.nn.init.normal_(model.tail.weight, std=0.02)
    model.eval()
    print(f"torch {torch.__version__}, {args.threads} threads, model {'trained' if args.model else 'random'} 16x4 x2\n")
    print(f"{'input':>8} {'engine':<26} {'fps':>7} {'vs torch-CL':>11} {'vs fp32 dB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            _, frames = video.read_all(args.clip, vf=f"scale={width}:{height}:flags=area", duration=2)
            lumas = [f.y for f in frames[::5]]
            x = torch.from_numpy(lumas[0]).float().div(255)[None, None]
            with torch.no_grad():
                reference = [to_luma(model(torch.from_numpy(y).float().div(255)[None, None]).numpy()) for y in lumas]
            rows = {}

            def add(name, run, convert=None):
                seconds = measure_cost(lambda: run(x), timed=args.repeats)
                outputs = [to_luma(np.asarray(run(torch.from_numpy(y).float().div(255)[None, None]))) for y in lumas]
                agreement = [metrics.bounded_psnr(o, r) for o, r in zip(outputs, reference)]
                rows[name] = (1 / seconds, float(np.mean(agreement)))

            cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

            def bf16(t):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return cl(t.contiguous(memory_format=torch.channels_last)).float().numpy()

            with torch.no_grad():
                add("torch fp32", lambda t: model(t).numpy())
                add("torch fp32 channels-last", lambda t: cl(t.contiguous(memory_format=torch.channels_last)).numpy())
                add("torch bf16 channels-last", bf16)
            onnx_path = f"{tmp}/fedsr-{size}.onnx"
            try:
                torch.onnx.export(model, (x,), onnx_path, input_names=["x"], output_names=["y"], dynamo=False)
            except Exception as exc:  # noqa: BLE001  (an exporter problem is a finding, not a crash)
                print(f"{size:>8} onnx export failed: {exc}")
                onnx_path = None
            try:
                import openvino as ov

                compiled = ov.Core().compile_model(ov.convert_model(model, example_input=x), "CPU",
                                                   {"INFERENCE_NUM_THREADS": args.threads})
                request = compiled.create_infer_request()
                add("openvino fp32", lambda t: request.infer({0: t.numpy()})[compiled.output(0)])
            except ImportError:
                print(f"{size:>8} openvino not installed")
            if onnx_path:
                try:
                    import onnxruntime as ort
                    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

                    options = ort.SessionOptions()
                    options.intra_op_num_threads = args.threads
                    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
                    add("onnxruntime fp32", lambda t: session.run(None, {"x": t.numpy()})[0])

                    class Calibration(CalibrationDataReader):
                        def __init__(self):
                            self.items = iter([{"x": np.asarray(y, np.float32)[None, None] / 255} for y in lumas])

                        def get_next(self):
                            return next(self.items, None)

                    int8_path = f"{tmp}/fedsr-{size}-int8.onnx"
                    quantize_static(onnx_path, int8_path, Calibration(), weight_type=QuantType.QInt8,
                                    activation_type=QuantType.QUInt8)
                    int8 = ort.InferenceSession(int8_path, options, providers=["CPUExecutionProvider"])
                    add("onnxruntime int8 (static)", lambda t: int8.run(None, {"x": t.numpy()})[0])
                except ImportError:
                    print(f"{size:>8} onnxruntime not installed")
            base = rows["torch fp32 channels-last"][0]
            for name, (fps, psnr_to_fp32) in rows.items():
                print(f"{size:>8} {name:<26} {fps:>7.1f} {fps / base:>10.2f}x {psnr_to_fp32:>10.1f}")
    print("\nlast column: Y-PSNR of the engine's output against torch fp32's (99 = identical); "
          f"{time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
    main()
