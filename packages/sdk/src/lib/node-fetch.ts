/**
 * @module lib/node-fetch — Node only: a `fetch` over `node:https` that trusts one more CA (the
 * Palisade dev server's) besides the system roots. Loaded lazily by `lib/http.ts` when the `ca`
 * option is given, so browser builds never include it.
 */
import { Agent, request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import type { FetchLike } from './http.ts';

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/** A `fetch` that accepts the server certificates signed by `caPem` (PEM, one or more certificates). */
export function createCaFetch(caPem: string): FetchLike {
  if (!caPem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new TypeError('ca: expected a PEM certificate (-----BEGIN CERTIFICATE-----)');
  }
  const agent = new Agent({ ca: [...rootCertificates, caPem], keepAlive: true });
  return (input, init) => nodeFetch(agent, input, init);
}

function nodeFetch(agent: Agent, input: string, init: RequestInit): Promise<Response> {
  return new Promise<Response>((resolve, reject) => {
    const url = new URL(input);
    const signal = init.signal ?? undefined;
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const headers = new Headers(init.headers);
    const body = typeof init.body === 'string' ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : undefined;
    if (init.body instanceof URLSearchParams && !headers.has('content-type')) {
      headers.set('content-type', 'application/x-www-form-urlencoded;charset=UTF-8');
    }
    if (body !== undefined) headers.set('content-length', String(Buffer.byteLength(body)));
    const outgoing: Record<string, string> = {};
    headers.forEach((value, key) => (outgoing[key] = value));
    const options = { method: init.method ?? 'GET', headers: outgoing };
    const req = url.protocol === 'https:' ? request(url, { ...options, agent }) : httpRequest(url, options);
    const onAbort = (): void => {
      req.destroy(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => {
      signal?.removeEventListener('abort', onAbort);
      reject(new TypeError('fetch failed', { cause: err }));
    });
    req.on('response', (res) => {
      const responseHeaders = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        responseHeaders.append(res.rawHeaders[i] as string, res.rawHeaders[i + 1] as string);
      }
      const status = res.statusCode ?? 500;
      res.on('end', () => signal?.removeEventListener('abort', onAbort));
      res.on('close', () => signal?.removeEventListener('abort', onAbort));
      try {
        if (NULL_BODY_STATUS.has(status)) {
          res.resume();
          resolve(new Response(null, { status, statusText: res.statusMessage ?? '', headers: responseHeaders }));
          return;
        }
        const stream = Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
        resolve(new Response(stream, { status, statusText: res.statusMessage ?? '', headers: responseHeaders }));
      } catch (err) {
        res.destroy();
        reject(new TypeError('fetch failed', { cause: err }));
      }
    });
    req.end(body);
  });
}
