#!/usr/bin/python3
"""bench/cnn: images/s of shoplens' CNN engine against onnxruntime (onnxruntime-node from npm, CPU
execution provider), PyTorch (NCHW and channels-last, the faster counts) and OpenCV DNN, on ResNet-50
(torchvision export, random weights), MobileNetV2 and SqueezeNet 1.1 (the real-weight files of
MODELS_DIR when present, else torchvision exports), batch 1 and 8, 1 and 2 threads; plus
shoplens' reduced-precision modes and their embedding cosine to fp32 on real photos.

shoplens and onnxruntime run the same ONNX file on the same input tensor (a seeded standard normal
array saved as .npy) and their outputs are compared; PyTorch and OpenCV run the torchvision model of
the same architecture (random weights: their speed does not depend on the values).

Every runtime runs in its own fresh process with its thread count set through its API (shoplens
--threads, onnxruntime intraOpNumThreads with one inter-op thread, torch.set_num_threads,
cv2.setNumThreads) and through the environment (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS): PyTorch runs single-threaded 1x1 convolutions below batch 16 through its BLAS,
whose own thread pool ignores torch.set_num_threads. Each process loads the model, runs one warm-up
pass and times its passes itself (wall and process CPU of the timed passes only) and reports the
cores it kept busy (CPU / wall), so a runtime that does not use the stated number of cores is
visible. The runtimes alternate in rounds (one process of each per round), and the best pass of
each over all rounds is kept, because other jobs share the machine: interference only slows a
pass down. The spread over rounds (each round's best) is kept too. onnxruntime runs twice per
round, with its default spinning thread pool and with spinning off (what OMP_WAIT_POLICY=passive
does for the OpenMP runtimes; on a loaded machine it is often faster): the faster counts.

Usage: speed.py [--quick] [--json] SHOPLENS_BIN WORKDIR RESULTS_MD [DATA_DIR [MODELS_DIR]]
  --quick  onnxruntime as the only peer, fp32 and int8, 2 rounds, fewer passes; results are not
           written to RESULTS_MD
  --json   print one JSON object (rows, ratios, cpu_ratios) at the end instead of the tables;
           "ratios" maps "<model>_<precision>_b<batch>_t<threads>" to shoplens / onnxruntime fp32
           images per second (wall clock, best pass), "cpu_ratios" the same from CPU time per image
  SL_BENCH_ROUNDS, SL_BENCH_MODELS, SL_BENCH_BATCHES, SL_BENCH_THREADS, SL_BENCH_PRECISIONS,
  SL_BENCH_PEERS (of "ort torch opencv") select what is measured.
  speed.py --worker torch_nchw|torch_cl|opencv MODEL_NAME ONNX X.npy THREADS PASSES"""
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cnn_verify"))
ORT_DIR = os.path.join(HERE, "ort")

# Bench model name -> real-weight file in MODELS_DIR (used by shoplens and onnxruntime when present).
REAL = {"mobilenet_v2": "mobilenetv2.onnx", "squeezenet1_1": "squeezenet1.1.onnx"}
ALL_MODELS = "resnet50 mobilenet_v2 squeezenet1_1"


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
        net = cv2.dnn.readNetFromONNX(onnx)

        def run():
            net.setInput(x)
            net.forward()
        r = timed(run, passes)
    print(json.dumps(r))


