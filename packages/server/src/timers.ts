/**
 * @module timers — delays for long-lived per-connection and per-task timers.
 */

/** Longest delay `setTimeout` honours (a longer one fires at once). */
const MAX_DELAY = 2 ** 31 - 1;

/**
 * `ms` rounded up to a whole second, at least 0 and at most `setTimeout`'s limit. Node keeps one
 * timer list per distinct delay; a delay computed to the millisecond (a token's expiry, a task's
 * deadline) would leave a list behind per connection or task until it fires. Rounding costs at most
 * a second of lateness.
 */
export function wholeSeconds(ms: number): number {
  return Math.min(Math.max(0, Math.ceil(ms / 1000) * 1000), MAX_DELAY);
}
