/**
 * The command line's words: the usage text, the option tables, and `parseCommandLine`, which turns
 * argv into a checked {@link Command} without touching any file.
 */
import { isIPv4 } from 'node:net';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { ChainOfSpotError } from '../common/errors';
import { demoModelFiles } from '../models/demo-model';
import { FAMILY_NAMES, type FamilyName } from '../procedure/types';

/** The usage text of `chain-of-spot --help`. */
export const USAGE = `Usage: chain-of-spot <command> [options]

Chain-of-Spot (Liu et al.) on LLaVA-1.5 GGUF models: the model first names the region of the
image that matters for the question, then answers with that region zoomed in.

Commands:
  ask IMAGE QUESTION     answer a question about an image
  demo                   run the whole procedure with the bundled demo model on a generated scene
  eval DATA.jsonl        answer each line's question and score it (VQAv2 accuracy, exact match, and
                         the region's IoU where a line has a true "box");
                         lines are {"image": path, "question": text, "answers": [text, ...], "id": ...};
                         questions are asked as written (LLaVA's VQAv2 protocol ends each with
                         "\\nAnswer the question using a single word or phrase.")
  scenes                 write generated scenes with tag-reading questions, in the JSONL eval reads
  rpc-server             serve this machine's CPU (or GPUs) to ChainOfSpot.load's rpcServers (ggml RPC)

Model options (ask, eval):
  -m, --model FILE       the text model (GGUF): LLaVA-1.5, Qwen2.5-VL, Qwen3-VL... (required)
      --mmproj FILE      its projector (the mmproj GGUF released with it)          (required)
      --demo-model       instead of --model and --mmproj: the small trained pair shipped in the
                         package, which reads the digit on a tag of a generated scene
      --gpu-layers N     text model layers on the GPU: a number, auto or max       (default auto)
      --threads N        CPU threads                                               (default: all)
      --max-tokens N     most tokens of the answer                                 (default 128)
      --no-grammar       let turn one write its region freely, not in the family's box format
      --family NAME      the model family, when detecting it from the projector is not wanted:
                         llava-1.5, qwen2.5-vl, qwen3-vl, internvl or gemma3 (README, "Model families")

ask options:
      --json             print one JSON object (answer, region, turns, timings) instead of text
      --stream           print each turn's text as it is generated
      --annotate OUT.png write the image with the region drawn on it
      --save-roi OUT.png write the zoomed region the model saw in turn two

eval options:
      --baseline         answer in one plain turn (no region, no zoom), to compare with
      --limit N          only the first N questions
      --parallel N       answer N questions at once, decoded together (see "Serving")  (default 1)
      --out PRED.jsonl   write one prediction per line, as each is answered
      --resume           keep the predictions already in --out and answer only the rest
      --reference        reproduce the authors' code where this package deliberately differs:
                         EXIF orientation not applied, the box read and cropped as their script
                         and Pillow do, no grammar (see "Reference mode" in the README)

demo options:
      --out DIR          where to write chain-of-spot-demo.png and chain-of-spot-demo-roi.png
                         (default: the current folder)

scenes options:
      --count N          how many questions to write                               (required)
      --seed S           the scenes' seed: the same seed writes the same files     (default 0)
      --out DIR          where to write questions.jsonl and images/                 (required)
      --backgrounds DIR  photos to crop backgrounds from (default: gradients and noise only)

rpc-server options:
      --host ADDRESS     the IPv4 address to listen on; the protocol has no authentication or
                         encryption: keep it private (README, "Serving")        (default 127.0.0.1)
      --port N           the port to listen on                                      (default 50052)
      --threads N        CPU threads                                   (default: the physical cores)

Other options:
      --debug            on failure print the stack trace; print llama.cpp's log
  -h, --help             print this help
  -v, --version          print the version

Exit status: 0 done, 1 failed, 2 wrong usage, 130 interrupted (Ctrl-C).
Get LLaVA-1.5 weights: see "Getting weights" in the README.
`;

function usageError(message: string): ChainOfSpotError {
  return new ChainOfSpotError('ERR_USAGE', message);
}

const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  debug: { type: 'boolean' },
} as const;

const MODEL_OPTIONS = {
  ...COMMON_OPTIONS,
  model: { type: 'string', short: 'm' },
  mmproj: { type: 'string' },
  'gpu-layers': { type: 'string' },
  threads: { type: 'string' },
  'max-tokens': { type: 'string' },
  'no-grammar': { type: 'boolean' },
  'demo-model': { type: 'boolean' },
  family: { type: 'string' },
} as const;

