/**
 * @module edge/client-ip — who the client is, network-wise: the peer address, or, when the peer is a
 * trusted proxy, the address that proxy (and any trusted proxy before it) saw in `X-Forwarded-For`.
 *
 * With no trusted proxies (the default) `X-Forwarded-For` is ignored: anyone can send it. With
 * `--trust-proxy 10.0.0.0/8` the list is read from the right, skipping trusted hops, so a client
 * cannot choose its own address by prepending entries. Fastify's `req.ip`, the OAuth endpoints, the
 * rate limits and the WebSocket gateway all take the address from here.
 */
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** Decides whether an address is a trusted proxy, and finds a request's client address. */
export interface ClientIpResolver {
  /** Whether `address` (a hop) is a trusted proxy. */
  trusted(address: string): boolean;
  /** The client address of `req`. */
  of(req: IncomingMessage): string;
}

/** Parses `10.0.0.0/8`, `192.168.1.10`, `::1`, `fd00::/8`; throws a clear error on anything else. */
function addTo(list: BlockList, entry: string): void {
  const [address, bits] = entry.split('/');
  const family = isIP(address ?? '');
  if (family === 0) throw new Error(`trusted proxy "${entry}" is not an IP address or CIDR range`);
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (bits === undefined) {
    list.addAddress(address!, type);
    return;
  }
  const prefix = Number(bits);
  if (!/^\d{1,3}$/.test(bits) || prefix > (family === 4 ? 32 : 128)) throw new Error(`trusted proxy "${entry}" has an invalid prefix length`);
  list.addSubnet(address!, prefix, type);
}

/** Strips the `::ffff:` of IPv4-mapped IPv6 addresses so one client has one key. */
function normalise(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** A resolver trusting `proxies` (addresses or CIDR ranges; empty = trust no proxy). */
export function createClientIpResolver(proxies: readonly string[]): ClientIpResolver {
  const list = new BlockList();
  for (const p of proxies) addTo(list, p.trim());
  const trusted = (address: string): boolean => {
    const a = normalise(address);
    const family = isIP(a);
    return proxies.length > 0 && family !== 0 && list.check(a, family === 4 ? 'ipv4' : 'ipv6');
  };
  return {
    trusted,
    of(req) {
      const peer = normalise(req.socket.remoteAddress ?? 'unknown');
      if (!trusted(peer)) return peer;
      const header = req.headers['x-forwarded-for'];
      const hops = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((h) => h.trim()).filter(Boolean);
      let client = peer;
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = normalise(hops[i]!);
        if (isIP(hop) === 0) break; // a malformed entry: stop at the last address we can vouch for
        client = hop;
        if (!trusted(hop)) break;
      }
      return client;
    },
  };
}
