/**
 * The images of one instance, as the model sees them: each input loaded once (upright, or as
 * stored in reference mode), prepared as the model's family gives images to the projector
 * (LLaVA-1.5: padded and resized to its side), and named by a hash that tells whether a cache
 * already holds its prefix. An image opened with {@link ChainOfSpot.open}
 * keeps all of that for further questions, in either mode.
 */
import { createHash } from 'node:crypto';

import { callerStack, ChainOfSpotError, rethrowWithCallerStack } from '../common/errors';
import { booleanOption, optionsObject } from '../common/validate';
import type { RgbImage } from '../common/rgb-image';
import { loadImageWithOrientation, reorient, type ImageInput } from '../image/image';
import type { BoundFamily } from './family';
import type { AskOptions, OpenedImage } from './types';

/** An image as one mode sees it: upright or as stored. */
export interface ImageView {
  /** The image as loaded (its EXIF orientation applied, except in reference mode). */
  readonly original: RgbImage;
  /** The original as the projector is given it (see {@link BoundFamily.prepareImage}). */
  readonly model: RgbImage;
  /** A hash of `model` (its size and pixels): what names its prefix in a cache. */
  readonly key: string;
}

interface Prepared {
  /** The input's EXIF orientation (1 when none). */
  readonly orientation: number;
  /** The image as loaded in the mode it was opened in, and in the other when asked for: by `reference`. */
  readonly originals: Map<boolean, RgbImage>;
  /** Its views, by mode and preparation (an opened image serves any instance). */
  readonly views: Map<string, ImageView>;
}

/** Every opened image, whichever instance opened it. */
const opened = new WeakMap<OpenedImage, Prepared>();

export class PreparedImages {
  /**
   * @param family how the model's family prepares an image for the projector
   * @param maxPixels the most pixels an input, and what it is prepared into, may have
   */
  constructor(
    readonly family: Pick<BoundFamily, 'preparation' | 'prepareImage'>,
    readonly maxPixels: number,
  ) {}

  /**
   * Loads and prepares an image once, for several questions (an image opened before is taken as
   * it is), in the mode `options.reference` names, else `referenceDefault`.
   * @throws ChainOfSpotError `ERR_IMAGE` when it cannot be decoded or prepared.
   */
  async open(image: ImageInput | OpenedImage, options: Pick<AskOptions, 'reference'> | undefined, referenceDefault: boolean): Promise<OpenedImage> {
    const reference = booleanOption(optionsObject(options).reference, 'reference', referenceDefault);
    const stack = callerStack();
    return imageStep(async () => {
      if (opened.has(image as OpenedImage)) return image as OpenedImage;
      const prepared = await this.#load(image as ImageInput, reference);
      const original = prepared.originals.get(reference)!;
      const handle: OpenedImage = Object.freeze({ width: original.width, height: original.height });
      opened.set(handle, prepared);
      await this.#view(prepared, reference);
      return handle;
    }).catch((error: unknown) => rethrowWithCallerStack(error, stack));
  }

  /**
   * The image in a question's mode, and the milliseconds it took: an opened one (turned when it
   * was opened in the other mode), or an input, loaded now.
   * @throws ChainOfSpotError `ERR_IMAGE` when it cannot be decoded or prepared.
   */
  view(image: ImageInput | OpenedImage, reference: boolean): Promise<{ view: ImageView; ms: number }> {
    const start = performance.now();
    return imageStep(async () => {
      const prepared = opened.get(image as OpenedImage) ?? (await this.#load(image as ImageInput, reference));
      return { view: await this.#view(prepared, reference), ms: performance.now() - start };
    });
  }

  async #load(image: ImageInput, reference: boolean): Promise<Prepared> {
    const { image: original, orientation } = await loadImageWithOrientation(image, { maxPixels: this.maxPixels, applyOrientation: !reference });
    return { orientation, originals: new Map([[reference, original]]), views: new Map() };
  }

  async #view(prepared: Prepared, reference: boolean): Promise<ImageView> {
    const name = `${reference} ${this.family.preparation}`;
    let view = prepared.views.get(name);
    if (view) return view;
    let original = prepared.originals.get(reference);
    if (!original) {
      const [loadedAs, loaded] = prepared.originals.entries().next().value as [boolean, RgbImage];
      original = prepared.orientation === 1 ? loaded : reorient(loaded, prepared.orientation, !loadedAs);
      prepared.originals.set(reference, original);
    }
    const model = await this.family.prepareImage(original, this.maxPixels);
    // The size as well as the pixels: families that give the projector the image as it is see
    // two shapes of the same bytes (196 x 112 and 112 x 196) as two images.
    const key = createHash('sha256').update(`${model.width}x${model.height} `).update(model.data).digest('hex');
    view = { original, model, key };
    prepared.views.set(name, view);
    return view;
  }
}

/** Runs an image step; what fails in it, other than an argument mistake, is ERR_IMAGE. */
async function imageStep<T>(step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (error instanceof TypeError || error instanceof RangeError || error instanceof ChainOfSpotError) throw error;
    throw new ChainOfSpotError('ERR_IMAGE', `the image could not be prepared: ${(error as Error).message}`, { cause: error });
  }
}
