/**
 * The shape of the native addon (native/*.cpp), as the TypeScript layer sees it. Internal: users
 * work with Model, Projector, Session and ChainOfSpot, which validate arguments, queue calls and
 * turn native failures into ChainOfSpotError.
 * @internal
 */

export interface NativeModelInfo {
  architecture: string;
  name: string;
  description: string;
  trainingContextSize: number;
  embeddingSize: number;
  vocabSize: number;
  parameters: number;
  sizeBytes: number;
  chatTemplate: string | null;
  bos: number;
  eos: number;
}

export interface NativeModel {
  load(path: string, options: { gpuLayers: number; mmap: boolean; repack: boolean; rpcServers: string[] }, onProgress?: (progress: number) => void): Promise<void>;
  abortLoad(): void;
  info(): NativeModelInfo;
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Int32Array;
  detokenize(tokens: Int32Array, renderSpecial: boolean): string;
  dispose(): void;
}

export interface NativeProjectorInfo {
  imageSize: number;
  tokensPerImage: number;
  supportsVision: boolean;
}

export interface NativeProjector {
  load(model: NativeModel, path: string, options: { gpu: boolean; threads: number; warmup: boolean; imageMinTokens: number; imageMaxTokens: number }): Promise<void>;
  info(): NativeProjectorInfo;
  dispose(): void;
}

export interface NativeEvaluateResult {
  position: number;
  tokens: number;
  decodeCalls: number;
  ms: number;
}

export interface NativeImageResult {
  position: number;
  tokens: number;
  markerTokens: number;
  grids: { width: number; height: number }[];
  encodeMs: number;
  decodeMs: number;
}

export interface NativeGenerateOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  grammar: string;
  stop: string[];
}

export interface NativeGenerateResult {
  tokens: Int32Array;
  text: string;
  finishReason: 'eos' | 'stop' | 'length' | 'context';
  sampledTokens: number;
  decodeCalls: number;
  position: number;
  ms: number;
}

/** One sequence's part in a step of parallel decoding: tokens to evaluate, a generation to start (options) or continue (true), or a cancel (truncate to the position). */
export type NativeStepItem =
  | { sequence: number; tokens: Int32Array }
  | { sequence: number; generate: NativeGenerateOptions | true }
  | { sequence: number; cancel: number };

/** What a step did for one item: `error` when it failed (that item alone). */
export type NativeStepResult =
  | { position: number; done: boolean; decodes: number; evaluated: number; text: string; result?: NativeGenerateResult }
  | { position: number; error: Error };

export interface NativeSession {
  create(model: NativeModel, options: { contextSize: number; batchSize: number; threads: number; sequences: number; unifiedCache: boolean }): Promise<void>;
  info(): { contextSize: number; batchSize: number; sequences: number };
  evaluate(tokens: Int32Array, sequence: number): Promise<NativeEvaluateResult>;
  evaluateImage(projector: NativeProjector, rgb: Uint8Array, width: number, height: number, sequence: number): Promise<NativeImageResult>;
  generate(options: NativeGenerateOptions, sequence: number, onText?: (text: string) => void): Promise<NativeGenerateResult>;
  step(items: NativeStepItem[]): Promise<NativeStepResult[]>;
  interruptStep(): void;
  position(sequence: number): number;
  truncate(position: number, sequence: number): void;
  copySequence(source: number, destination: number): void;
  clear(): void;
  logits(sequence: number): Float32Array | null;
  abort(): void;
  dispose(): void;
}

/** A device ggml registered: `type` is ggml's (llvmpipe, a CPU-type Vulkan device, counts as `gpu`). */
export interface NativeDevice {
  name: string;
  description: string;
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeSystemInfo {
  llamaCppCommit: string;
  system: string;
  gpuOffload: boolean;
  backend: 'cpu' | 'cuda' | 'vulkan';
  /** Every registered device, the CPU included. */
  devices: NativeDevice[];
}

export interface NativeBinding {
  Model: new () => NativeModel;
  Projector: new () => NativeProjector;
  Session: new () => NativeSession;
  setLogger(logger: ((level: string, text: string) => void) | null, minLevel: number): void;
  systemInfo(): NativeSystemInfo;
  /** ggml's RPC server on `host:port`, serving this machine's GPUs or CPU; settles only if it cannot listen. */
  startRpcServer(endpoint: string, threads: number): Promise<never>;
}
