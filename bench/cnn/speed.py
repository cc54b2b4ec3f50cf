#!/usr/bin/python3
"""bench/cnn: images/s of shoplens' CNN engine against PyTorch (NCHW and channels-last, the faster
counts) and OpenCV DNN, on torchvision ResNet-50 and MobileNetV2 (random weights), batch 1 and 8,
1 and 2 threads; plus the reduced-precision modes and their embedding cosine to fp32 on real photos.

Every runtime runs in its own fresh process with its thread count set both through its API and
through the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS): PyTorch runs
single-threaded 1x1 convolutions below batch 16 through its BLAS (OpenBLAS here), whose own thread
pool ignores torch.set_num_threads, so without the environment a "1 thread" PyTorch row used both
cores. Each process times its passes itself (wall and process CPU of the timed passes only) and
reports the cores it kept busy (CPU / wall); the table shows it, so a row that does not run on the
stated number of cores is visible. Runtimes are interleaved in rounds and the best pass of each
is kept, because the machine is shared.

Usage: speed.py SHOPLENS_BIN WORKDIR RESULTS_MD [DATA_DIR]
       (SL_BENCH_ROUNDS, SL_BENCH_MODELS, SL_BENCH_BATCHES, SL_BENCH_THREADS, SL_BENCH_PRECISIONS
       select what is measured; rows merge into WORKDIR/speed_rows.json, which run.sh clears)
       speed.py --worker torch_nchw|torch_cl|opencv MODEL_NAME ONNX X.npy THREADS PASSES"""
import glob
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cnn_verify"))


def timed(fn, passes):
    """(best wall s, best CPU s, cores busy = total CPU / total wall) over `passes` after a warm-up."""
    fn()
    best, cbest, tw, tc = 1e9, 1e9, 0.0, 0.0
    for _ in range(passes):
        t, c = time.perf_counter(), time.process_time()
        fn()
        dt, dc = time.perf_counter() - t, time.process_time() - c
        best, cbest, tw, tc = min(best, dt), min(cbest, dc), tw + dt, tc + dc
    return best, cbest, tc / tw


def worker(argv):
    rt, name, onnx, xin, threads, passes = argv[0], argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])
    import numpy as np
    x = np.load(xin)
    if rt.startswith("torch"):
        import torch
        from export import make
        torch.set_num_threads(threads)
        model = make(name)
        xt = torch.from_numpy(x)
        if rt == "torch_cl":
            model = model.to(memory_format=torch.channels_last)
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            r = timed(lambda: model(xt), passes)
    else:
        import cv2
        cv2.setNumThreads(threads)
        try:
            net = cv2.dnn.readNetFromONNX(onnx)
        except cv2.error:  # OpenCV 4.6 cannot read opset-13 Clip (ReLU6); same weights at opset 10
            net = cv2.dnn.readNetFromONNX(onnx.replace(".onnx", ".op10.onnx"))

        def run():
            net.setInput(x)
            net.forward()
        r = timed(run, passes)
    print(json.dumps(r))


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    return env