const ASK_OPTIONS = {
  ...MODEL_OPTIONS,
  json: { type: 'boolean' },
  stream: { type: 'boolean' },
  annotate: { type: 'string' },
  'save-roi': { type: 'string' },
} as const;

const EVAL_OPTIONS = {
  ...MODEL_OPTIONS,
  baseline: { type: 'boolean' },
  parallel: { type: 'string' },
  limit: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'boolean' },
  reference: { type: 'boolean' },
} as const;

const DEMO_OPTIONS = {
  ...COMMON_OPTIONS,
  out: { type: 'string' },
} as const;

const RPC_SERVER_OPTIONS = {
  ...COMMON_OPTIONS,
  host: { type: 'string' },
  port: { type: 'string' },
  threads: { type: 'string' },
} as const;

const SCENES_OPTIONS = {
  ...COMMON_OPTIONS,
  count: { type: 'string' },
  seed: { type: 'string' },
  out: { type: 'string' },
  backgrounds: { type: 'string' },
} as const;

/** What the model options say, checked. */
export interface ModelArgs {
  model: string;
  mmproj: string;
  gpuLayers: number | 'auto' | 'max';
  threads: number | undefined;
  maxTokens: number | undefined;
  grammar: boolean;
  /** The model family, when named (detected from the projector otherwise). */
  family: FamilyName | undefined;
}

/** A parsed command line. */
export type Command =
  | { command: 'help' }
  | { command: 'version' }
  | { command: 'ask'; image: string; question: string; model: ModelArgs; json: boolean; stream: boolean; annotate?: string; saveRoi?: string }
  | { command: 'eval'; data: string; model: ModelArgs; baseline: boolean; limit?: number; parallel?: number; out?: string; resume: boolean; reference?: true }
  | { command: 'demo'; out: string }
  | { command: 'scenes'; count: number; seed: number; out: string; backgrounds?: string }
  | { command: 'rpc-server'; host: string; port: number; threads: number | undefined };

/** Where `rpc-server` listens unless told: this machine only. */
export const RPC_SERVER_DEFAULTS = { host: '127.0.0.1', port: 50052 } as const;

/**
 * Parses the arguments after `chain-of-spot`. Pure: checks only what the arguments say, not the files.
 * @throws ChainOfSpotError `ERR_USAGE` for a wrong command line.
 */
