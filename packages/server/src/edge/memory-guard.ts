/**
 * @module edge/memory-guard — sheds new work while the process is short of memory, instead of
 * growing until V8 aborts it ("JavaScript heap out of memory").
 *
 * The V8 heap in use is sampled every `sampleMs` (default 1 s, on an unref'd timer; never per
 * request). Above the high-water mark the node sheds: task submissions get `503`
 * `PAL_ERR_OVERLOADED` with `Retry-After` (edge/request-guard.ts), agent upgrades get `503` and an
 * agent that has not said hello yet is closed `1013` (gateway/agents.ts), and `/readyz` answers
 * `503` so a load balancer sends new work elsewhere. Open connections, running tasks, reads and
 * health checks go on. It stops shedding once the heap is back under 90 % of the mark (hysteresis:
 * no flapping around the mark). Each change emits one event (`memory.shed.start`, high;
 * `memory.shed.stop`) and sets `palisade_memory_shedding`.
 *
 * Why the heap and not RSS: the heap is where a node's work lives (requests, connections, tasks)
 * and what kills the process when it reaches its limit; it falls as soon as a collection frees the
 * work, whereas RSS often stays high after a peak (the allocator keeps freed pages), which would
 * keep a recovered node shedding. RSS is sampled too and reported with each event.
 *
 * Heap in use counts garbage V8 has not collected yet: a node in a burst (a connection storm leaves
 * much) can cross the mark with little of it live. Where a full collection can be asked for
 * (`collect`: the process runs with `--expose-gc`, as workers and `npm start` do), the guard asks for
 * one before it starts shedding and decides on the reading after it — at most once per
 * `collectEveryMs` (default 10 s), so a node really short of memory sheds without collecting in a loop.
 */
import { getHeapStatistics } from 'node:v8';
import { Counter, Gauge } from 'prom-client';
import { PalisadeError } from '@palisade/protocol';
import type { SecurityEvents } from '../siem/events.ts';
import type { NodeMetrics } from '../metrics.ts';

/** One reading: bytes of V8 heap in use, and the resident set size of the process. */
export interface MemorySample {
  heapUsed: number;
  rss: number;
}

/** Reads memory; the default reads `process.memoryUsage()`. Tests inject their own. */
export type MemorySampler = () => MemorySample;

/**
 * Reads this process's memory: `heapUsed` as `process.memoryUsage()` reports it (V8's own count, no
 * system call), `rss` through `process.memoryUsage.rss()` (NaN if the system cannot tell).
 */
export const processMemory: MemorySampler = () => {
  let rss = Number.NaN;
  try {
    rss = process.memoryUsage.rss();
  } catch {
    // /proc unreadable (no file descriptor left…): the heap alone decides.
  }
  return { heapUsed: getHeapStatistics().used_heap_size, rss };
};

/** Shedding stops below this share of the high-water mark. */
export const LOW_WATER_SHARE = 0.9;
/** `Retry-After` (seconds) on every answer refused for memory. */
export const OVERLOAD_RETRY_AFTER_S = 5;

/**
 * The V8 heap limit of this process, bytes (what `--max-old-space-size` sets; by default V8 sizes
 * it from the machine's memory: 4288 MiB on a 24 GB machine). The default mark is 85 % of it (config.ts).
 */
export function heapLimitBytes(): number {
  return getHeapStatistics().heap_size_limit;
}

/** Where new work is refused (the `entry` label of `palisade_memory_shed_total`). */
export type ShedEntry = 'task' | 'agent';

export interface MemoryGuard {
  /** Whether new work is refused now. */
  readonly shedding: boolean;
  /** Why it sheds (heap in use against the mark), while it does. */
  readonly reason: string | undefined;
  /** Shedding starts above this many bytes of heap in use… */
  readonly highWaterBytes: number;
  /** …and stops below this many. */
  readonly lowWaterBytes: number;
  /** The last reading. */
  readonly last: MemorySample;
  /** Full collections asked for before shedding (see `collect`). */
  readonly collections: number;
  /** Samples now (the timer calls this) and returns whether it sheds. */
  sample(): boolean;
  /** The refusal for new work at `entry` (counted in `palisade_memory_shed_total`). */
  refuse(entry: ShedEntry): PalisadeError;
  /** Stops sampling. */
  close(): void;
}