def main():
    import numpy as np
    import torch
    import cv2
    from export import export
    bin_, work, res_md = sys.argv[1], sys.argv[2], sys.argv[3]
    data = sys.argv[4] if len(sys.argv) > 4 else None
    rounds = int(os.environ.get("SL_BENCH_ROUNDS", "2"))
    precs = os.environ.get("SL_BENCH_PRECISIONS", "fp32 int8 bf16").split()
    os.makedirs(work, exist_ok=True)

    def py_time(rt, name, path, xin, threads, passes):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", rt, name, path, xin,
                            str(threads), str(passes)], capture_output=True, text=True, check=True,
                           env=thread_env(threads))
        return tuple(json.loads(r.stdout.strip().split("\n")[-1]))

    def sl_time(path, xin, threads, passes, prec):
        r = subprocess.run([bin_, "cnn", "run", path, "--input", xin, "--out", os.path.join(work, "speed.out.npy"),
                            "--threads", str(threads), "--repeat", str(passes), "--precision", prec],
                           capture_output=True, text=True, check=True, env=thread_env(threads))
        m = re.search(r"([0-9.]+) ms per pass \(best ([0-9.]+)\).*?([0-9.]+) CPU ms per pass \(best ([0-9.]+)\)",
                      r.stderr)
        mean_w, best_w, mean_c, best_c = (float(m.group(k)) / 1e3 for k in (1, 2, 3, 4))
        return best_w, best_c, mean_c / mean_w

    def flops(path):
        r = subprocess.run([bin_, "cnn", "info", path], capture_output=True, text=True, check=True)
        return int(re.search(r"FLOPs per image: (\d+)", r.stdout).group(1))

    cpuinfo = open("/proc/cpuinfo").read()
    flags = set(re.search(r"flags\s*:\s*(.*)", cpuinfo).group(1).split())
    vendor = re.search(r"vendor_id\s*:\s*(\S+)", cpuinfo).group(1)
    mhz = [float(v) for v in re.findall(r"cpu MHz\s*:\s*([0-9.]+)", cpuinfo)]
    ghz = max(mhz) / 1e3 if mhz else None
    # fp32 FLOP/cycle/core: Intel AVX-512 server cores have two 512-bit FMA pipes (64); Zen 4 runs
    # AVX-512 on two 256-bit FMA pipes (32); AVX2 machines two 256-bit pipes (32).
    fpc = 64 if ("avx512f" in flags and vendor == "GenuineIntel") else 32

    rows_file = os.path.join(work, "speed_rows.json")
    rows = json.load(open(rows_file)) if os.path.exists(rows_file) else []
    for name in os.environ.get("SL_BENCH_MODELS", "resnet50 mobilenet_v2").split():  # "" = tables only
        _, path = export(name, work)
        export(name, work, opset=10)
        fl = flops(path)
        for batch in [int(b) for b in os.environ.get("SL_BENCH_BATCHES", "1 8").split()]:
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(3))
            xin = os.path.join(work, f"speed_{batch}.npy")
            np.save(xin, x.numpy())
            for threads in [int(t) for t in os.environ.get("SL_BENCH_THREADS", "1 2").split()]:
                passes = 6 if batch == 1 else 3
                res = {}
                for _ in range(rounds):
                    meas = [(rt, py_time(rt, name, path, xin, threads, passes)) for rt in ("torch_nchw", "torch_cl", "opencv")]
                    meas += [(p, sl_time(path, xin, threads, passes, p)) for p in precs]
                    for k, v in meas:
                        o = res.get(k)
                        res[k] = v if o is None else (min(o[0], v[0]), min(o[1], v[1]), v[2] if v[0] < o[0] else o[2])
                ptk = "torch_cl" if res["torch_cl"][0] < res["torch_nchw"][0] else "torch_nchw"
                row = {"model": name, "batch": batch, "threads": threads, "flops": fl,
                       "pt_layout": "channels-last" if ptk == "torch_cl" else "NCHW",
                       "pt": res[ptk], "cv": res["opencv"], **{p: res[p] for p in precs}}
                rows = [r for r in rows if (r["model"], r["batch"], r["threads"]) != (name, batch, threads)] + [row]
                json.dump(rows, open(rows_file, "w"))
                print("%-13s b%d t%d " % (name, batch, threads) + "  ".join(
                    "%s %.1f img/s %.1f CPU ms/img %.2f cores" % (k, batch / v[0], 1e3 * v[1] / batch, v[2])
                    for k, v in [("pytorch", row["pt"]), ("opencv", row["cv"])] + [(p, row[p]) for p in precs]),
                    flush=True)

    cos_line = "real photos not available"
    if data and os.path.isdir(data):
        every = sorted(glob.glob(os.path.join(data, "**", "*.jpg"), recursive=True))
        step = max(1, len(every) // 48)
        imgs = every[::step][:48]  # spread over every set
        if imgs:
            parts = []
            for model in ("resnet50", "mobilenet_v2"):
                _, path = export(model, work)
                embs = {}
                for prec in ["fp32"] + [p for p in precs if p != "fp32"]:
                    r = subprocess.run([bin_, "cnn", "embed", path, *imgs, "--precision", prec], capture_output=True,
                                       text=True, check=True)
                    embs[prec] = np.array([[float(v) for v in ln.split()[1:]] for ln in r.stdout.strip().split("\n")])
                for prec in embs:
                    if prec != "fp32":
                        c = np.sum(embs["fp32"] * embs[prec], 1)
                        parts.append("%s %s: min cosine %.6f, mean %.6f" % (model, prec, c.min(), c.mean()))
            cos_line = ("Embeddings in reduced precision vs fp32 (pooled features, random weights), %d photos (every "
                        "%dth of the %d jpgs in %s): " % (len(imgs), step, len(every),
                                                         os.path.basename(os.path.normpath(data))) + "; ".join(parts) + ".")
    print(cos_line)

    rows.sort(key=lambda r: (r["model"] != "resnet50", r["batch"], r["threads"]))
    precs_all = [p for p in ("fp32", "int8", "bf16") if rows and p in rows[0]]
    red = [p for p in precs_all if p != "fp32"]
    head = ("| model | batch | threads | PyTorch fp32 (layout) | OpenCV DNN | shoplens fp32 | fp32 vs PyTorch | "
            + " | ".join("shoplens %s | %s vs PyTorch fp32" % (p, p) for p in red) + " |")
    sep = "|" + "---|" * (7 + 2 * len(red))

    def table(idx, fmt, unit_inv):
        out = [head, sep]
        for r in rows:
            b = r["batch"]
            v = lambda k: (b / r[k][idx]) if unit_inv else (1e3 * r[k][idx] / b)
            ratio = lambda k: r["pt"][idx] / r[k][idx]
            cells = ["%s" % r["model"], "%d" % b, "%d" % r["threads"], (fmt + " (%s)") % (v("pt"), r["pt_layout"]),
                     fmt % v("cv"), fmt % v("fp32"), "%.2fx" % ratio("fp32")]
            for p in red:
                cells += [fmt % v(p), "%.2fx" % ratio(p)]
            out.append("| " + " | ".join(cells) + " |")
        return out

    cores = ["| model | batch | threads | PyTorch | OpenCV DNN | " + " | ".join("shoplens " + p for p in precs_all)
             + " | shoplens fp32 peak reached (wall) |", "|" + "---|" * (6 + len(precs_all))]
    for r in rows:
        peak = (ghz * 1e9 * fpc * r["threads"]) if ghz else None
        frac = "%.0f%%" % (100 * r["flops"] * r["batch"] / r["fp32"][0] / peak) if peak else "?"
        cores.append("| %s | %d | %d | " % (r["model"], r["batch"], r["threads"]) + " | ".join(
            "%.2f" % r[k][2] for k in ["pt", "cv"] + precs_all) + " | %s |" % frac)
    la = os.getloadavg()
    lines = ["Wall clock, images/s (best pass; higher is better):", ""] + table(0, "%.2f", True) + [
        "", "CPU time per image, ms (process CPU of the best pass, all threads; lower is better; robust to other "
        "jobs on the machine):", ""] + table(1, "%.1f", False) + [
        "", "Cores kept busy (CPU time / wall time over the timed passes: about 1.0 at 1 thread and up to 2.0 at 2 "
        "threads when the runtime applies its thread count), and the fraction of the fp32 peak shoplens fp32 reached:",
        ""] + cores
    with open(res_md, "w") as f:
        f.write("# CNN inference speed (bench/cnn)\n\n")
        f.write("Machine: %s (%s), %d CPUs, AVX-512 %s, AVX-512-BF16 %s, VNNI %s, AMX %s; load average %.2f / %.2f / %.2f "
                "when the run ended (above the CPU count means other jobs shared the machine and absolute numbers are "
                "noisy). Every runtime was measured in the same interleaved rounds, each in a fresh process with its "
                "thread count set by its API and by OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS, timing "
                "its own passes; the best pass of each is reported, so the ratios are the meaningful part.\n"
                % (re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1), vendor, os.cpu_count(),
                   *("yes" if f in flags else "no" for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")), *la))
        f.write("OMP_WAIT_POLICY=%s for every runtime (OpenMP spin-waiting is ruinous on a loaded machine). "
                % os.environ.get("OMP_WAIT_POLICY", "(unset)"))
        f.write("PyTorch %s (the faster of NCHW and channels-last), OpenCV %s DNN (default backend), shoplens default "
                "backend (oneDNN convolution primitives); %s are shoplens' reduced-precision modes (docs/cnn.md). "
                "Models: torchvision ResNet-50 and MobileNetV2, random weights, 224x224. Peak = %s GHz (nominal, "
                "/proc/cpuinfo; the CPU may boost above it) x %d fp32 FLOP/cycle x threads.\n\n"
                % (torch.__version__, cv2.__version__, " and ".join(red) or "none",
                   "%.2f" % ghz if ghz else "?", fpc))
        f.write("\n".join(lines) + "\n\n" + cos_line + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
