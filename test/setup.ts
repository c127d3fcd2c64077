/** Mocha root hooks: write the tiny test models before any test runs. */
import { tinyLlava, tinyLlavaFast } from './support/models';

export const mochaHooks = {
  async beforeAll(this: Mocha.Context): Promise<void> {
    this.timeout(120_000);
    await Promise.all([tinyLlava(), tinyLlavaFast()]);
  },
};