export function parseCommandLine(argv: readonly string[]): Command {
  const [command, ...rest] = argv;
  if (command === undefined) throw usageError('no command given: use ask, demo, eval, scenes or rpc-server');
  if (command === '-h' || command === '--help' || command === 'help') return { command: 'help' };
  if (command === '-v' || command === '--version') return { command: 'version' };
  const parse = (options: ParseArgsConfig['options'], positionals: string[]): { values: Record<string, string | boolean | undefined>; positionals: string[] } => {
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options, allowPositionals: true, strict: true });
    } catch (error) {
      throw usageError(`${command}: ${(error as Error).message}`);
    }
    const values = parsed.values as Record<string, string | boolean | undefined>;
    if (!values.help && parsed.positionals.length !== positionals.length) {
      const expected = positionals.length === 0 ? 'no arguments' : positionals.join(' ');
      throw usageError(`${command} takes ${expected}, got ${parsed.positionals.length === 0 ? 'none' : parsed.positionals.map((p) => JSON.stringify(p)).join(' ')}`);
    }
    return { values, positionals: parsed.positionals };
  };
  switch (command) {
    case 'ask': {
      const { values, positionals } = parse(ASK_OPTIONS, ['IMAGE', 'QUESTION']);
      if (values.help) return { command: 'help' };
      if (values.json && values.stream) throw usageError('ask: --json and --stream do not go together: the JSON object is printed once, at the end');
      const question = positionals[1]!;
      if (question.trim() === '') throw usageError('ask: the question is empty');
      const parsed: Command = { command: 'ask', image: positionals[0]!, question, model: modelArgs(values, command), json: values.json === true, stream: values.stream === true };
      const annotate = pngPath(values.annotate, '--annotate');
      const saveRoi = pngPath(values['save-roi'], '--save-roi');
      if (annotate !== undefined) parsed.annotate = annotate;
      if (saveRoi !== undefined) parsed.saveRoi = saveRoi;
      return parsed;
    }
    case 'eval': {
      const { values, positionals } = parse(EVAL_OPTIONS, ['DATA.jsonl']);
      if (values.help) return { command: 'help' };
      if (values.resume && values.out === undefined) throw usageError('eval: --resume needs --out, the predictions file to continue');
      if (values.baseline && values['no-grammar']) throw usageError('eval: --no-grammar applies to the region turn, which --baseline does not have');
      const parsed: Command = { command: 'eval', data: positionals[0]!, model: modelArgs(values, command), baseline: values.baseline === true, resume: values.resume === true };
      if (values.limit !== undefined) parsed.limit = integerArg(values.limit, '--limit', 1);
      if (values.parallel !== undefined) parsed.parallel = integerArg(values.parallel, '--parallel', 1, 'a whole number from 1 to 128', 128);
      if (typeof values.out === 'string') parsed.out = values.out;
      if (values.reference === true) parsed.reference = true;
      return parsed;
    }
    case 'demo': {
      const { values } = parse(DEMO_OPTIONS, []);
      if (values.help) return { command: 'help' };
      return { command: 'demo', out: typeof values.out === 'string' ? values.out : '.' };
    }
    case 'scenes': {
      const { values } = parse(SCENES_OPTIONS, []);
      if (values.help) return { command: 'help' };
      if (values.count === undefined || typeof values.out !== 'string') throw usageError('scenes needs --count N and --out DIR');
      const seed = values.seed === undefined ? 0 : integerArg(values.seed, '--seed', 0, 'a whole number from 0 to 4294967295', 0xffffffff);
      const parsed: Command = { command: 'scenes', count: integerArg(values.count, '--count', 1), seed, out: values.out };
      if (typeof values.backgrounds === 'string') parsed.backgrounds = values.backgrounds;
      return parsed;
    }
    case 'rpc-server': {
      const { values } = parse(RPC_SERVER_OPTIONS, []);
      if (values.help) return { command: 'help' };
      const host = typeof values.host === 'string' ? values.host : RPC_SERVER_DEFAULTS.host;
      // ggml's server reads the address with inet_addr: IPv4 only.
      if (!isIPv4(host)) throw usageError(`rpc-server: --host must be an IPv4 address of this machine (0.0.0.0 for all), got ${JSON.stringify(host)}`);
      return {
        command: 'rpc-server',
        host,
        port: values.port === undefined ? RPC_SERVER_DEFAULTS.port : integerArg(values.port, '--port', 1, 'a port from 1 to 65535', 65535),
        threads: values.threads === undefined ? undefined : integerArg(values.threads, '--threads', 1),
      };
    }
    default:
      throw usageError(`unknown command '${command}': use ask, demo, eval, scenes or rpc-server`);
  }
}

function modelArgs(values: Record<string, string | boolean | undefined>, command: string): ModelArgs {
  const { model, mmproj } = values;
  let files: { model: string; mmproj: string };
  if (values['demo-model'] === true) {
    if (model !== undefined || mmproj !== undefined) throw usageError(`${command}: --demo-model replaces --model and --mmproj; give one or the other`);
    files = demoModelFiles();
  } else if (typeof model !== 'string' || typeof mmproj !== 'string') {
    throw usageError(`${command} needs --model FILE and --mmproj FILE (a GGUF text model and its projector), or --demo-model`);
  } else {
    files = { model, mmproj };
  }
  const gpuLayers = values['gpu-layers'];
  return {
    ...files,
    gpuLayers: gpuLayers === undefined || gpuLayers === 'auto' || gpuLayers === 'max' ? (gpuLayers ?? 'auto') : integerArg(gpuLayers, '--gpu-layers', 0, 'a number, auto or max'),
    threads: values.threads === undefined ? undefined : integerArg(values.threads, '--threads', 1),
    maxTokens: values['max-tokens'] === undefined ? undefined : integerArg(values['max-tokens'], '--max-tokens', 1),
    grammar: values['no-grammar'] !== true,
    family: familyArg(values.family),
  };
}

function familyArg(value: string | boolean | undefined): FamilyName | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !(FAMILY_NAMES as readonly string[]).includes(value)) {
    throw usageError(`--family must be one of ${FAMILY_NAMES.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as FamilyName;
}

function integerArg(value: string | boolean, flag: string, min: number, expected = `a whole number from ${min}`, max = Number.MAX_SAFE_INTEGER): number {
  const number = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < min || number > max) throw usageError(`${flag} must be ${expected}, got ${JSON.stringify(value)}`);
  return number;
}

function pngPath(value: string | boolean | undefined, flag: string): string | undefined {
  if (typeof value !== 'string') return undefined;
  if (path.extname(value).toLowerCase() !== '.png') throw usageError(`${flag} writes a PNG: give a file name ending in .png, got ${JSON.stringify(value)}`);
  return value;
}

