/**
 * @module counts — counts per key kept in a Map, where a key at zero is no entry (so the map's size
 * is the number of keys counting something, and nothing is left behind for keys gone back to zero).
 */

/** Adds `by` (may be negative) to `key`'s count; at zero or below the key is dropped. */
export function bump(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}
