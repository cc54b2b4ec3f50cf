#!/usr/bin/python3
"""bench/cnn: images/s of shoplens' CNN engine against PyTorch (NCHW and channels-last, the faster
counts) and OpenCV DNN in the same run, on torchvision ResNet-50 and MobileNetV2 (random weights),
batch 1 and 8, 1 and 2 threads; plus the bf16 mode and its embedding cosine to fp32 on real photos.
Runtimes are interleaved in rounds and the best pass of each is kept, because the machine is
shared. Usage: speed.py SHOPLENS_BIN WORKDIR RESULTS_MD [DATA_DIR]"""
import glob
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cnn_verify"))
from export import export  # noqa: E402

bin_, work, res_md = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4] if len(sys.argv) > 4 else None
ROUNDS = int(os.environ.get("SL_BENCH_ROUNDS", "2"))
os.makedirs(work, exist_ok=True)


def best_time(fn, passes):
    """(best wall seconds, best process CPU seconds) of one pass."""
    fn()  # warm-up
    best, cbest = 1e9, 1e9
    for _ in range(passes):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best = min(best, time.perf_counter() - t)
        cbest = min(cbest, time.process_time() - c)
    return best, cbest


def shoplens_time(path, xin, threads, passes, prec="fp32"):
    r = subprocess.run([bin_, "cnn", "run", path, "--input", xin, "--out",
                        os.path.join(work, "speed.out.npy"), "--threads", str(threads), "--repeat",
                        str(passes), "--precision", prec], capture_output=True, text=True, check=True)
    return (float(re.search(r"best ([0-9.]+)\)", r.stderr).group(1)) / 1e3,
            float(re.search(r"([0-9.]+) CPU ms", r.stderr).group(1)) / 1e3)


def flops(path):
    r = subprocess.run([bin_, "cnn", "info", path], capture_output=True, text=True, check=True)
    return int(re.search(r"FLOPs per image: (\d+)", r.stdout).group(1))


def cpu_ghz():
    try:
        with open("/proc/cpuinfo") as f:
            v = [float(x) for x in re.findall(r"cpu MHz\s*:\s*([0-9.]+)", f.read())]
        return max(v) / 1e3 if v else None
    except OSError:
        return None


ghz = cpu_ghz()
FLOPS_PER_CYCLE = 32  # fp32: 2 FMA pipes x 8 lanes (AVX-512 double-pumped on Zen 4 / 2x256-bit) x 2
import json  # noqa: E402
rows_file = os.path.join(work, "speed_rows.json")
rows = [tuple(r) for r in json.load(open(rows_file))] if os.path.exists(rows_file) else []
for name in os.environ.get("SL_BENCH_MODELS", "resnet50 mobilenet_v2").split():  # "" = tables only
    model, path = export(name, work)
    fl = flops(path)
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(3))
        xin = os.path.join(work, f"speed_{batch}.npy")
        np.save(xin, x.numpy())
        try:
            net = cv2.dnn.readNetFromONNX(path)
        except cv2.error:  # OpenCV 4.6 cannot read opset-13 Clip (ReLU6); same weights at opset 10
            net = cv2.dnn.readNetFromONNX(export(name, work, opset=10)[1])
        blob = x.numpy()
        mcl = None
        for threads in (1, 2):
            passes = 4 if batch == 1 else 2
            best, cpu = {}, {}
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
            for _ in range(ROUNDS):
                with torch.inference_mode():
                    t_nchw = best_time(lambda: model(x), passes)
                    if mcl is None:
                        import copy
                        mcl = copy.deepcopy(model).to(memory_format=torch.channels_last)
                    xcl = x.contiguous(memory_format=torch.channels_last)
                    t_cl = best_time(lambda: mcl(xcl), passes)

                def cvrun():
                    net.setInput(blob)
                    net.forward()
                t_cv = best_time(cvrun, passes)
                t_sl = shoplens_time(path, xin, threads, passes)
                t_i8 = shoplens_time(path, xin, threads, passes, "int8")
                t_bf = shoplens_time(path, xin, threads, passes, "bf16")
                for k, v in (("nchw", t_nchw), ("cl", t_cl), ("cv", t_cv), ("sl", t_sl), ("i8", t_i8), ("bf", t_bf)):
                    best[k] = min(best.get(k, 1e9), v[0])
                    cpu[k] = min(cpu.get(k, 1e9), v[1])
            ptk = "cl" if best["cl"] < best["nchw"] else "nchw"
            pt = best[ptk]
            ips = {k: batch / v for k, v in best.items()}
            peak = ghz * 1e9 * FLOPS_PER_CYCLE * threads if ghz else None
            frac = (fl * ips["sl"] / peak) if peak else float("nan")
            cfrac = (fl * batch / cpu["sl"] / (ghz * 1e9 * FLOPS_PER_CYCLE)) if ghz else float("nan")
            row = (name, batch, threads, batch / pt, "channels-last" if ptk == "cl" else "NCHW",
                   ips["cv"], ips["sl"], ips["sl"] * pt / batch, ips["i8"], ips["i8"] * pt / batch,
                   ips["bf"], frac,
                   1e3 * cpu[ptk] / batch, 1e3 * cpu["cv"] / batch, 1e3 * cpu["sl"] / batch, cpu[ptk] / cpu["sl"],
                   1e3 * cpu["i8"] / batch, cfrac, 1e3 * cpu["bf"] / batch, cpu[ptk] / cpu["bf"])
            rows = [r for r in rows if tuple(r[:3]) != row[:3]] + [row]
            json.dump(rows, open(rows_file, "w"))
            print("%-13s b%d t%d  pytorch %.2f/s (%s)  opencv %.2f/s  shoplens %.2f/s (%.2fx)  int8 %.2f/s (%.2fx) "
                  "bf16 %.2f/s  peak %.0f%% | CPU ms/img: pytorch %.1f opencv %.1f shoplens %.1f (%.2fx) int8 %.1f"
                  % (row[:11] + (100 * frac,) + row[12:17]), flush=True)

