import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';

/**
 * The physical cores, from Linux's CPU topology (one per distinct package and core id), or
 * undefined where it cannot be read.
 */
export function physicalCores(cpuRoot = '/sys/devices/system/cpu'): number | undefined {
  let names: string[];
  try {
    names = readdirSync(cpuRoot).filter((name) => /^cpu\d+$/.test(name));
  } catch {
    return undefined;
  }
  const cores = new Set<string>();
  for (const name of names) {
    try {
      const topology = path.join(cpuRoot, name, 'topology');
      const core = readFileSync(path.join(topology, 'core_id'), 'utf8').trim();
      const socket = readFileSync(path.join(topology, 'physical_package_id'), 'utf8').trim();
      cores.add(`${socket}:${core}`);
    } catch {
      // an offline CPU has no topology
    }
  }
  return cores.size > 0 ? cores.size : undefined;
}

/**
 * The default thread count for llama.cpp: the physical cores (a second hyper-thread on a core
 * slows generation down), and no more than the CPUs this process may use.
 */
export function defaultThreads(cpuRoot?: string): number {
  const usable = availableParallelism();
  return Math.max(1, Math.min(usable, physicalCores(cpuRoot) ?? usable));
}