def thread_env(threads, omp_default=False):
    """The thread settings of a measured process; omp_default: without OMP_WAIT_POLICY (OpenMP's
    own default, which spins a while at barriers before sleeping: what a user gets)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    if omp_default:
        env.pop("OMP_WAIT_POLICY", None)
    return env


def rel_diff(a, ref):
    """max |a - ref| / max(1, max |ref|), as tests/test_nn.c and bench/cnn_verify measure."""
    import numpy as np
    return float(np.abs(a.astype(np.float64) - ref).max() / max(1.0, float(np.abs(ref).max())))


def main():
    import numpy as np
    import torch
    from export import export
    args = sys.argv[1:]
    quick, as_json = "--quick" in args, "--json" in args
    args = [a for a in args if a not in ("--quick", "--json")]
    bin_, work, res_md = args[0], args[1], args[2]
    data = args[3] if len(args) > 3 else None
    models_dir = args[4] if len(args) > 4 else None
    rounds = int(os.environ.get("SL_BENCH_ROUNDS", "2" if quick else "3"))
    precs = os.environ.get("SL_BENCH_PRECISIONS", "fp32 int8" if quick else "fp32 int8 bf16").split()
    peers = os.environ.get("SL_BENCH_PEERS", "ort" if quick else "ort torch opencv").split()
    if "fp32" not in precs:
        precs = ["fp32"] + precs
    os.makedirs(work, exist_ok=True)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if as_json else (lambda *a: print(*a, flush=True))

    def run_json(cmd, threads, omp_default=False):
        r = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads, omp_default))
        if r.returncode:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), r.returncode, r.stderr.strip()[-2000:]))
        return tuple(json.loads(r.stdout.strip().split("\n")[-1]))

    def py_time(rt, name, path, xin, threads, passes, omp_default=False):
        return run_json([sys.executable, os.path.abspath(__file__), "--worker", rt, name, path, xin, str(threads),
                         str(passes)], threads, omp_default)

    def ort_time(path, xin, threads, passes, out=None, spin=True):
        return run_json(["node", os.path.join(ORT_DIR, "time.js")] + ([] if spin else ["--no-spin"])
                        + [path, xin, str(threads), str(passes)] + ([out] if out else []), threads)

    def sl_time(path, xin, threads, passes, prec, out, omp_default=False):
        r = subprocess.run([bin_, "cnn", "run", path, "--input", xin, "--out", out, "--threads", str(threads),
                            "--repeat", str(passes), "--precision", prec],
                           capture_output=True, text=True, env=thread_env(threads, omp_default))
        if r.returncode:
            raise RuntimeError("shoplens cnn run failed: " + r.stderr.strip()[-2000:])
        m = re.search(r"([0-9.]+) ms per pass \(best ([0-9.]+)\).*?([0-9.]+) CPU ms per pass \(best ([0-9.]+)\)",
                      r.stderr)
        mean_w, best_w, mean_c, best_c = (float(m.group(k)) / 1e3 for k in (1, 2, 3, 4))
        return best_w, best_c, mean_c / mean_w

    def flops(path):
        r = subprocess.run([bin_, "cnn", "info", path], capture_output=True, text=True, check=True)
        return int(re.search(r"FLOPs per image: (\d+)", r.stdout).group(1))

    def ort_version():
        try:
            return json.load(open(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node", "package.json")))["version"]
        except OSError:
            return "?"

    if "ort" in peers and not os.path.exists(os.path.join(ORT_DIR, "node_modules", "onnxruntime-node")):
        sys.exit("onnxruntime-node is not installed: run deps/bench-cnn.sh (make bench does)")

    cpuinfo = open("/proc/cpuinfo").read()
    flags = set(re.search(r"flags\s*:\s*(.*)", cpuinfo).group(1).split())
    vendor = re.search(r"vendor_id\s*:\s*(\S+)", cpuinfo).group(1)
    mhz = [float(v) for v in re.findall(r"cpu MHz\s*:\s*([0-9.]+)", cpuinfo)]
    ghz = max(mhz) / 1e3 if mhz else None
    # fp32 FLOP/cycle/core: Intel AVX-512 server cores have two 512-bit FMA pipes (64); Zen 4 runs
    # AVX-512 on two 256-bit FMA pipes (32); AVX2 machines two 256-bit pipes (32).
    fpc = 64 if ("avx512f" in flags and vendor == "GenuineIntel") else 32

    rows_file = os.path.join(work, "speed_rows.json")
    rows = json.load(open(rows_file)) if os.path.exists(rows_file) and not quick else []
    sources = {}
    for name in os.environ.get("SL_BENCH_MODELS", ALL_MODELS).split():  # "" = tables only
        _, exported = export(name, work)
        real = os.path.join(models_dir, REAL[name]) if models_dir and name in REAL else None
        path = real if real and os.path.exists(real) else exported
        sources[name] = "real weights (%s)" % os.path.basename(path) if path != exported else "torchvision export"
        op10 = export(name, work, opset=10)[1] if "opencv" in peers else None  # OpenCV 4.6: no opset-13 Clip
        fl = flops(path)
        for batch in [int(b) for b in os.environ.get("SL_BENCH_BATCHES", "1 8").split()]:
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(3))
            xin = os.path.join(work, f"speed_{batch}.npy")
            np.save(xin, x.numpy())
            for threads in [int(t) for t in os.environ.get("SL_BENCH_THREADS", "1 2").split()]:
                # more passes for small models: on a shared machine a short pass is often slowed by
                # other jobs, and the best pass needs enough tries to find an undisturbed one
                base = (4 if batch == 1 else 2) if quick else (8 if batch == 1 else 3)
                passes = max(base, min(40 if quick else 60, int((20e9 if quick else 40e9) / (fl * batch))))
                res, spread = {}, {}
                outs = {p: os.path.join(work, "speed_out_%s.npy" % p) for p in precs + ["ort"]}
                for rnd in range(rounds):
                    meas = []
                    if "ort" in peers:  # its default (spinning thread pool) and with spinning off
                        meas.append(("ort_spin", ort_time(path, xin, threads, passes, outs["ort"] if rnd == 0 else None)))
                        meas.append(("ort_nospin", ort_time(path, xin, threads, passes, spin=False)))
                    # the OpenMP runtimes (shoplens, PyTorch) as onnxruntime: at several threads both with
                    # OMP_WAIT_POLICY as run.sh sets it (passive: no spinning) and with OpenMP's default
                    # (spins a while at barriers); the faster counts and is named
                    waits = [False, True] if threads > 1 and os.environ.get("OMP_WAIT_POLICY") else [False]
                    for w in waits:
                        for p in precs:
                            meas.append((p + ("~spin" if w else ""), sl_time(path, xin, threads, passes, p, outs[p], w)))
                        if "torch" in peers:
                            meas += [(rt + ("~spin" if w else ""), py_time(rt, name, path, xin, threads, passes, w))
                                     for rt in ("torch_nchw", "torch_cl")]
                    if "opencv" in peers:
                        try:
                            meas.append(("opencv", py_time("opencv", name, op10, xin, threads, passes)))
                        except RuntimeError as e:
                            log("opencv: %s" % str(e).splitlines()[-1])
                    for k, v in meas:
                        o = res.get(k)
                        res[k] = v if o is None else (min(o[0], v[0]), min(o[1], v[1]), v[2] if v[0] < o[0] else o[2])
                        spread.setdefault(k, []).append(v[0])
                omp_spin = {}
                for k in [k for k in res if k.endswith("~spin")]:
                    base_k = k[:-5]
                    omp_spin[base_k] = res[k][0] < res[base_k][0]
                    if omp_spin[base_k]:
                        res[base_k], spread[base_k] = res[k], spread[k]
                    del res[k], spread[k]
                row = {"model": name, "batch": batch, "threads": threads, "flops": fl, "source": sources[name],
                       "omp_spin": omp_spin,
                       "spread": {k: [min(v), statistics.median(v), max(v)] for k, v in spread.items()},
                       **{k: res[k] for k in res if k not in ("torch_nchw", "torch_cl", "ort_spin", "ort_nospin")}}
                if "ort_spin" in res:  # onnxruntime at its best: the faster of spinning and not
                    ok = "ort_spin" if res["ort_spin"][0] <= res["ort_nospin"][0] else "ort_nospin"
                    row["ort"], row["ort_spin"] = res[ok], ok == "ort_spin"
                    row["spread"]["ort"] = row["spread"][ok]
                if "torch_cl" in res:
                    ptk = "torch_cl" if res["torch_cl"][0] < res["torch_nchw"][0] else "torch_nchw"
                    row["pt"], row["pt_layout"] = res[ptk], "channels-last" if ptk == "torch_cl" else "NCHW"
                    if omp_spin.get(ptk):
                        row["pt_layout"] += ", spin"
                if "ort" in row:
                    ref = np.load(outs["ort"])
                    row["diff"] = {p: rel_diff(np.load(outs[p]).reshape(ref.shape), ref) for p in precs}
                rows = [r for r in rows if (r["model"], r["batch"], r["threads"]) != (name, batch, threads)] + [row]
                if not quick:
                    json.dump(rows, open(rows_file, "w"))
                log("%-13s b%d t%d " % (name, batch, threads) + "  ".join(
                    "%s %.1f img/s %.1f CPU ms/img %.2f cores" % (k, batch / row[k][0], 1e3 * row[k][1] / batch, row[k][2])
                    for k in ["ort", "pt", "opencv"] + precs if k in row))

    # ratios: wall clock, as specified; cpu_ratios: the same from process CPU time per image, which
    # other jobs on the machine disturb far less at 1 thread (at 2 threads it counts spin-waiting)
    ratios, cpu_ratios = {}, {}
    for r in rows:
        if "ort" in r:
            for p in precs:
                if p in r:
                    key = "%s_%s_b%d_t%d" % (r["model"], p, r["batch"], r["threads"])
                    ratios[key] = round(r["ort"][0] / r[p][0], 3)
                    cpu_ratios[key] = round(r["ort"][1] / r[p][1], 3)
    if quick:
        if as_json:
            print(json.dumps({"ratios": ratios, "cpu_ratios": cpu_ratios, "rows": rows, "onnxruntime": ort_version(),
                              "loadavg": os.getloadavg()}, indent=1))
        return

    cos_line = "real photos not available"
    if data and os.path.isdir(data) and [p for p in precs if p != "fp32"]:
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
            cos_line = ("Embeddings in reduced precision vs fp32 (pooled features, torchvision exports with random "
                        "weights), %d photos (every %dth of the %d jpgs in %s): "
                        % (len(imgs), step, len(every), os.path.basename(os.path.normpath(data))) + "; ".join(parts) + ".")
    log(cos_line)

    order = ALL_MODELS.split()
    rows.sort(key=lambda r: (order.index(r["model"]) if r["model"] in order else 9, r["batch"], r["threads"]))
    precs_all = [p for p in ("fp32", "int8", "bf16") if rows and p in rows[0]]
    red = [p for p in precs_all if p != "fp32"]
    peer_cols = [(k, lbl) for k, lbl in (("ort", "onnxruntime fp32"), ("pt", "PyTorch fp32 (layout)"),
                                          ("opencv", "OpenCV DNN")) if any(k in r for r in rows)]

    def table(idx, fmt, unit_inv):
        head = ("| model | batch | threads | " + " | ".join(l for _, l in peer_cols) + " | shoplens fp32 | "
                + " | ".join("shoplens %s" % p for p in red) + " | "
                + " | ".join("%s vs onnxruntime" % p for p in precs_all) + " |")
        out = [head, "|" + "---|" * (3 + len(peer_cols) + 2 * len(precs_all))]
        for r in rows:
            b = r["batch"]
            v = lambda k: ((b / r[k][idx]) if unit_inv else (1e3 * r[k][idx] / b)) if k in r else None
            cells = ["%s" % r["model"], "%d" % b, "%d" % r["threads"]]
            for k, _ in peer_cols:
                cells.append("n/a" if k not in r else (fmt % v(k)) + (" (%s)" % r["pt_layout"] if k == "pt" else "")
                             + ((" (spin)" if r["ort_spin"] else " (no spin)") if k == "ort" and "ort_spin" in r else ""))
            cells += [fmt % v(p) + (" (spin)" if r.get("omp_spin", {}).get(p) else "") for p in precs_all]
            cells += ["**%.2fx**" % (r["ort"][idx] / r[p][idx]) if "ort" in r else "n/a" for p in precs_all]
            out.append("| " + " | ".join(cells) + " |")
        return out

    spread = ["| model | batch | threads | " + " | ".join(l for _, l in peer_cols if _ != "pt")
              + " | " + " | ".join("shoplens " + p for p in precs_all) + " |",
              "|" + "---|" * (3 + len([k for k, _ in peer_cols if k != "pt"]) + len(precs_all))]
    for r in rows:
        b = r["batch"]
        cell = lambda k: ("%.1f / %.1f / %.1f" % tuple(b / t for t in reversed(r["spread"][k]))) if k in r["spread"] else "n/a"
        spread.append("| %s | %d | %d | " % (r["model"], b, r["threads"]) + " | ".join(
            cell(k) for k in [k for k, _ in peer_cols if k != "pt"] + precs_all) + " |")

    cores = ["| model | batch | threads | " + " | ".join(l.split(" (")[0] for _, l in peer_cols) + " | "
             + " | ".join("shoplens " + p for p in precs_all) + " | shoplens fp32 peak reached (wall) |",
             "|" + "---|" * (4 + len(peer_cols) + len(precs_all))]
    for r in rows:
        peak = (ghz * 1e9 * fpc * r["threads"]) if ghz else None
        frac = "%.0f%%" % (100 * r["flops"] * r["batch"] / r["fp32"][0] / peak) if peak else "?"
        cores.append("| %s | %d | %d | " % (r["model"], r["batch"], r["threads"]) + " | ".join(
            ("%.2f" % r[k][2]) if k in r else "n/a" for k in [k for k, _ in peer_cols] + precs_all) + " | %s |" % frac)

    agree = ["| model | batch | " + " | ".join("shoplens %s" % p for p in precs_all) + " |",
             "|" + "---|" * (2 + len(precs_all))]
    for r in rows:
        if "diff" in r and r["threads"] == 1:
            agree.append("| %s | %d | " % (r["model"], r["batch"]) + " | ".join(
                "%.2e" % r["diff"][p] for p in precs_all) + " |")

    for r in rows:  # rows merged from an earlier invocation keep the source they were measured on
        sources.setdefault(r["model"], r.get("source", "?"))
    models_line = "; ".join("%s: %s" % (k, sources[k]) for k in order if k in sources)
    lines = ["Wall clock, images/s (best pass over all rounds; higher is better). The ratios are shoplens / "
             "onnxruntime fp32 images per second (targets: fp32 >= 1.0x, int8 >= 1.5x in every cell):", ""] + \
        table(0, "%.2f", True) + [
        "", "Spread over the rounds: images/s of each round's best pass, worst / median / best (the machine is "
        "shared; a wide spread means other jobs ran):", ""] + spread + [
        "", "CPU time per image, ms (process CPU of the best pass, all threads; lower is better; robust to other "
        "jobs on the machine at 1 thread; at 2 threads it also counts spin-waiting):", ""] + table(1, "%.1f", False) + [
        "", "Cores kept busy (CPU time / wall time over the timed passes: about 1.0 at 1 thread and up to 2.0 at 2 "
        "threads when the runtime applies its thread count; below that, the runtime waited for the CPU), and the "
        "fraction of the fp32 peak shoplens fp32 reached:", ""] + cores + [
        "", "Agreement with onnxruntime on the same input (max |shoplens - onnxruntime| / max(1, max |onnxruntime|) "
        "over the graph's first output, 1 thread):", ""] + agree
    la = os.getloadavg()
    with open(res_md, "w") as f:
        f.write("# CNN inference speed (bench/cnn)\n\n")
        f.write("Machine: %s (%s), %d CPUs, AVX-512 %s, AVX-512-BF16 %s, VNNI %s, AMX %s; load average %.2f / %.2f / "
                "%.2f when the run ended (above the CPU count means other jobs shared the machine and absolute numbers "
                "are noisy). Every runtime was measured in the same interleaved rounds (%d), each in a fresh process "
                "with its thread count set by its API and by OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS, "
                "timing its own passes (after one warm-up pass); the best pass of each is reported, so the ratios are "
                "the meaningful part.\n"
                % (re.search(r"model name\s*:\s*(.*)", cpuinfo).group(1), vendor, os.cpu_count(),
                   *("yes" if f in flags else "no" for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")),
                   *la, rounds))
        f.write("OMP_WAIT_POLICY=%s for the OpenMP runtimes (shoplens, PyTorch; OpenMP spin-waiting is ruinous on a "
                "loaded machine); at more than one thread they are also measured with OpenMP's default (no "
                "OMP_WAIT_POLICY: threads spin a while at barriers, what a user gets), the faster counts and is "
                "named \"(spin)\", as for onnxruntime below. "
                % os.environ.get("OMP_WAIT_POLICY", "(unset)"))
        f.write("onnxruntime-node %s (npm, CPU execution provider, graph optimization level \"all\": constant folding, "
                "Conv+BatchNorm/activation/Add fusions and its NCHWc blocked layout; intraOpNumThreads = threads, one "
                "inter-op thread, sequential execution; measured with its default spinning thread pool and with "
                "session.intra_op.allow_spinning = 0 in every round, the faster counts and is named), PyTorch %s (the faster of NCHW and channels-last), OpenCV %s "
                "DNN (default backend), shoplens default backend (oneDNN convolution primitives, Winograd for 3x3 "
                "stride-1 convolutions where oneDNN has it); %s are shoplens' reduced-precision modes (docs/cnn.md). "
                "Models, 224x224: %s. shoplens and onnxruntime run the same file on the same input tensor (seeded "
                "standard normal); PyTorch and OpenCV run the torchvision model of the same architecture with random "
                "weights (speed does not depend on the values). Peak = %s GHz (nominal, /proc/cpuinfo; the CPU may "
                "boost above it) x %d fp32 FLOP/cycle x threads.\n\n"
                % (ort_version(), torch.__version__, cv2_version(), " and ".join(red) or "none", models_line,
                   "%.2f" % ghz if ghz else "?", fpc))
        f.write("\n".join(lines) + "\n\n" + cos_line + "\n")
    if as_json:
        print(json.dumps({"ratios": ratios, "cpu_ratios": cpu_ratios, "rows": rows, "onnxruntime": ort_version(),
                          "loadavg": la}, indent=1))
    else:
        print("\n".join(lines))


def cv2_version():
    try:
        import cv2
        return cv2.__version__
    except ImportError:
        return "(not installed)"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
