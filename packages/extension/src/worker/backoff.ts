/**
 * @module worker/backoff — reconnection delays: exponential from `baseMs`, capped at `capMs`
 * (30 s), with "equal jitter" (half fixed, half random) so many agents do not reconnect in step.
 */

export interface BackoffOptions {
  /** First delay before jitter. Default 500 ms. */
  baseMs?: number;
  /** Largest delay. Default 30 000 ms. */
  capMs?: number;
  /** Random source in [0, 1). Default `Math.random`. */
  random?: () => number;
}

/** Delay before reconnection attempt `attempt` (0-based): in [exp/2, exp], exp = min(cap, base·2^attempt). */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? 500;
  const cap = options.capMs ?? 30_000;
  const random = options.random ?? Math.random;
  const exp = Math.min(cap, base * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.round(exp / 2 + random() * (exp / 2));
}
