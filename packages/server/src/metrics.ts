/**
 * @module metrics — the node's Prometheus metrics: one `prom-client` registry per server node
 * (several nodes may share a process in tests), served as text by the internal listener's
 * `GET /metrics` (edge/internal.ts).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/** The metrics of one server node. */
export interface NodeMetrics {
  readonly registry: Registry;
  /**
   * `palisade_tls_certificate_expiry_seconds`: Unix time (seconds) at which the TLS certificate
   * this node serves expires; alert on `palisade_tls_certificate_expiry_seconds - time() < 14 * 86400`.
   */
  readonly tlsCertificateExpiry: Gauge;
  /** `palisade_tls_certificate_reloads_total{outcome}`: certificate reloads, `success` or `failure`. */
  readonly tlsReloads: Counter<'outcome'>;
  /** Adds the process metrics (CPU, memory, event loop, GC; prefixed `palisade_`). Once; a no-op after. */
  enableProcessMetrics(): void;
}

/** Creates the registry of one node with Palisade's own metrics in it. */
export function createMetrics(): NodeMetrics {
  const registry = new Registry();
  const tlsCertificateExpiry = new Gauge({
    name: 'palisade_tls_certificate_expiry_seconds',
    help: 'Unix time (seconds) at which the TLS certificate served by this node expires',
    registers: [registry],
  });
  const tlsReloads = new Counter({
    name: 'palisade_tls_certificate_reloads_total',
    help: 'TLS certificate reloads since start, by outcome (a failure keeps the previous certificate)',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  // Both outcomes show from the start, at 0.
  tlsReloads.inc({ outcome: 'success' }, 0);
  tlsReloads.inc({ outcome: 'failure' }, 0);
  let processMetrics = false;
  return {
    registry,
    tlsCertificateExpiry,
    tlsReloads,
    enableProcessMetrics() {
      if (processMetrics) return;
      processMetrics = true;
      collectDefaultMetrics({ register: registry, prefix: 'palisade_' });
    },
  };
}
