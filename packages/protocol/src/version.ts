/** @module version — the wire protocol version. Frames carry it in `hello`; a mismatch is refused. */

/** Current protocol version. Bumped only on an incompatible change to a frame or body. */
export const PROTOCOL_VERSION = 1;

/** The WebSocket subprotocol both ends must agree on. */
export const WS_SUBPROTOCOL = 'palisade.v1';

/** Prefix of the subprotocol entry that carries a bearer token (`palisade.bearer.<jwt>`). */
export const WS_BEARER_PREFIX = 'palisade.bearer.';
