import { statfs } from 'node:fs/promises';
import { cpus, freemem, loadavg, totalmem } from 'node:os';

type CpuTimes = { busy: number; total: number };

function cpuTimes(): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const all = times.user + times.nice + times.sys + times.irq + times.idle;
    total += all;
    busy += all - times.idle;
  }
  return { busy, total };
}

/** Machine figures for `stats`. CPU use is measured over the time since the previous call. */
export class SystemSampler {
  private last = cpuTimes();

  cpu() {
    const now = cpuTimes();
    const total = now.total - this.last.total;
    const use = total > 0 ? ((now.busy - this.last.busy) / total) * 100 : 0;
    if (total > 0) this.last = now;
    const [one = 0, five = 0, fifteen = 0] = loadavg();
    return { cores: cpus().length, load_avg: [one, five, fifteen] as [number, number, number], use_percent: Math.round(use * 10) / 10 };
  }

  memory() {
    return { total_bytes: totalmem(), free_bytes: freemem(), daemon_rss_bytes: process.memoryUsage.rss() };
  }

  async disk(path: string) {
    const fs = await statfs(path);
    return { path, total_bytes: fs.blocks * fs.bsize, free_bytes: fs.bavail * fs.bsize };
  }
}
