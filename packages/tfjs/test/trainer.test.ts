import { isKwError, type ModelSpec, SpecBuilder } from '@kernelwarehouse/core';
import { createModel } from '@kernelwarehouse/zoo';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CheckpointDir,
  canonicalJson,
  exportWeights,
  registerTrainingKernels,
  Trainer,
  type TrainerEvent,
} from '../src/index.js';
import { memFs, patternImages, useBackend } from './helpers.js';

const data = (n: number, hw: number, classes: number) => patternImages(n, hw, classes);

const small = (opts: Parameters<typeof createModel>[1]) =>
  createModel('resnet8_cifar', { classes: 4, inputShape: [1, 8, 8], width: 0.5, ...opts });

/** Every layer's `temperature` property of the given class names. */
function layerTemperatures(model: tf.LayersModel, classes: string[]): number[] {
  return model.layers
    .filter((l) => classes.includes(l.getClassName()))
    .map((l) => (l as unknown as { temperature: number }).temperature);
}

beforeAll(async () => {
  await useBackend('wasm');
  registerTrainingKernels('wasm');
});

describe('Trainer', () => {
  it('anneals the DY-Conv / ODConv temperature 30 -> 1 per iteration (official formula) and ends at 1', async () => {
    for (const kind of ['dyconv', 'odconv'] as const) {
      const spec = small({ method: { kind, kernels: 2 } });
      const events: TrainerEvent[] = [];
      const seen: number[][] = [];
      const trainer = new Trainer({
        spec,
        epochs: 2,
        batchSize: 8,
        methodTemperature: { epochs: 1 },
        onEvent: (e) => {
          events.push(e);
          // the layers hold the value the step ran with
          seen.push(layerTemperatures(trainer.model, ['DyConv2D', 'ODConv2D']));
        },
      });
      expect(trainer.hasMethodTemperature).toBe(true);
      expect(trainer.hasKw).toBe(false);
      const d = data(32, 8, 4);
      await trainer.fit(d);
      const steps = 4; // 32 images / batch 8
      const temps = events.map((e) => e.temperature!);
      expect(temps).toHaveLength(2 * steps);
      // official ODConv: tau = 1 + max(0, 29 (T - t) / T), T = iters * temp_epochs, t = global step + 1
      const T = steps;
      temps.forEach((t, i) => {
        expect(t, `${kind} step ${i}`).toBeCloseTo(1 + Math.max(0, (29 * (T - (i + 1))) / T), 12);
        expect(seen[i]!.length).toBeGreaterThan(0);
        for (const v of seen[i]!) expect(v).toBe(t);
      });
      expect(temps[0]).toBeCloseTo(30 - 29 / 4, 12);
      expect(events.every((e) => e.tau === undefined)).toBe(true);
      // inference temperature after training
      for (const v of layerTemperatures(trainer.model, ['DyConv2D', 'ODConv2D'])) expect(v).toBe(1);
      expect(trainer.state.curve.map((c) => c.temperature)).toEqual(temps);
      tf.dispose(d.x);
      trainer.dispose();
    }
  }, 600_000);

  it('anneals KW tau 1 -> 0 over the given fraction of training, per iteration, and reports none for a plain model', async () => {
    const spec = small({ budget: 1 });
    const taus: number[] = [];
    const trainer = new Trainer({
      spec,
      epochs: 2,
      batchSize: 8,
      kwTemperature: { fraction: 0.25 },
      onEvent: (e) => {
        taus.push(e.tau!);
        for (const v of layerTemperatures(trainer.model, ['KWConv2D', 'KWLinear']))
          expect(v).toBe(e.tau);
      },
    });
    const d = data(32, 8, 4);
    await trainer.fit(d);
    // 8 steps, tau over 2 of them: 1 - t/2 for t = 1, 2, then 0
    expect(taus).toEqual([0.5, 0, 0, 0, 0, 0, 0, 0]);
    const plain = new Trainer({
      spec: small({}),
      epochs: 1,
      batchSize: 8,
      onEvent: (e) => taus.push(e.tau ?? -1),
    });
    expect(plain.hasKw).toBe(false);
    await plain.fit(d);
    expect(taus.slice(8)).toEqual([-1, -1, -1, -1]);
    tf.dispose(d.x);
    trainer.dispose();
    plain.dispose();
  }, 600_000);

  it('one SGD / AdamW step equals the hand-derived update (softmax cross-entropy mean, decay on weights only)', async () => {
    const b = new SpecBuilder('lin', [1, 2, 2]);
    b.output(b.linear('fc', b.flatten('flat', b.input), 3));
    const spec: ModelSpec = b.build();
    const x = [0.1, -0.2, 0.3, 0.4, -0.5, 0.25, 0.05, 0.6];
    const labels = new Int32Array([2, 0]);
    const lr = 0.1;
    const wd = 0.01;
    for (const name of ['sgd', 'adamw', 'adam'] as const) {
      const trainer = new Trainer({
        spec,
        epochs: 1,
        batchSize: 2,
        optimizer: { name, lr, weightDecay: wd, momentum: 0.9 },
      });
      const w0 = exportWeights(trainer.model);
      const W = w0.get('fc.weight')!.data; // [3, 4]
      const B = w0.get('fc.bias')!.data;
      // gradient of mean CE over the batch (float64)
      const gW = new Float64Array(12);
      const gB = new Float64Array(3);
      for (let s = 0; s < 2; s++) {
        const z = [0, 1, 2].map(
          (o) => B[o]! + [0, 1, 2, 3].reduce((a, i) => a + W[o * 4 + i]! * x[s * 4 + i]!, 0),
        );
        const m = Math.max(...z);
        const e = z.map((v) => Math.exp(v - m));
        const sum = e.reduce((a, v) => a + v, 0);
        for (let o = 0; o < 3; o++) {
          const d = (e[o]! / sum - (o === labels[s] ? 1 : 0)) / 2;
          gB[o]! += d;
          for (let i = 0; i < 4; i++) gW[o * 4 + i]! += d * x[s * 4 + i]!;
        }
      }
      const d = { x: tf.tensor4d(x, [2, 2, 2, 1]), labels };
      // the flatten of NHWC [2,2,1] and NCHW [1,2,2] orders agree for one channel
      await trainer.fit(d);
      const w1 = exportWeights(trainer.model);
      const step = (w: number, g: number, decay: boolean) => {
        if (name === 'sgd') return w - lr * (g + (decay ? wd * w : 0));
        if (name === 'adam') {
          const gg = g + (decay ? wd * w : 0);
          return w - (lr * gg) / (Math.abs(gg) + 1e-7);
        }
        return w * (decay ? 1 - lr * wd : 1) - (lr * g) / (Math.abs(g) + 1e-7);
      };
      // tolerance: float32 forward and update against float64, relative 1e-4 of the weight scale
      for (let k = 0; k < 12; k++)
        expect(
          Math.abs(w1.get('fc.weight')!.data[k]! - step(W[k]!, gW[k]!, true)),
          `${name} W${k}`,
        ).toBeLessThan(1e-5);
      for (let k = 0; k < 3; k++)
        expect(
          Math.abs(w1.get('fc.bias')!.data[k]! - step(B[k]!, gB[k]!, false)),
          `${name} b${k}`,
        ).toBeLessThan(1e-5);
      tf.dispose(d.x);
      trainer.dispose();
    }
  }, 600_000);

  it('cosine schedule: lr(t) = lr (1 + cos(pi t / T)) / 2 per step; constant otherwise', () => {
    const spec = small({});
    const t = new Trainer({ spec, optimizer: { name: 'sgd', lr: 0.1, schedule: 'cosine' } });
    expect(t.learningRate(0, 10)).toBe(0.1);
    expect(t.learningRate(5, 10)).toBeCloseTo(0.05, 15);
    expect(t.learningRate(10, 10)).toBeCloseTo(0, 15);
    t.dispose();
    const c = new Trainer({ spec });
    expect(c.learningRate(7, 10)).toBe(0.005);
    c.dispose();
  });

  it('stop + checkpoint + resume in a new Trainer is bit-identical to an uninterrupted run (SGD cosine, KW)', async () => {
    const spec = small({ budget: 1 });
    const d = data(48, 8, 4);
    const common = {
      spec,
      epochs: 2,
      batchSize: 8,
      seed: 3,
      optimizer: { name: 'sgd' as const, lr: 0.05, weightDecay: 1e-4, schedule: 'cosine' as const },
    };
    const straight = new Trainer(common);
    await straight.fit(d);
    const want = exportWeights(straight.model);

    const fs = memFs();
    let steps = 0;
    const a = new Trainer({
      ...common,
      checkpoint: { dir: new CheckpointDir('ck', fs), every: 0, extra: () => ({ run: 'x' }) },
      shouldStop: () => ++steps === 8,
    });
    expect((await a.fit(d)).stopped).toBe(true);
    expect(a.state).toMatchObject({ epoch: 1, step: 2 });
    a.dispose();
    const b = new Trainer({ ...common, checkpoint: { dir: new CheckpointDir('ck', fs) } });
    const extra = await b.resume();
    expect(extra).toMatchObject({ run: 'x', current: { epoch: 1, step: 2 } });
    expect((await b.fit(d)).stopped).toBe(false);
    const got = exportWeights(b.model);
    // tolerance 0: same weights, image order, temperatures, lr schedule and optimizer state
    for (const [k, v] of want)
      expect(
        Buffer.compare(Buffer.from(got.get(k)!.data.buffer), Buffer.from(v.data.buffer)),
        k,
      ).toBe(0);
    expect(b.state.curve).toEqual(straight.state.curve);

    // a different setting refuses the checkpoint
    const c = new Trainer({
      ...common,
      batchSize: 16,
      checkpoint: { dir: new CheckpointDir('ck', fs) },
    });
    await expect(c.resume()).rejects.toSatisfy((e) => isKwError(e, 'CHECKPOINT_INVALID'));
    for (const t of [straight, b, c]) t.dispose();
    tf.dispose(d.x);
  }, 600_000);

  it('BatchNorm re-estimation and evaluation emit their phases; accuracy is counted from the logits', async () => {
    const events: TrainerEvent[] = [];
    const trainer = new Trainer({
      spec: small({}),
      epochs: 1,
      batchSize: 8,
      bnPasses: 3,
      onEvent: (e) => events.push(e),
    });
    const d = data(20, 8, 4);
    await trainer.fit(d);
    expect(trainer.recalibrate(d.x)).toBe(3);
    const { accuracy, logits } = await trainer.evaluate(d);
    const phases = events.map((e) => `${e.phase}:${e.done}/${e.total}`);
    expect(phases).toEqual([
      'train:1/3',
      'train:2/3',
      'train:3/3',
      'bn-recalibration:1/3',
      'bn-recalibration:2/3',
      'bn-recalibration:3/3',
      'test:8/20',
      'test:16/20',
      'test:20/20',
    ]);
    let correct = 0;
    for (let i = 0; i < 20; i++) {
      const row = Array.from(logits.subarray(i * 4, i * 4 + 4));
      if (row.indexOf(Math.max(...row)) === d.labels[i]) correct++;
    }
    expect(accuracy).toBe(correct / 20);
    tf.dispose(d.x);
    trainer.dispose();
  }, 600_000);
});

