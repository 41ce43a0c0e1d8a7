/**
 * @module tls/watch — keeps the served certificate fresh and watched. The key and certificate
 * files are polled; when they change (and stay unchanged for the debounce time) the new pair is
 * checked (tls/check.ts) and only then installed on every listener, without a restart; a bad pair
 * is refused with a security event and the previous one stays. The certificate's expiry is
 * checked at start and every hour: a gauge, and a warning event from `warnDays` before it.
 */
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import type { X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import type { NodeMetrics } from '../metrics.ts';
import type { SecurityEvent, SecurityEvents } from '../siem/events.ts';
import { checkTlsPair, subjectOf } from './check.ts';

/** How often the key and certificate files are checked for a change, ms. */
export const TLS_POLL_MS = 5000;
/** How long the files must stay unchanged before they are read, ms (both files of a rotation land). */
export const TLS_DEBOUNCE_MS = 1000;
/** How often the expiry is checked, ms. */
export const TLS_EXPIRY_CHECK_MS = 3_600_000;
/** How many days before expiry the warning event starts. */
export const TLS_EXPIRY_WARN_DAYS = 14;

/** A key and certificate chain, PEM. */
export interface KeyAndCert {
  key: string;
  cert: string;
}

export interface TlsWatchOptions {
  /** The files to reload from; without them only the expiry is watched (e.g. generated dev TLS). */
  files?: { keyFile: string; certFile: string } | undefined;
  /** The pair served now. */
  material: KeyAndCert;
  /** Installs a checked new pair on every listener (`server.setSecureContext(…)`). */
  apply(material: KeyAndCert): void;
  events: SecurityEvents;
  metrics: NodeMetrics;
  log?: Logger | undefined;
  /** Poll interval, ms. Default {@link TLS_POLL_MS}. */
  pollMs?: number | undefined;
  /** Debounce, ms. Default {@link TLS_DEBOUNCE_MS}. */
  debounceMs?: number | undefined;
  /** Expiry check interval, ms. Default {@link TLS_EXPIRY_CHECK_MS}. */
  expiryCheckMs?: number | undefined;
  /** Warn this many days ahead. Default {@link TLS_EXPIRY_WARN_DAYS}. */
  warnDays?: number | undefined;
  /** The clock (tests). Default `Date.now`. */
  now?: (() => number) | undefined;
}

export interface TlsWatch {
  /** The certificate served now. */
  readonly certificate: X509Certificate;
  /** Reads the files now; installs them if they changed and pass the checks. Returns whether a new pair was installed. */
  reload(): boolean;
  /** Checks the expiry now: updates the gauge, emits the warning event when due (and returns it). */
  checkExpiry(): SecurityEvent | undefined;
  /** Stops polling and the hourly check. */
  close(): void;
}

const DAY_MS = 86_400_000;

/**
 * Starts watching. The served pair is checked first: an operator's files that do not match, or
 * that are expired, stop the start (the caller throws).
 */
export function watchTls(o: TlsWatchOptions): TlsWatch {
  const now = o.now ?? Date.now;
  const warnDays = o.warnDays ?? TLS_EXPIRY_WARN_DAYS;
  let current = o.material;
  let certificate = checkTlsPair(current.key, current.cert, now());
  let timer: NodeJS.Timeout | undefined;

  const refuse = (reason: string): false => {
    o.metrics.tlsReloads.inc({ outcome: 'failure' });
    o.events.emit({
      class: 'network_activity', activity: 'tls.reload', outcome: 'failure', severity: 'high',
      message: `new TLS key/certificate refused, the previous one stays: ${reason}`,
      data: { keyFile: o.files?.keyFile, certFile: o.files?.certFile },
    });
    return false;
  };

  const watch: TlsWatch = {
    get certificate() {
      return certificate;
    },
    reload() {
      if (!o.files) return false;
      let next: KeyAndCert;
      try {
        next = { key: readFileSync(o.files.keyFile, 'utf8'), cert: readFileSync(o.files.certFile, 'utf8') };
      } catch (e) {
        return refuse(`cannot read ${(e as NodeJS.ErrnoException).path ?? 'the files'} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      if (next.key === current.key && next.cert === current.cert) return false;
      let leaf: X509Certificate;
      try {
        leaf = checkTlsPair(next.key, next.cert, now());
      } catch (e) {
        return refuse((e as Error).message);
      }
      try {
        o.apply(next);
      } catch (e) {
        // OpenSSL may still refuse what the checks let through (e.g. a key type it cannot use).
        return refuse(`the TLS library refused it (${(e as Error).message})`);
      }
      current = next;
      certificate = leaf;
      o.metrics.tlsReloads.inc({ outcome: 'success' });
      o.events.emit({
        class: 'network_activity', activity: 'tls.reload', outcome: 'success',
        message: `TLS certificate reloaded: ${subjectOf(leaf)}, valid until ${leaf.validToDate.toISOString()}`,
        data: { serial: leaf.serialNumber, fingerprint256: leaf.fingerprint256, notAfter: leaf.validToDate.toISOString() },
      });
      watch.checkExpiry();
      return true;
    },
    checkExpiry() {
      const notAfter = certificate.validToDate.getTime();
      o.metrics.tlsCertificateExpiry.set(Math.floor(notAfter / 1000));
      const left = notAfter - now();
      if (left >= warnDays * DAY_MS) return undefined;
      const days = Math.floor(left / DAY_MS);
      return o.events.emit({
        class: 'network_activity', activity: 'tls.certificate.expiring', outcome: 'failure',
        severity: left <= 0 ? 'critical' : left < DAY_MS ? 'high' : 'medium',
        message: left <= 0
          ? `the TLS certificate (${subjectOf(certificate)}) expired on ${certificate.validToDate.toISOString()}; replace it`
          : `the TLS certificate (${subjectOf(certificate)}) expires in ${days} day(s), on ${certificate.validToDate.toISOString()}; replace it`,
        data: { notAfter: certificate.validToDate.toISOString(), daysLeft: days, serial: certificate.serialNumber, certFile: o.files?.certFile },
      });
    },
    close() {
      clearInterval(expiryTimer);
      clearTimeout(timer);
      if (o.files) {
        unwatchFile(o.files.keyFile, onStat);
        unwatchFile(o.files.certFile, onStat);
      }
    },
  };

  /** A file changed (content, replacement or removal): read both once they have been quiet for the debounce time. */
  function onStat(curr: Stats, prev: Stats): void {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      try {
        watch.reload();
      } catch (e) {
        o.log?.error({ err: e }, 'reloading the TLS files failed');
      }
    }, o.debounceMs ?? TLS_DEBOUNCE_MS);
    timer.unref();
  }

  if (o.files) {
    const options = { interval: o.pollMs ?? TLS_POLL_MS, persistent: false };
    watchFile(o.files.keyFile, options, onStat);
    watchFile(o.files.certFile, options, onStat);
  }
  watch.checkExpiry();
  const expiryTimer = setInterval(() => watch.checkExpiry(), o.expiryCheckMs ?? TLS_EXPIRY_CHECK_MS);
  expiryTimer.unref();
  return watch;
}