export interface MemoryGuardOptions {
  /** Heap bytes in use above which new work is shed. */
  highWaterBytes: number;
  /** Sampling interval, ms. Default 1000. */
  sampleMs?: number;
  /** Default `process.memoryUsage()`. */
  sampler?: MemorySampler;
  events: SecurityEvents;
  metrics: NodeMetrics;
  /** A full garbage collection, asked for before shedding starts (where `--expose-gc` allows). Default none. */
  collect?: (() => void) | undefined;
  /** Fewest ms between two such collections. Default 10 000. */
  collectEveryMs?: number;
  /** Clock, ms. Default `Date.now`. */
  now?: () => number;
}

const mib = (bytes: number) => `${Math.round(bytes / 1048576)} MiB`;

/** Takes a first sample at once (a node that starts above the mark takes no work), then one every `sampleMs`. */
export function createMemoryGuard(o: MemoryGuardOptions): MemoryGuard {
  const sampler = o.sampler ?? processMemory;
  const high = o.highWaterBytes;
  const low = Math.floor(high * LOW_WATER_SHARE);
  const shedGauge = new Gauge({ name: 'palisade_memory_shedding', help: '1 while this node refuses new work because its heap is above the high-water mark, else 0', registers: [o.metrics.registry] });
  const markGauge = new Gauge({ name: 'palisade_memory_high_water_bytes', help: 'V8 heap bytes in use above which this node refuses new work', registers: [o.metrics.registry] });
  const shedTotal = new Counter({ name: 'palisade_memory_shed_total', help: 'New work refused for memory, by where it entered: task (submission) or agent (connection)', labelNames: ['entry'] as const, registers: [o.metrics.registry] });
  markGauge.set(high);
  shedGauge.set(0);
  shedTotal.inc({ entry: 'task' }, 0);
  shedTotal.inc({ entry: 'agent' }, 0);

  let shedding = false;
  let reason: string | undefined;
  let last: MemorySample = { heapUsed: 0, rss: 0 };
  let shedSince = 0;
  let refused = 0;
  const now = o.now ?? Date.now;
  const collectEvery = o.collectEveryMs ?? 10_000;
  let collectedAt = Number.NEGATIVE_INFINITY;
  let collections = 0;

  const guard: MemoryGuard = {
    get shedding() {
      return shedding;
    },
    get reason() {
      return reason;
    },
    highWaterBytes: high,
    lowWaterBytes: low,
    get collections() {
      return collections;
    },
    get last() {
      return last;
    },
    sample() {
      try {
        last = sampler();
        // Over the mark, maybe with garbage: one collection first (not more often than collectEvery).
        if (!shedding && last.heapUsed > high && o.collect && now() - collectedAt >= collectEvery) {
          collectedAt = now();
          collections++;
          o.collect();
          last = sampler();
        }
      } catch {
        return shedding; // no reading: the state stays as it was
      }
      const data = { heapUsed: last.heapUsed, rss: last.rss, highWaterBytes: high, lowWaterBytes: low };
      if (!shedding && last.heapUsed > high) {
        shedding = true;
        shedSince = Date.now();
        refused = 0;
        reason = `heap in use ${mib(last.heapUsed)} is above the high-water mark ${mib(high)}`;
        shedGauge.set(1);
        o.events.emit({
          class: 'network_activity', activity: 'memory.shed.start', outcome: 'failure', severity: 'high', code: 'PAL_ERR_OVERLOADED',
          message: `${reason}: new tasks and agent connections are refused until it is under ${mib(low)}`, data,
        });
      } else if (shedding && last.heapUsed < low) {
        shedding = false;
        reason = undefined;
        shedGauge.set(0);
        o.events.emit({
          class: 'network_activity', activity: 'memory.shed.stop', outcome: 'success',
          message: `heap in use ${mib(last.heapUsed)} is under ${mib(low)}: new work is taken again`,
          data: { ...data, shedMs: Date.now() - shedSince, refused },
        });
      }
      return shedding;
    },
    refuse(entry) {
      refused++;
      shedTotal.inc({ entry });
      // The numbers stay in the event and the metrics: callers (unauthenticated, for an upgrade) learn only that.
      return new PalisadeError('PAL_ERR_OVERLOADED', `this node is short of memory and takes no new ${entry === 'task' ? 'tasks' : 'agent connections'} for now; try again in ${OVERLOAD_RETRY_AFTER_S} s or on another node`);
    },
    close() {
      clearInterval(timer);
    },
  };
  guard.sample();
  const timer = setInterval(() => guard.sample(), o.sampleMs ?? 1000);
  timer.unref();
  return guard;
}
