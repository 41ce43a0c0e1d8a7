/**
 * @module worker/pipeline — every runtime message the worker receives passes the small named checks
 * below, in the order of the table `PIPELINES`. The first check that fails refuses the message with a
 * protocol error code; refusals are counted and logged. Reading `PIPELINES` tells you every check.
 */
import { validator, type Validator } from '@palisade/protocol';
import type { TSchema } from '@sinclair/typebox';
import {
  ContentMessageSchemas,
  PopupMessageSchemas,
  type ContentMessage,
  type PopupMessage,
  type ReplyError,
} from '../shared/messages.ts';
import type { RateLimiter } from './rate-limit.ts';

/** The fields of `chrome.runtime.MessageSender` the checks read. */
export interface Sender {
  id?: string | undefined;
  url?: string | undefined;
  origin?: string | undefined;
  tab?: { id?: number | undefined } | undefined;
  frameId?: number | undefined;
}

/** What the checks need to know about the extension and the tasks being run. */
export interface PipelineEnv {
  /** `chrome.runtime.id`. */
  extensionId: string;
  /** `chrome.runtime.getURL('popup.html')`. */
  popupUrl: string;
  /** The task site of a tab the runner currently drives, or `undefined`. */
  drivenSite(tabId: number): string | undefined;
  limiter: RateLimiter;
}

/** A message on its way through the pipeline. */
export interface Incoming {
  message: unknown;
  sender: Sender;
  channel: 'popup' | 'content';
  /** The schema of the message's declared type (found by `knownType`). */
  schema?: Validator<TSchema>;
}

/** One check: `undefined` lets the message go on; an error refuses it. */
export type Check = (msg: Incoming, env: PipelineEnv) => ReplyError | undefined;

const refuse = (code: ReplyError['code'], message: string): ReplyError => ({ code, message });

const validators = new Map<string, Validator<TSchema>>(
  Object.entries({ ...PopupMessageSchemas, ...ContentMessageSchemas }).map(([type, schema]) => [type, validator(schema as TSchema)]),
);

function typeOf(message: unknown): string | undefined {
  if (message === null || typeof message !== 'object') return undefined;
  const t = (message as { type?: unknown }).type;
  return typeof t === 'string' ? t : undefined;
}

function originOf(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

// ── the checks ──────────────────────────────────────────────────────────────────────────────

/** The message comes from this extension (never another extension or a web page). */
export const senderIsThisExtension: Check = (m, env) =>
  m.sender.id === env.extensionId ? undefined : refuse('PAL_ERR_SENDER_REFUSED', 'messages are accepted only from this extension');

/** The message declares a type this channel knows. */
export const knownType: Check = (m) => {
  const type = typeOf(m.message) ?? '';
  const known = m.channel === 'popup' ? Object.hasOwn(PopupMessageSchemas, type) : Object.hasOwn(ContentMessageSchemas, type);
  const schema = known ? validators.get(type) : undefined;
  if (!schema) return refuse('PAL_ERR_VALIDATION', `unknown message type "${type.slice(0, 64)}"`);
  m.schema = schema;
  return undefined;
};

/** Popup messages come from the extension's own popup page, not from a content script or another page. */
export const fromPopupPage: Check = (m, env) => {
  let page: string | undefined;
  try {
    if (m.sender.url !== undefined) {
      const u = new URL(m.sender.url);
      u.search = '';
      u.hash = '';
      page = u.href;
    }
  } catch {
    page = undefined;
  }
  return page === env.popupUrl ? undefined : refuse('PAL_ERR_SENDER_REFUSED', 'popup messages are accepted only from the popup page');
};

/** Content messages come from the top frame of a tab the runner is driving now. */
export const fromDrivenTab: Check = (m, env) => {
  const tabId = m.sender.tab?.id;
  if (tabId === undefined || env.drivenSite(tabId) === undefined) return refuse('PAL_ERR_SENDER_REFUSED', 'the sending tab is not running a task');
  if (m.sender.frameId !== 0) return refuse('PAL_ERR_SENDER_REFUSED', 'only the top frame may message the worker');
  return undefined;
};

/** …and from a document on that task's site. */
export const fromTaskSite: Check = (m, env) => {
  const site = env.drivenSite(m.sender.tab?.id ?? -1);
  const origin = m.sender.origin ?? originOf(m.sender.url);
  return origin !== undefined && origin === site ? undefined : refuse('PAL_ERR_SENDER_REFUSED', 'the sending document is not on the task\'s site');
};

/** Per origin, per tab and global token buckets (100 / 500 / 1000 per minute by default). */
export const withinRateLimits: Check = (m, env) => {
  const origin = m.sender.origin ?? originOf(m.sender.url);
  const refused = env.limiter.consume({ origin, tab: m.sender.tab?.id });
  return refused === undefined ? undefined : refuse('PAL_ERR_RATE_LIMITED', `too many messages (${refused} limit); slow down`);
};

/** The message matches its schema exactly (no unknown fields). */
export const matchesSchema: Check = (m) => {
  if (!m.schema) return refuse('PAL_ERR_VALIDATION', 'no schema for this message');
  if (m.schema.check(m.message)) return undefined;
  const first = m.schema.issues(m.message)[0];
  return refuse('PAL_ERR_VALIDATION', first ? `invalid message: ${first.path} ${first.message}` : 'invalid message');
};

/** Every check, in order, for each channel. */
export const PIPELINES: Record<Incoming['channel'], readonly Check[]> = {
  popup: [senderIsThisExtension, knownType, fromPopupPage, withinRateLimits, matchesSchema],
  content: [senderIsThisExtension, knownType, fromDrivenTab, fromTaskSite, withinRateLimits, matchesSchema],
};

/** The result of the pipeline: a checked message, or a refusal. */
export type Checked =
  | { ok: true; channel: 'popup'; message: PopupMessage }
  | { ok: true; channel: 'content'; message: ContentMessage }
  | { ok: false; error: ReplyError };

/** Receives every refusal (never the message body: it may carry data). */
export type RefusalLog = (event: { code: string; message: string; sender: Sender; type: string | undefined }) => void;

/** Runs the pipelines and counts refusals by error code. */
export class MessageGate {
  readonly refused: Record<string, number> = {};
  readonly #env: PipelineEnv;
  readonly #log: RefusalLog;

  constructor(env: PipelineEnv, log: RefusalLog = () => {}) {
    this.#env = env;
    this.#log = log;
  }

  /** Runs the pipeline of the message's channel (`popup.*` or `content.*`). */
  check(message: unknown, sender: Sender): Checked {
    const type = typeOf(message);
    const channel: Incoming['channel'] = type?.startsWith('content.') ? 'content' : 'popup';
    const incoming: Incoming = { message, sender, channel };
    for (const check of PIPELINES[channel]) {
      const error = check(incoming, this.#env);
      if (error) return this.#refuse(error, sender, type);
    }
    return channel === 'popup'
      ? { ok: true, channel, message: message as PopupMessage }
      : { ok: true, channel, message: message as ContentMessage };
  }

  /** Counts and logs a refusal decided outside the pipeline (e.g. external messages). */
  refuse(error: ReplyError, sender: Sender, type: string | undefined): { ok: false; error: ReplyError } {
    return this.#refuse(error, sender, type);
  }

  #refuse(error: ReplyError, sender: Sender, type: string | undefined): { ok: false; error: ReplyError } {
    this.refused[error.code] = (this.refused[error.code] ?? 0) + 1;
    this.#log({ code: error.code, message: error.message, sender, type });
    return { ok: false, error };
  }
}
