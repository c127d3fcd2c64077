import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import ts from 'typescript';

import { REPO_ROOT as ROOT } from '../support/paths';

const LIB = path.join(ROOT, 'lib');

/** Every .ts file under lib/, with the lib/ files it imports (type-only imports and re-exports too). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const files = (readdirSync(LIB, { recursive: true }) as string[]).filter((file) => file.endsWith('.ts')).map((file) => path.join(LIB, file));
  for (const file of files) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, false);
    const targets = importedFiles
      .map(({ fileName }) => fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => {
        const base = path.resolve(path.dirname(file), name);
        return files.includes(`${base}.ts`) ? `${base}.ts` : path.join(base, 'index.ts');
      });
    graph.set(file, targets);
  }
  return graph;
}

/** The cycles of a graph, each as the nodes along it (first node repeated at the end). */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (state.get(next) === undefined) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of graph.keys()) if (state.get(node) === undefined) visit(node);
  return found;
}

const folderOf = (file: string): string => path.relative(LIB, file).split(path.sep)[0]!;
const show = (found: string[][]): string => found.map((cycle) => cycle.map((file) => path.relative(LIB, file)).join(' -> ')).join('\n');

describe('imports in lib/', () => {
  const graph = importGraph();

  it('are found (the graph this suite checks is not empty)', () => {
    const procedure = [...graph.keys()].filter((file) => folderOf(file) === 'procedure');
    assert.ok(procedure.length >= 10, `lib/procedure has ${procedure.length} files`);
    const chainOfSpot = graph.get(path.join(LIB, 'procedure', 'chain-of-spot.ts'))!;
    assert.ok(chainOfSpot.includes(path.join(LIB, 'procedure', 'procedure.ts')), 'chain-of-spot.ts imports procedure.ts');
  });

  it('run one way between the folders (no folder imports one that imports it back)', () => {
    const folders = new Map<string, string[]>();
    for (const [file, targets] of graph) {
      const from = folderOf(file);
      const to = targets.map(folderOf).filter((folder) => folder !== from && folder !== 'index.ts');
      folders.set(from, [...new Set([...(folders.get(from) ?? []), ...to])]);
    }
    assert.deepEqual(cycles(folders), []);
  });

  it('have no circle among the files of lib/procedure', () => {
    const procedure = new Map([...graph].filter(([file]) => folderOf(file) === 'procedure').map(([file, targets]) => [file, targets.filter((target) => folderOf(target) === 'procedure')]));
    const found = cycles(procedure);
    assert.equal(found.length, 0, `import circles:\n${show(found)}`);
  });
});
