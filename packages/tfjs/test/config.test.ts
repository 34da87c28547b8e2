// Saved tfjs models carry what the user asked for (the spec node, its input shape and, for KW,
// the warehouse spec and member nodes), not the planner's output; the layers re-plan on load, and
// no state outside the model links shared warehouses. Deep specs are refused with a KwError
// before tfjs-layers' recursive graph walk overflows the stack.
import { initWeights, isKwError, type ModelSpec, SpecBuilder } from '@kernelwarehouse/core';
import { Rng, randomInput, tinyKwSpec } from '@kernelwarehouse/core/testing';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import {
  buildModel,
  DynamicLayer,
  fromModelOutput,
  KWConv2D,
  MAX_MODEL_NODES,
  SharedTensor,
  setTemperature,
  toModelInput,
} from '../src/index.js';
import { decodePayload } from '../src/layers.js';
import { useBackend } from './helpers.js';

async function roundTrip(model: tf.LayersModel): Promise<tf.LayersModel> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return tf.loadLayersModel(tf.io.fromMemory(artifacts!));
}

function chain(n: number): ModelSpec {
  const b = new SpecBuilder(`chain-${n}`, [2]);
  let x: string = b.input;
  for (let i = 0; i < n; i++) x = b.relu(`r${i}`, x);
  b.output(x);
  return b.build();
}

describe('saved models carry the spec node and re-plan on load', () => {
  it('a KW layer config is node + input shape + warehouse group; no plan, no beta', async () => {
    await useBackend('cpu');
    const spec = tinyKwSpec({ budget: 0.5, cellRatio: 0.5, nonlocalBasisRatio: 0.5 });
    const model = buildModel(spec, initWeights(spec, { seed: 2 }));
    const layer = model.layers.find((l) => l.name === 'down') as KWConv2D;
    expect(layer).toBeInstanceOf(KWConv2D);
    const config = layer.getConfig();
    const payload = decodePayload<Record<string, unknown>>(config.payload as string);
    expect(Object.keys(payload).sort()).toEqual(['group', 'inShape', 'node']);
    expect(payload.node).toEqual(spec.nodes.find((n) => n.id === 'down'));
    const group = payload.group as {
      warehouses: { id: string }[];
      members: { node: { id: string } }[];
    };
    expect(group.warehouses.map((w) => w.id)).toEqual(['stage0']);
    expect(group.members.map((m) => m.node.id)).toEqual(['block.conv1', 'block.conv2', 'down']);
    expect(JSON.stringify(payload)).not.toMatch(/beta|"start"|"logits"|"cellOut"|"gOut"/);
    // the warehouses are layers of the model, wired into their members
    const shared = model.layers.filter((l) => l instanceof SharedTensor).map((l) => l.name);
    expect(shared).toEqual(['warehouses.stage0', 'warehouses.stage1']);
    model.dispose();
  });

  it('save -> load (memory handler) gives identical outputs, at tau 0 and tau 0.5, and two loads stay independent', async () => {
    await useBackend('cpu');
    const spec = tinyKwSpec({ budget: 2, nonlocalBasisRatio: 0.5, kwClassifier: true });
    const model = buildModel(spec, initWeights(spec, { seed: 4 }));
    const a = await roundTrip(model);
    const b = await roundTrip(model);
    const x = toModelInput(randomInput(new Rng(9), [3, ...spec.inputShape]));
    for (const tau of [0, 0.5]) {
      setTemperature(model, tau);
      setTemperature(a, tau);
      const y0 = fromModelOutput(model.predict(x) as tf.Tensor).data;
      const y1 = fromModelOutput(a.predict(x) as tf.Tensor).data;
      expect(Array.from(y1)).toEqual(Array.from(y0));
    }
    // loads share nothing: changing one loaded warehouse leaves the other load unchanged
    const before = fromModelOutput(b.predict(x) as tf.Tensor).data;
    const wh = a.layers.find((l) => l instanceof SharedTensor)!;
    wh.setWeights([tf.zerosLike(wh.getWeights()[0]!)]);
    const after = fromModelOutput(b.predict(x) as tf.Tensor).data;
    expect(Array.from(after)).toEqual(Array.from(before));
    expect(a.layers.filter((l) => l instanceof DynamicLayer).length).toBe(5);
    tf.dispose(x);
    for (const m of [model, a, b]) m.dispose();
  });
});

describe('deep specs', () => {
  it(`builds a ${MAX_MODEL_NODES}-node chain and refuses longer ones with BACKEND_UNSUPPORTED`, async () => {
    await useBackend('cpu');
    const ok = buildModel(chain(MAX_MODEL_NODES));
    expect(ok.layers.length).toBe(MAX_MODEL_NODES + 1);
    ok.dispose();
    for (const n of [MAX_MODEL_NODES + 1, 5_000, 20_000]) {
      let code = 'no error';
      try {
        buildModel(chain(n));
      } catch (e) {
        code = isKwError(e) ? e.code : `not a KwError: ${String(e)}`;
      }
      expect(code).toBe('BACKEND_UNSUPPORTED');
    }
  });
});
