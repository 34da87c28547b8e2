/**
 * The flags of `kw plan`, `kw export`, `kw onnx-info` and `kw models`, with their ranges and
 * defaults (the parser and `--help` read the same table). `kw train`'s are in train-options.ts.
 */
import { type OptionTable, SEED_RANGE } from './args.js';

/** Flags shared by the model-building commands (plan, export). */
export const MODEL_FLAGS: OptionTable = {
  budget: {
    type: 'string',
    value: 'B',
    help: 'KernelWarehouse budget: 1/4x, 1/2x, 1x, 2x, 4x, a number > 0 like 0.25, or plain',
    default: 'plain',
  },
  method: {
    type: 'string',
    value: 'M',
    help: 'another method instead of KW: odconv[:K], dyconv[:K], condconv[:n], doconv, weightnet[:M:G], se',
  },
  classes: {
    type: 'string',
    value: 'N',
    help: 'classifier outputs',
    default: "the model's own (1000; CIFAR models 10)",
    range: { int: true, min: 1, max: 1_000_000 },
  },
  input: {
    type: 'string',
    value: 'HxWxC',
    help: 'input size, e.g. 224x224x3 or 28x28x1',
    default: "the model's own",
  },
  width: {
    type: 'string',
    value: 'W',
    help: 'width multiplier of the channels',
    default: '1',
    range: { min: 0, minExclusive: true, max: 64 },
  },
  json: { type: 'boolean', help: 'print JSON instead of tables' },
};

/** `kw export`'s own flags (beside {@link MODEL_FLAGS}). */
export const EXPORT_FLAGS: OptionTable = {
  out: { type: 'string', value: 'FILE', help: 'the ONNX file to write (or --triton-repo)' },
  weights: {
    type: 'string',
    value: 'FILE',
    help: 'trained weights: a PyTorch .pth/.pt/.ckpt checkpoint or safetensors, in official or project names (detected)',
    default: 'seeded initial weights',
  },
  ema: {
    type: 'boolean',
    help: 'take model_ema instead of model from an official checkpoint dict',
  },
  key: {
    type: 'string',
    value: 'K',
    help: 'take the state_dict under this key of a .pth checkpoint dict (e.g. teacher, state_dict); instead of --ema',
    default: 'model, else the dict itself',
  },
  stem: {
    type: 'string',
    value: 'S',
    help: 'auto, imagenet or small: the small-input stem is chosen at <= 64 px under auto; official ImageNet weights need imagenet',
    default: 'auto',
  },
  seed: {
    type: 'string',
    value: 'S',
    help: 'seed of the initial weights when --weights is not given',
    default: '0',
    range: SEED_RANGE,
  },
  'weights-out': { type: 'string', value: 'FILE', help: 'also write the weights (safetensors)' },
  temperature: {
    type: 'string',
    value: 'T',
    help: 'KW temperature baked into the graph',
    default: '0 (inference)',
    range: { min: 0, max: 1 },
  },
  batch: {
    type: 'string',
    value: 'N',
    help: 'fix the batch size in the graph (every KW conv one grouped Conv; every run must then be N images)',
    default: 'dynamic',
    range: { int: true, min: 1, max: 65536 },
  },
  threads: {
    type: 'string',
    value: 'N',
    help: 'the thread count the model will run with; with --batch 1 --threads 1 (a browser page that is not cross-origin isolated) KW 1/2x and 1/4x assemble their kernels in the form faster on one thread',
    default: 'unknown',
    range: { int: true, min: 1, max: 1024 },
  },
  'tap-major': {
    type: 'string',
    value: 'M',
    help: 'auto, on or off: run KW convs tap by tap (the kernel assembled with its taps as rows, the conv as one batched MatMul with im2col patches); auto: where the assembly costs much next to the conv (ResNet18 224x224: stage 4)',
    default: 'auto',
  },
  'tap-mixing': {
    type: 'string',
    value: 'M',
    help: "auto, on or off: run KW convs in the mixed form (each sample's input taps mixed by its attention, then the warehouse applied once for the batch as a 1x1 product: no per-sample kernels); auto: where it costs at most the assembled form (ResNet18 224x224 1/4x: stage 4), not at --batch 1",
    default: 'auto',
  },
  'scan-batch': {
    type: 'string',
    value: 'M',
    help: "on or off: at a dynamic batch, run each per-sample conv as an ONNX Scan over the images (one plain Conv per image, onnxruntime's own conv); off: im2col + one batched MatMul, no control flow (for onnxruntime-web's WebGPU EP, which has no Scan kernel)",
    default: 'on (dynamic batch)',
  },
  'scan-assembly': {
    type: 'string',
    value: 'M',
    help: "on or off: with --scan-batch on, assemble each image's KW kernel inside its Scan body (one image's kernels in memory at a time); off: every image's kernels before the Scan (on native onnxruntime KW 1x ran faster so)",
    default: 'on (with the Scan)',
  },
  'triton-repo': {
    type: 'string',
    value: 'DIR',
    help: 'write a Triton model repository entry DIR/NAME/1/model.onnx + config.pbtxt',
  },
  'triton-name': {
    type: 'string',
    value: 'NAME',
    help: 'Triton model name',
    default: 'the spec name',
  },
  'max-batch': {
    type: 'string',
    value: 'N',
    help: 'Triton max_batch_size',
    default: '8',
    range: { int: true, min: 0, max: 1_000_000 },
  },
  instances: {
    type: 'string',
    value: 'N',
    help: 'Triton instance count',
    default: '1',
    range: { int: true, min: 1, max: 1024 },
  },
};

/** `kw onnx-info` and `kw models`. */
export const JSON_FLAG: OptionTable = {
  json: { type: 'boolean', help: 'print JSON instead of tables' },
};

/** `kw convert`'s flags (the input file is the positional argument). */
export const CONVERT_FLAGS: OptionTable = {
  model: { type: 'string', value: 'M', help: 'the zoo model the checkpoint holds (see kw models)' },
  budget: MODEL_FLAGS.budget!,
  classes: MODEL_FLAGS.classes!,
  input: MODEL_FLAGS.input!,
  width: MODEL_FLAGS.width!,
  stem: EXPORT_FLAGS.stem!,
  ema: EXPORT_FLAGS.ema!,
  key: EXPORT_FLAGS.key!,
  to: {
    type: 'string',
    value: 'NAMES',
    help: "project (this project's names) or official (PyTorch state_dict names)",
    default: 'project',
  },
  out: { type: 'string', value: 'FILE', help: 'the safetensors file to write' },
};
