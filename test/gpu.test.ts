import { describe, expect, it } from 'vitest';
import { GpuSampler, parseGpus } from '../src/daemon/gpu.js';

/** Reading nvidia-smi's CSV, and the sampler's promise never to hold `stats` up. */

describe('parseGpus', () => {
  it('reads index, name, utilization and memory in MiB, a name with commas, and [N/A] as null', () => {
    expect(parseGpus('0, NVIDIA A100-SXM4-40GB, 35, 1024, 40960\n1, Quadro, RTX 8000, [N/A], [N/A], 49152\n\n')).toEqual([
      { index: 0, name: 'NVIDIA A100-SXM4-40GB', utilization_percent: 35, memory_used_bytes: 1024 * 2 ** 20, memory_total_bytes: 40960 * 2 ** 20 },
      { index: 1, name: 'Quadro, RTX 8000', utilization_percent: null, memory_used_bytes: null, memory_total_bytes: 49152 * 2 ** 20 },
    ]);
  });

  it('understands units and a header line, as --format=csv without nounits gives them', () => {
    const text = 'index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB]\n0, Tesla T4, 45 %, 1024 MiB, 15360 MiB\n';
    expect(parseGpus(text)).toEqual([{ index: 0, name: 'Tesla T4', utilization_percent: 45, memory_used_bytes: 1024 * 2 ** 20, memory_total_bytes: 15360 * 2 ** 20 }]);
  });

  it('skips what is not a GPU line (an error message, a short line)', () => {
    expect(parseGpus('NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.\n0, x\n')).toEqual([]);
  });
});

describe('GpuSampler', () => {
  it('answers [] at once for a program that does not exist, and never waits twice', async () => {
    const sampler = new GpuSampler({ command: '/nonexistent/nvidia-smi', refreshMs: 0, timeoutMs: 5000, firstWaitMs: 500 });
    sampler.start();
    expect(await sampler.gpus()).toEqual([]);
    const asked = Date.now();
    expect(await sampler.gpus()).toEqual([]);
    expect(Date.now() - asked).toBeLessThan(400);
    sampler.close();
  });
});
