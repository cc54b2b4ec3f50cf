#!/usr/bin/env node
// bench/cnn_verify/ort_run.js: runs an ONNX model in onnxruntime-node (fp32, CPU) on a .npy
// batch and writes one output tensor as .npy. The reference runtime of bench/cnn_verify.
// Usage: node ort_run.js MODEL.onnx IN.npy OUT.npy OUTPUT_NAME [THREADS]
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
  const b = fs.readFileSync(path);
  if (b.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(path + ': not a .npy file');
  const major = b[6];
  const hl = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const off = major === 1 ? 10 + hl : 12 + hl;
  const hdr = b.toString('latin1', major === 1 ? 10 : 12, off);
  if (!hdr.includes("'<f4'") || !hdr.includes("'fortran_order': False")) throw new Error(path + ': need <f4, C order');
  const shape = hdr.match(/'shape': \(([^)]*)\)/)[1].split(',').map((s) => s.trim()).filter((s) => s).map(Number);
  const data = new Float32Array(b.buffer.slice(b.byteOffset + off, b.byteOffset + b.length));
  return { shape, data };
}

function writeNpy(path, shape, data) {
  let hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape.join(', ') + (shape.length === 1 ? ',' : '') + '), }';
  while ((10 + hdr.length + 1) % 64) hdr += ' ';
  hdr += '\n';
  const h = Buffer.alloc(10);
  h.write('\x93NUMPY', 0, 'latin1');
  h[6] = 1; h[7] = 0;
  h.writeUInt16LE(hdr.length, 8);
  fs.writeFileSync(path, Buffer.concat([h, Buffer.from(hdr, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

async function main() {
  const [model, inp, outp, name, threads] = process.argv.slice(2);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: Number(threads || 2), interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  const x = readNpy(inp);
  const per = x.data.length / x.shape[0];
  const chunks = [];
  let oshape = null;
  for (let s = 0; s < x.shape[0]; s += 8) {
    const b = Math.min(8, x.shape[0] - s);
    const t = new ort.Tensor('float32', x.data.subarray(s * per, (s + b) * per), [b, ...x.shape.slice(1)]);
    const r = await sess.run({ [sess.inputNames[0]]: t }, [name]);
    chunks.push(Float32Array.from(r[name].data));
    oshape = r[name].dims.slice(1);
  }
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const all = new Float32Array(total);
  let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  writeNpy(outp, [x.shape[0], ...oshape], all);
  console.error(`onnxruntime-node ${require('onnxruntime-node/package.json').version}: ${x.shape[0]} images -> ${name} [${oshape}]`);
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
