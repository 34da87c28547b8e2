// A real browser: headless Debian Chromium loads a page served on 127.0.0.1 from this package
// (our dist/ code through an import map, onnxruntime-web from node_modules), runs an exported KW
// model (KW, ODConv and DY-Conv layers) on the `wasm` EP and on the `webgpu` EP (SwiftShader adapter, --enable-unsafe-webgpu),
// and both are compared with the core reference in Node. .ci/run installs chromium with apt-get;
// elsewhere the test is skipped (with a message) when /usr/bin/chromium is absent.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  initWeights,
  type ModelSpec,
  maxRelativeError,
  runReference,
  SpecBuilder,
} from '@kernelwarehouse/core';
import { perturb, Rng, randomInput } from '@kernelwarehouse/core/testing';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toOnnx, toOnnxWithInfo } from './index.js';

const CHROMIUM = process.env.KW_CHROMIUM ?? '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
if (!have && process.env.CI)
  throw new Error(`CI needs ${CHROMIUM} for the browser test (.ci/run installs it)`);
if (!have)
  console.warn(
    `browser test skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set KW_CHROMIUM)`,
  );

const root = fileURLToPath(new URL('..', import.meta.url));
const TYPES: Record<string, string> = {
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.wasm': 'application/wasm',
  '.html': 'text/html',
};

/**
 * A KW model with a grouped KW conv of 5 output channels per group (the WebGPU NHWC bug shape),
 * then an ODConv and a DY-Conv layer.
 */
function browserSpec(): ModelSpec {
  const b = new SpecBuilder('browser', [4, 6, 6]);
  b.warehouse({ id: 'w', budget: 1 });
  let x = b.relu('r', b.conv2d('stem', b.input, { outChannels: 10, kernelSize: 3, padding: 1 }));
  x = b.dynamicConv2d(
    'kw1',
    x,
    { outChannels: 10, kernelSize: 3, padding: 1, groups: 2, bias: true },
    { kind: 'kw', warehouse: 'w' },
  );
  x = b.dynamicConv2d(
    'kw2',
    b.relu('r2', x),
    { outChannels: 10, kernelSize: 3, stride: 2, padding: 1 },
    { kind: 'kw', warehouse: 'w' },
  );
  // the other methods' subgraphs on the same EPs: ODConv (four heads, broadcast Muls) and DY-Conv
  const od = b.dynamicConv2d(
    'od',
    x,
    { outChannels: 8, kernelSize: 3, padding: 1, groups: 2 },
    { kind: 'odconv', kernels: 4 },
  );
  x = b.dynamicConv2d(
    'dy',
    b.relu('r3', od),
    { outChannels: 8, kernelSize: 1, bias: true },
    { kind: 'dyconv', kernels: 4 },
  );
  b.output(b.linear('fc', b.flatten('f', b.globalAvgPool('p', x)), 3));
  b.output('kw1'); // the grouped KW conv itself, where a layout bug would show undiluted
  b.output('od');
  return b.build();
}

const PAGE = `<!doctype html><html><head>
<script type="importmap">{"imports": {
  "onnxruntime-web": "/node_modules/onnxruntime-web/dist/ort.all.min.mjs",
  "@kernelwarehouse/core": "/node_modules/@kernelwarehouse/core/dist/index.js"
}}</script>
<script type="module">
  import * as ort from 'onnxruntime-web';
  import { createSession, runSession } from '/dist/index.js';
  ort.env.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
  window.runModel = async (ep, shape, url = '/model.onnx') => {
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    const x = new Float32Array(await (await fetch('/input.bin')).arrayBuffer());
    const session = await createSession(bytes, { executionProvider: ep });
    const ys = await runSession(session, { shape, data: x });
    return { data: ys.map((y) => Array.from(y.data)), isolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads };
  };
  // the same model through onnxruntime-web directly with its default WebGPU layout (NHWC)
  window.runDefaultLayout = async (shape) => {
    const bytes = new Uint8Array(await (await fetch('/model.onnx')).arrayBuffer());
    const x = new Float32Array(await (await fetch('/input.bin')).arrayBuffer());
    const s = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'] });
    const r = await s.run({ input: new ort.Tensor('float32', x, shape) });
    return s.outputNames.map((n) => Array.from(r[n].data));
  };
  window.ortVersion = ort.env.versions?.web ?? '';
  window.ready = true;
</script></head><body>kw</body></html>`;