describe('checkpoint manifest integrity', () => {
  async function written() {
    const fs = memFs();
    const dir = new CheckpointDir('run/ck', fs);
    await dir.write({ step: 3, lr: 0.005 }, { weights: new Uint8Array([1, 2, 3]) });
    return { fs, dir };
  }
  const edit = (fs: ReturnType<typeof memFs>, f: (m: Record<string, any>) => void) => {
    const m = JSON.parse(new TextDecoder().decode(fs.files.get('run/ck/checkpoint.json')!));
    f(m);
    fs.files.set('run/ck/checkpoint.json', new TextEncoder().encode(JSON.stringify(m, null, 2)));
  };

  it('reads back what it wrote; formatting changes keep the canonical form', async () => {
    const { fs, dir } = await written();
    edit(fs, () => {}); // re-indented, same content
    const { manifest, blobs } = await new CheckpointDir('run/ck', fs).read<{ step: number }>();
    expect(manifest.state.step).toBe(3);
    expect([...blobs.weights!]).toEqual([1, 2, 3]);
    expect(dir.generation).toBe(1);
    expect(canonicalJson({ b: 1, a: [2, { d: 3, c: 4 }] })).toBe('{"a":[2,{"c":4,"d":3}],"b":1}');
  });

  it('any edit that keeps valid JSON is refused with CHECKPOINT_INVALID', async () => {
    for (const change of [
      (m: Record<string, any>) => (m.state.step = 4),
      (m: Record<string, any>) => (m.state.lr = 0.0051),
      (m: Record<string, any>) => (m.generation = 7),
      (m: Record<string, any>) => (m.state.extra = true),
      (m: Record<string, any>) =>
        (m.manifestSha256 = m.manifestSha256.replace(/^./, (c: string) => (c === '0' ? '1' : '0'))),
    ]) {
      const { fs } = await written();
      edit(fs, change);
      await expect(new CheckpointDir('run/ck', fs).read()).rejects.toThrow(
        /\[CHECKPOINT_INVALID\] checkpoint run\/ck\/checkpoint.json was modified after it was written/,
      );
    }
  });

  it('a file name leaving the folder is refused by name before anything is opened', async () => {
    for (const bad of ['../../etc/hostname', '/etc/hostname', '..', 'a/b', '.hidden']) {
      const fs = memFs();
      const dir = new CheckpointDir('run/ck', fs);
      // a manifest with a valid hash around a hostile name (as a hand-made file could carry)
      await dir.write({}, { weights: new Uint8Array([1]) });
      const m = JSON.parse(new TextDecoder().decode(fs.files.get('run/ck/checkpoint.json')!));
      m.files.weights.file = bad;
      const { manifestSha256: _, ...body } = m;
      const { sha256Hex } = await import('../src/checkpoint.js');
      m.manifestSha256 = await sha256Hex(canonicalJson(body));
      fs.files.set('run/ck/checkpoint.json', new TextEncoder().encode(JSON.stringify(m)));
      fs.reads.length = 0;
      await expect(dir.read()).rejects.toThrow(
        `[CHECKPOINT_INVALID] checkpoint run/ck/checkpoint.json names the file ${JSON.stringify(bad)}, which is not a plain file name inside the checkpoint folder`,
      );
      expect(fs.reads).toEqual(['run/ck/checkpoint.json']);
    }
  });
});
