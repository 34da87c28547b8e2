/**
 * @kernelwarehouse/torch: read PyTorch `.pth` checkpoints (torch.save zip files) without
 * executing any of their code, and turn official KernelWarehouse checkpoints into weights for
 * a @kernelwarehouse/core spec.
 *
 * @packageDocumentation
 */
export {
  type CheckpointReport,
  detectNaming,
  formatFromName,
  type LoadCheckpointOptions,
  loadCheckpoint,
} from './load.js';
export {
  isUnsafeGlobal,
  PickleGlobal,
  PickleObject,
  typeName,
  type UnpickleHooks,
  type UnpickleLimits,
  unpickle,
} from './pickle.js';
export {
  type PthFile,
  type ReadPthOptions,
  readPth,
  TORCH_STORAGE_DTYPES,
  TorchTensor,
  UnreadTensor,
} from './pth.js';
export {
  describe,
  type ExtractedStateDict,
  type ExtractOptions,
  extractStateDict,
  STATE_DICT_KEYS,
  stripModulePrefix,
} from './state-dict.js';
export { looksLikeZip, MAX_ZIP_ENTRIES, readZip, type ZipEntry } from './zip.js';
