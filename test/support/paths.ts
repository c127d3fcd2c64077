/** Paths the tests share. */
import path from 'node:path';

/**
 * The sample photos in `shared/images`, beside the repository root. This file runs from
 * `dist/test/support/`, four levels below the folder that holds both the repository and `shared/`.
 */
export const SHARED_IMAGES = path.resolve(__dirname, '../../../../shared/images');