# bf16 / int8 embeddings vs fp32 on real photos
cos_line = "real photos not available"
if data and os.path.isdir(data):
    imgs = sorted(glob.glob(os.path.join(data, "**", "*.jpg"), recursive=True))[:24]
    if imgs:
        parts = []
        for model in ("resnet50", "mobilenet_v2"):
            _, path = export(model, work)
            embs = {}
            for prec in ("fp32", "bf16", "int8"):
                r = subprocess.run([bin_, "cnn", "embed", path, *imgs, "--precision", prec], capture_output=True,
                                   text=True, check=True)
                embs[prec] = np.array([[float(v) for v in ln.split()[1:]] for ln in r.stdout.strip().split("\n")])
            for prec in ("bf16", "int8"):
                c = np.sum(embs["fp32"] * embs[prec], 1)
                parts.append("%s %s: min cosine %.6f, mean %.6f" % (model, prec, c.min(), c.mean()))
        cos_line = ("Embeddings in reduced precision vs fp32 (pooled features, random weights), %d photos from %s: "
                    % (len(imgs), os.path.basename(os.path.normpath(data)))) + "; ".join(parts) + "."
print(cos_line)

lines = ["Wall clock (best pass):", "",
         "| model | batch | threads | PyTorch img/s (layout) | OpenCV DNN img/s | shoplens fp32 img/s | vs PyTorch | "
         "shoplens int8 img/s | int8 vs PyTorch fp32 | shoplens bf16 img/s | fp32 peak reached |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
rows.sort(key=lambda r: (r[0] != "resnet50", r[1], r[2]))
for r in rows:
    lines.append("| %s | %d | %d | %.2f (%s) | %.2f | %.2f | %.2fx | %.2f | %.2fx | %.2f | %.0f%% |" % (r[:11] + (100 * r[11],)))
lines += ["", "CPU time per image (process CPU seconds, best pass; robust to the other jobs on the machine):", "",
          "| model | batch | threads | PyTorch ms | OpenCV DNN ms | shoplens fp32 ms | PyTorch / shoplens | shoplens int8 ms | "
          "fp32 peak reached (per CPU-second) | shoplens bf16 ms | PyTorch fp32 / shoplens bf16 |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append("| %s | %d | %d | %.1f | %.1f | %.1f | %.2fx | %.1f | %.0f%% | %.1f | %.2fx |"
                 % (r[:3] + r[12:17] + (100 * r[17],) + r[18:20]))
with open(res_md, "w") as f:
    f.write("# CNN inference speed (bench/cnn)\n\n")
    f.write("Machine: %s, %d CPUs, load average %.2f / %.2f / %.2f when the run ended (above the CPU count "
            "means other jobs shared the machine and absolute numbers are noisy); every runtime was measured "
            "in the same interleaved rounds and the best pass of each is reported, so the ratios are the "
            "meaningful part.\n" % ((
                re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1), os.cpu_count())
                + os.getloadavg()))
    f.write("OMP_WAIT_POLICY=%s for every runtime (OpenMP spin-waiting is ruinous on a loaded machine). "
            % os.environ.get("OMP_WAIT_POLICY", "(unset)"))
    f.write("PyTorch %s (the faster of NCHW and channels-last), OpenCV %s DNN (default backend), shoplens default "
            "backend (oneDNN convolution primitives); int8 and bf16 are shoplens' reduced-precision modes. Models: torchvision ResNet-50 and MobileNetV2, random weights, 224x224. Peak = %s GHz x %d fp32 "
            "FLOP/cycle x threads, from the nominal clock in /proc/cpuinfo; the CPU boosts above it, so the 'per CPU-second' "
            "fraction can exceed 100%% - read it as relative, not absolute.\n\n" % (torch.__version__, cv2.__version__, "%.2f" % ghz if ghz else "?", FLOPS_PER_CYCLE))
    f.write("\n".join(lines) + "\n\n" + cos_line + "\n")
print("\n".join(lines))
