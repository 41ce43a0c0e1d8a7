/**
 * @module shared/messages — the one typed message map of the extension: every runtime message
 * (popup → worker, content → worker, worker → content) has a TypeBox schema here, and its reply
 * type. Nothing is accepted that does not match its schema.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Step, type ErrorCode } from '@palisade/protocol';

const Str = (max = 2048) => Type.String({ maxLength: max });
const msg = <T extends string, P extends Record<string, TSchema>>(type: T, props: P) =>
  Type.Object({ type: Type.Literal(type), ...props }, { additionalProperties: false });

// ── popup → worker ──────────────────────────────────────────────────────────────────────────
/** Popup messages: every action of the popup is one of these. */
export const PopupMessageSchemas = {
  'popup.status': msg('popup.status', {}),
  'popup.signIn': msg('popup.signIn', { server: Str(2048) }),
  /** Sign-in in a browser window (authorization code + PKCE through `chrome.identity.launchWebAuthFlow`). */
  'popup.signInBrowser': msg('popup.signInBrowser', { server: Str(2048) }),
  'popup.cancelSignIn': msg('popup.cancelSignIn', {}),
  'popup.openVerification': msg('popup.openVerification', {}),
  'popup.signOut': msg('popup.signOut', {}),
  'popup.reconnect': msg('popup.reconnect', {}),
  /** Sent after the popup obtained the host permission (a permission prompt needs the popup's user gesture). */
  'popup.addSite': msg('popup.addSite', { origin: Str(2048) }),
  'popup.removeSite': msg('popup.removeSite', { origin: Str(2048) }),
} as const;

// ── content → worker ────────────────────────────────────────────────────────────────────────
/** Content-script messages to the worker. */
export const ContentMessageSchemas = {
  /** The content script is injected and listening in this document. */
  'content.ready': msg('content.ready', { url: Str(8192) }),
} as const;

export type PopupMessageType = keyof typeof PopupMessageSchemas;
export type ContentMessageType = keyof typeof ContentMessageSchemas;
export type IncomingMessageType = PopupMessageType | ContentMessageType;
export type PopupMessage = Static<(typeof PopupMessageSchemas)[PopupMessageType]>;
export type ContentMessage = Static<(typeof ContentMessageSchemas)[ContentMessageType]>;
/** The message of one type. */
export type MessageOf<T extends IncomingMessageType> = T extends PopupMessageType
  ? Static<(typeof PopupMessageSchemas)[T]>
  : T extends ContentMessageType
    ? Static<(typeof ContentMessageSchemas)[T]>
    : never;

/** Every message the worker accepts, by type. */
export const IncomingMessageSchemas: Record<IncomingMessageType, TSchema> = { ...PopupMessageSchemas, ...ContentMessageSchemas };

// ── worker → content ────────────────────────────────────────────────────────────────────────
/** Is the content script present in this document? */
export const PingRequest = msg('palisade.ping', {});
/** Run one page step. `timeoutMs` is the effective timeout the worker computed. */
export const StepRequest = msg('palisade.step', {
  index: Type.Integer({ minimum: 0 }),
  step: Step,
  timeoutMs: Type.Integer({ minimum: 0, maximum: 300_000 }),
});
export const ContentRequest = Type.Union([PingRequest, StepRequest]);
export type ContentRequest = Static<typeof ContentRequest>;
export type StepRequest = Static<typeof StepRequest>;

// ── replies ─────────────────────────────────────────────────────────────────────────────────
/** A refusal or failure, with a protocol error code. */
export interface ReplyError {
  code: ErrorCode;
  message: string;
}
/** Every reply: `{ ok: true, data }` or `{ ok: false, error }`. */
export type Reply<T = unknown> = { ok: true; data: T } | { ok: false; error: ReplyError };

/** Status shown by the popup. */
export interface Status {
  server: string | undefined;
  /** The server URL is plain http (allowed for 127.0.0.1/localhost only). */
  insecure: boolean;
  auth: 'signed-out' | 'pending' | 'signed-in';
  account: string | undefined;
  device: { userCode: string; verificationUri: string; expiresAt: number } | undefined;
  /** A sign-in window is open (sign-in in a browser window). */
  browserSignIn: boolean;
  connection: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'error';
  lastError: string | undefined;
  agentId: string | undefined;
  sites: { origin: string; granted: boolean }[];
  /** Refused runtime messages since the worker started, by reason. */
  refused: Record<string, number>;
  tasks: { id: string; site: string; step: number }[];
}

/** What each popup message answers. */
export interface PopupReplies {
  'popup.status': Status;
  'popup.signIn': { userCode: string; verificationUri: string; expiresAt: number };
  /** Answered once signed in (or refused: the error says why). */
  'popup.signInBrowser': { account: string | undefined };
  'popup.cancelSignIn': null;
  'popup.openVerification': null;
  'popup.signOut': null;
  'popup.reconnect': null;
  'popup.addSite': { origin: string };
  'popup.removeSite': { origin: string };
}
