/**
 * The families this package runs, and which one a pair of files is: detected from the projector's
 * type and checked against the text model's architecture, or named by the `family` option.
 */
import { ChainOfSpotError } from '../common/errors';
import type { Model } from '../llama/model';
import type { Projector } from '../llama/projector';
import { GEMMA3 } from './families/gemma3';
import { INTERNVL } from './families/internvl';
import { LLAVA_15 } from './families/llava';
import { QWEN25_VL, QWEN3_VL } from './families/qwen-vl';
import type { BoundFamily, Family, FamilyFacts } from './family';
import { FAMILY_NAMES, type FamilyName } from './types';

export const FAMILIES: Readonly<Record<FamilyName, Family>> = {
  'llava-1.5': LLAVA_15,
  'qwen2.5-vl': QWEN25_VL,
  'qwen3-vl': QWEN3_VL,
  internvl: INTERNVL,
  gemma3: GEMMA3,
};

/** The family option, checked. @throws RangeError when it names no family. */
export function familyOption(value: unknown): FamilyName | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !(FAMILY_NAMES as readonly string[]).includes(value)) {
    throw new RangeError(`family must be one of ${FAMILY_NAMES.join(', ')}; got ${JSON.stringify(value)}`);
  }
  return value as FamilyName;
}

/** The projector types the families are detected by, for messages. */
export function supportedProjectors(): string {
  return Object.values(FAMILIES)
    .map((family) => `${family.projectorTypes.map((type) => `'${type}'`).join(' or ')} (${family.title})`)
    .join(', ');
}

/**
 * The family of a pair: the one `named`, or the one whose projector type this is.
 * @throws ChainOfSpotError `ERR_PROJECTOR_LOAD` for a projector type no family has;
 *   `ERR_PROJECTOR_MISMATCH` when the text model is not one the family's projector goes with
 *   (unless the family was named: then the files are taken as that family's).
 */
export function familyOf(files: { projectorType: string; textArchitecture: string; mmproj: string }, named: FamilyName | undefined): Family {
  if (named !== undefined) return FAMILIES[named];
  const family = Object.values(FAMILIES).find((candidate) => candidate.projectorTypes.includes(files.projectorType));
  if (family === undefined) {
    throw new ChainOfSpotError('ERR_PROJECTOR_LOAD', `projector (mmproj) file ${files.mmproj}: its projector type '${files.projectorType}' is none chain-of-spot runs; supported: ${supportedProjectors()}`);
  }
  if (!family.textArchitectures.includes(files.textArchitecture)) {
    throw new ChainOfSpotError(
      'ERR_PROJECTOR_MISMATCH',
      `projector (mmproj) file ${files.mmproj} is a ${family.title} projector ('${files.projectorType}'), but the text model is a '${files.textArchitecture}', ` +
        `not ${family.title}'s (${family.textArchitectures.map((arch) => `'${arch}'`).join(', ')}): use the mmproj file released with this model, or name its family with the family option`,
    );
  }
  return family;
}

/** What a family needs to know of a loaded pair. */
export function familyFacts(model: Model, projector: Projector): FamilyFacts {
  const { chatTemplate, bos, eos } = model.info;
  // A vocabulary without a BOS or EOS token has the id -1 for it.
  const text = (id: number): string => (id < 0 ? '' : model.detokenize([id], { special: true }));
  const { imageSize, patchSize, tokensPerImage, imageTokens } = projector.info;
  return { chatTemplate, tokens: { bos: text(bos), eos: text(eos) }, imageSize, patchSize, tokensPerImage, imageTokens };
}

/** The family of a loaded pair (see {@link familyOf}), bound to it. */
export function bindFamily(model: Model, projector: Projector, named: FamilyName | undefined): BoundFamily {
  const files = { projectorType: projector.info.type, textArchitecture: model.info.architecture, mmproj: projector.info.path };
  return familyOf(files, named).bind(familyFacts(model, projector));
}
