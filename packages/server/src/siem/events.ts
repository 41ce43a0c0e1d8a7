/**
 * @module siem/events — the typed security-event emitter. Every authentication and authorization
 * decision and every rejection calls `securityEvent()`. Events are shaped after OCSF 1.x classes
 * and written through the logger (`"siem": true`); in-process subscribers (tests, later sinks and
 * detections) receive the same object.
 */
import type { Logger } from 'pino';

/** OCSF classes Palisade uses, with their `class_uid` and `category_uid`. */
const CLASSES = {
  authentication: { class_uid: 3002, class_name: 'Authentication', category_uid: 3 },
  authorization: { class_uid: 3003, class_name: 'Authorize Session', category_uid: 3 },
  api_activity: { class_uid: 6003, class_name: 'API Activity', category_uid: 6 },
  network_activity: { class_uid: 4001, class_name: 'Network Activity', category_uid: 4 },
  account_change: { class_uid: 3001, class_name: 'Account Change', category_uid: 3 },
} as const;

export type SecurityEventClass = keyof typeof CLASSES;
const SEVERITY = { info: 1, low: 2, medium: 3, high: 4, critical: 5 } as const;
export type Severity = keyof typeof SEVERITY;

/** What the caller says about an event. */
export interface SecurityEventInput {
  class: SecurityEventClass;
  /** A short verb naming what happened, e.g. `ws.connect`, `token.verify`, `task.submit`. */
  activity: string;
  outcome: 'success' | 'failure';
  severity?: Severity;
  /** The stable Palisade error code on a failure. */
  code?: string;
  message: string;
  actor?: { userId?: string | undefined; clientId?: string | undefined; agentId?: string | undefined };
  src?: { ip?: string | undefined; origin?: string | undefined };
  /** Extra fields; never secrets. */
  data?: Record<string, unknown>;
}

/** The OCSF-shaped event as emitted. */
export interface SecurityEvent {
  time: number;
  class_uid: number;
  class_name: string;
  category_uid: number;
  activity_name: string;
  status: 'Success' | 'Failure';
  status_code?: string | undefined;
  severity_id: number;
  severity: Severity;
  message: string;
  actor: { user?: { uid: string } | undefined; app_uid?: string | undefined; agent_uid?: string | undefined };
  src_endpoint: { ip?: string | undefined; origin?: string | undefined };
  metadata: { product: { name: 'Palisade'; vendor_name: 'Palisade' }; version: '1.3.0' };
  unmapped?: Record<string, unknown> | undefined;
}

export type SecurityEventListener = (event: SecurityEvent) => void;

/** The emitter the server threads through every module. */
export interface SecurityEvents {
  emit(input: SecurityEventInput): SecurityEvent;
  subscribe(listener: SecurityEventListener): () => void;
}

/** Creates the emitter; failures default to severity `medium`, successes to `info`. */
export function createSecurityEvents(log: Logger): SecurityEvents {
  const listeners = new Set<SecurityEventListener>();
  return {
    emit(input) {
      const cls = CLASSES[input.class];
      const severity = input.severity ?? (input.outcome === 'failure' ? 'medium' : 'info');
      const event: SecurityEvent = {
        time: Date.now(),
        ...cls,
        activity_name: input.activity,
        status: input.outcome === 'success' ? 'Success' : 'Failure',
        status_code: input.code,
        severity_id: SEVERITY[severity],
        severity,
        message: input.message,
        actor: {
          user: input.actor?.userId ? { uid: input.actor.userId } : undefined,
          app_uid: input.actor?.clientId,
          agent_uid: input.actor?.agentId,
        },
        src_endpoint: { ip: input.src?.ip, origin: input.src?.origin },
        metadata: { product: { name: 'Palisade', vendor_name: 'Palisade' }, version: '1.3.0' },
        unmapped: input.data,
      };
      const level = input.outcome === 'success' ? 'info' : severity === 'high' || severity === 'critical' ? 'error' : 'warn';
      log[level]({ siem: true, event }, `security: ${input.activity} ${input.outcome}`);
      for (const l of listeners) l(event);
      return event;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
