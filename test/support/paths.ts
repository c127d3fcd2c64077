/** Paths the tests share. */
import path from 'node:path';

/** The repository's root (this file runs from dist/test/support/). */
export const REPO_ROOT = path.resolve(__dirname, '../../..');

/** The test images, with their licences: test/fixtures/images/README.md. */
export const FIXTURE_IMAGES = path.join(REPO_ROOT, 'test', 'fixtures', 'images');