describe.skipIf(!have)('headless Chromium: onnxruntime-web wasm and webgpu', () => {
  let server: Server;
  let base = '';
  const spec = browserSpec();
  const rng = new Rng(12);
  const w = initWeights(spec, { seed: 12 });
  for (const [k, t] of w) w.set(k, perturb(rng, t, 0.1));
  const x = randomInput(new Rng(13), [2, ...spec.inputShape]);
  // the default: at a dynamic batch each per-sample conv is a Scan over the samples (a plain
  // Conv per sample: control flow on both EPs)
  const exported = toOnnxWithInfo(spec, w);
  const model = exported.bytes;
  // and without control flow: im2col (one-hot depthwise Conv) + batched MatMul
  const im2colModel = toOnnx(spec, w, { scanBatch: false });
  // the ungrouped KW conv (kw2) tap by tap: 6-D broadcast MatMul, two-axis ReduceSum, 5-D Transpose
  const tapModel = toOnnx(spec, w, { tapMajor: true });
  // and in the mixed form: rank-5 broadcast MatMul of patches and attention, the shared 1x1 GEMM
  // on a folded view of the warehouse, a 4-D Transpose
  const mixModel = toOnnx(spec, w, { tapMixing: true });
  const assembledModel = toOnnx(spec, w, { tapMixing: false });
  const refs = runReference(spec, w, x);
  const err = (got: number[][]) =>
    Math.max(...spec.outputs.map((o, i) => maxRelativeError(got[i]!, refs.get(o)!.data)));

  beforeAll(async () => {
    server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x').pathname;
      const headers = {
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
      };
      const send = (body: Uint8Array | string, type: string) => {
        res.writeHead(200, { ...headers, 'Content-Type': type });
        res.end(body);
      };
      if (url === '/') return send(PAGE, 'text/html');
      if (url === '/model.onnx') return send(model, 'application/octet-stream');
      if (url === '/model-tap.onnx') return send(tapModel, 'application/octet-stream');
      if (url === '/model-mix.onnx') return send(mixModel, 'application/octet-stream');
      if (url === '/model-im2col.onnx') return send(im2colModel, 'application/octet-stream');
      if (url === '/input.bin')
        return send(new Uint8Array(x.data.buffer), 'application/octet-stream');
      const file = normalize(join(root, url));
      if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
        res.writeHead(404, headers);
        return res.end();
      }
      send(readFileSync(file), TYPES[extname(file)] ?? 'application/octet-stream');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('wasm and webgpu (NCHW) both match the reference', async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--enable-unsafe-webgpu',
        '--enable-unsafe-swiftshader',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(base);
      await page.waitForFunction(
        () => (window as unknown as { ready?: boolean }).ready === true,
        undefined,
        { timeout: 0 },
      );
      const run = (ep: string, url = '/model.onnx') =>
        page.evaluate(
          ([e, s, u]) =>
            (
              window as unknown as {
                runModel: (
                  e: string,
                  s: number[],
                  u: string,
                ) => Promise<{ data: number[][]; isolated: boolean; threads: number }>;
              }
            ).runModel(e as string, s as number[], u as string),
          [ep, x.shape, url] as const,
        );
      const wasm = await run('wasm');
      expect(wasm.isolated).toBe(true);
      expect(err(wasm.data)).toBeLessThan(1e-4);
      const gpu = await run('webgpu');
      const gpuErr = err(gpu.data);
      expect(gpuErr).toBeLessThan(1e-4);
      const tapErr = [
        err((await run('wasm', '/model-tap.onnx')).data),
        err((await run('webgpu', '/model-tap.onnx')).data),
      ];
      expect(tapErr[0]).toBeLessThan(1e-4);
      expect(tapErr[1]).toBeLessThan(1e-4);
      const mixErr = [
        err((await run('wasm', '/model-mix.onnx')).data),
        err((await run('webgpu', '/model-mix.onnx')).data),
      ];
      expect(mixModel).not.toEqual(assembledModel); // kw2 mixes its taps there
      expect(mixErr[0]).toBeLessThan(1e-4);
      expect(mixErr[1]).toBeLessThan(1e-4);
      expect(exported.ops.Scan).toBeGreaterThan(0);
      const im2colErr = [
        err((await run('wasm', '/model-im2col.onnx')).data),
        err((await run('webgpu', '/model-im2col.onnx')).data),
      ];
      expect(im2colErr[0]).toBeLessThan(1e-4);
      expect(im2colErr[1]).toBeLessThan(1e-4);
      // the bug the NCHW layout works around is real in this version: default NHWC is wrong here
      const version = await page.evaluate(
        () => (window as unknown as { ortVersion: string }).ortVersion,
      );
      const nhwc = await page.evaluate(
        (s) =>
          (
            window as unknown as { runDefaultLayout: (s: number[]) => Promise<number[][]> }
          ).runDefaultLayout(s),
        x.shape as number[],
      );
      const nhwcErr = maxRelativeError(nhwc[1]!, refs.get('kw1')!.data);
      console.log(
        `browser parity (max rel err): wasm ${err(wasm.data).toExponential(2)}, webgpu NCHW ${gpuErr.toExponential(2)}, webgpu default NHWC (grouped KW conv output) ${nhwcErr.toExponential(2)}, tap by tap wasm ${tapErr[0]!.toExponential(2)} webgpu ${tapErr[1]!.toExponential(2)}, mixed wasm ${mixErr[0]!.toExponential(2)} webgpu ${mixErr[1]!.toExponential(2)}, im2col (scanBatch false) wasm ${im2colErr[0]!.toExponential(2)} webgpu ${im2colErr[1]!.toExponential(2)} (onnxruntime-web ${version})`,
      );
      if (version === '1.30.0') expect(nhwcErr).toBeGreaterThan(0.1);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
