/**
 * chain-of-spot: Chain-of-Spot interactive reasoning for vision-language models in Node.js
 * (LLaVA-1.5, the reference, and Qwen2.5-VL, Qwen3-VL, InternVL, Gemma 3), on llama.cpp's own C++
 * (libllama + libmtmd) inside an N-API addon.
 *
 * Start with {@link ChainOfSpot}; {@link Model}, {@link Projector} and {@link Session} are the
 * lower-level building blocks it is made of.
 * @packageDocumentation
 */
export { ChainOfSpot } from './procedure/chain-of-spot';
export type {
  AskOptions,
  AskResult,
  BaselineOptions,
  BaselineResult,
  ChainOfSpotLike,
  ChainOfSpotOptions,
  FamilyName,
  OpenedImage,
  RegionOfInterest,
  TurnImage,
  TurnResult,
  TurnTimings,
} from './procedure/types';
export { FAMILY_NAMES } from './procedure/types';
export {
  RemoteChainOfSpot,
  type ConnectOptions,
  type RemoteAskResult,
  type RemoteBaselineResult,
  type RemoteTurnResult,
} from './procedure/remote';
export { IsolatedChainOfSpot, type RpcChainOfSpotOptions } from './procedure/isolated';
export { ChainOfSpotError, type ErrorCode } from './common/errors';
export { Model, type ModelInfo, type ModelLoadOptions, type TokenizeOptions } from './llama/model';
export { Projector, type ImageTokenLimits, type ProjectorInfo, type ProjectorOptions } from './llama/projector';
export {
  Session,
  type EvaluateOptions,
  type EvaluateResult,
  type GenerateOptions,
  type GenerateResult,
  type ImageEvaluation,
  type RgbPixels,
  type SequenceOptions,
  type SessionOptions,
} from './llama/session';
export { setLogger, type Logger, type LogLevel } from './native/logger';
export { backend, CPU_LEVELS, setBackend, setBinaryPath, type Backend, type BackendChoice, type BackendPreference, type CpuLevel } from './native/loader';
export { BOX_GRAMMAR, BOX_PATTERN, formatBox, parseBox, type ModelBox } from './procedure/box';
export { FULL_BOX, paddedSquare, type Box, type ImageSize, type PaddedSquare, type PixelRect } from './image/geometry';
export type { RgbImage } from './common/rgb-image';
export {
  boxToPixels,
  cropRect,
  DEFAULT_MAX_PIXELS,
  loadImage,
  prepareOriginal,
  prepareRegion,
  type ImageInput,
  type LoadImageOptions,
  type RawImageInput,
} from './image/image';
export {
  ANSWER_INSTRUCTION,
  ROI_INSTRUCTION,
  SYSTEM_PROMPT,
  TRAINING_ROI_INSTRUCTION,
  answerContinuation,
  baselinePrompt,
  renderPrompt,
  roiPrompt,
  twoTurnPrompt,
  type ChainOfSpotPromptOptions,
  type ImagePart,
  type ImageSlot,
  type InstructionTemplate,
  type Prompt,
  type PromptPart,
  type SpecialPart,
  type TemplatePart,
  type TextPart,
} from './procedure/prompt';
