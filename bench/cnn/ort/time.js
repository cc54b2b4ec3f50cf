// bench/cnn peer worker: times onnxruntime-node (CPU execution provider) on one model and one
// input tensor, in its own process.
// Usage: node time.js [--no-spin] MODEL.onnx X.npy THREADS PASSES [OUT.npy]
// Prints one JSON line [best wall s, best CPU s, cores busy = total CPU / total wall] like the
// Python workers of speed.py. The session uses the thread count for its intra-op pool (one
// inter-op thread, sequential execution: the graph is a chain) and every graph optimization
// onnxruntime has (level "all": constant folding, Conv+BN/activation/Add fusions, NCHWc layout).
// OUT.npy, when given, receives the output of the first pass (float32) for checking.
// --no-spin: the intra-op pool's threads block instead of spinning between operators
// (session.intra_op.allow_spinning = 0; onnxruntime spins by default), as OMP_WAIT_POLICY=passive
// does for the OpenMP runtimes.
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(path + ': not a .npy file');
  const hlen = buf[6] === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const off = buf[6] === 1 ? 10 : 12;
  const header = buf.toString('latin1', off, off + hlen);
  if (!/'descr':\s*'<f4'/.test(header) || /'fortran_order':\s*True/.test(header))
    throw new Error(path + ': needs little-endian float32 in C order');
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim())
    .filter((s) => s.length).map(Number);
  const data = new Float32Array(buf.buffer.slice(buf.byteOffset + off + hlen,
                                                 buf.byteOffset + buf.length));
  return { shape, data };
}

function writeNpy(path, dims, data) {
  let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims.join(', ') +
      (dims.length === 1 ? ',' : '') + '), }';
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const h = Buffer.alloc(10);
  h.write('\x93NUMPY', 0, 'latin1');
  h[6] = 1; h[7] = 0;
  h.writeUInt16LE(header.length, 8);
  fs.writeFileSync(path, Buffer.concat([h, Buffer.from(header, 'latin1'),
                                        Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function main() {
  const args = process.argv.slice(2);
  const noSpin = args[0] === '--no-spin';
  const [model, xin, threadsArg, passesArg, outPath] = noSpin ? args.slice(1) : args;
  const threads = Number(threadsArg), passes = Number(passesArg);
  const x = readNpy(xin);
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: noSpin ? { 'session.intra_op.allow_spinning': '0' } : {},
  });
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const first = await session.run(feeds); // warm-up (also builds onnxruntime's kernels)
  if (outPath) {
    const o = first[session.outputNames[0]];
    writeNpy(outPath, o.dims, o.data);
  }
  let best = 1e9, cbest = 1e9, tw = 0, tc = 0;
  for (let k = 0; k < passes; k++) {
    const t = process.hrtime.bigint(), c = cpuSeconds();
    await session.run(feeds);
    const dt = Number(process.hrtime.bigint() - t) / 1e9, dc = cpuSeconds() - c;
    best = Math.min(best, dt); cbest = Math.min(cbest, dc); tw += dt; tc += dc;
  }
  await session.release();
  console.log(JSON.stringify([best, cbest, tc / tw]));
}

main().catch((e) => { console.error(String(e && e.stack || e)); process.exit(1); });
