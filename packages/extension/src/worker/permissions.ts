/**
 * @module worker/permissions — the sites (origins) the user granted. A site is granted when it is
 * in the stored list AND Chrome holds the host permission for it; only those are reported to the
 * server and run tasks. Works against any object shaped like `chrome.permissions`, so it is
 * tested with a fake.
 */
import { PalisadeError, originToPattern, parseOrigin } from '@palisade/protocol';

/** The part of `chrome.permissions` this module uses. */
export interface PermissionsApi {
  request(p: { origins: string[] }): Promise<boolean>;
  contains(p: { origins: string[] }): Promise<boolean>;
  remove(p: { origins: string[] }): Promise<boolean>;
  onAdded: { addListener(cb: (p: { origins?: string[] }) => void): void };
  onRemoved: { addListener(cb: (p: { origins?: string[] }) => void): void };
}

/** Where the list of sites is kept (`chrome.storage.local` in the extension). */
export interface SiteStore {
  load(): Promise<string[]>;
  save(origins: string[]): Promise<void>;
}

/** At most this many sites. */
export const MAX_SITES = 256;

/**
 * Asks Chrome for host access to `origin`. Must run in a page with a user gesture (the popup):
 * Chrome refuses permission prompts from the service worker. Returns the normalised origin if granted.
 */
export async function requestSiteAccess(permissions: Pick<PermissionsApi, 'request'>, rawOrigin: string): Promise<string | undefined> {
  const origin = parseOrigin(rawOrigin);
  const granted = await permissions.request({ origins: [originToPattern(origin)] });
  return granted ? origin : undefined;
}

/**
 * The grants list.
 * @example
 * const sites = new PermissionManager(chrome.permissions, store);
 * sites.onChange((grants) => connection.send({ type: 'grants', grants }));
 */
export class PermissionManager {
  readonly #permissions: PermissionsApi;
  readonly #store: SiteStore;
  readonly #listeners = new Set<(grants: string[]) => void>();

  constructor(permissions: PermissionsApi, store: SiteStore) {
    this.#permissions = permissions;
    this.#store = store;
    // Permissions can change outside the extension (chrome://extensions, the site-access menu).
    permissions.onRemoved.addListener(() => void this.#changed());
    permissions.onAdded.addListener(() => void this.#changed());
  }

  /** Stored origins, each with whether Chrome currently holds its host permission. */
  async sites(): Promise<{ origin: string; granted: boolean }[]> {
    const origins = await this.#store.load();
    return Promise.all(origins.map(async (origin) => ({ origin, granted: await this.#holds(origin) })));
  }

  /** Origins that are stored and whose host permission is held: what the server is told. */
  async grants(): Promise<string[]> {
    return (await this.sites()).filter((s) => s.granted).map((s) => s.origin);
  }

  /** Whether tasks may run on `origin`. */
  async isGranted(origin: string): Promise<boolean> {
    const origins = await this.#store.load();
    return origins.includes(origin) && (await this.#holds(origin));
  }

  /**
   * Asks for host access (needs a user gesture, so only from the popup) and records the site if granted.
   * Returns whether it is now granted.
   */
  async request(rawOrigin: string): Promise<boolean> {
    const origin = await requestSiteAccess(this.#permissions, rawOrigin);
    if (origin === undefined) return false;
    await this.add(origin);
    return true;
  }

  /** Records a site whose host permission was already obtained; refuses one Chrome does not hold. */
  async add(rawOrigin: string): Promise<string> {
    const origin = parseOrigin(rawOrigin);
    if (!(await this.#holds(origin))) throw new PalisadeError('PAL_ERR_SITE_NOT_GRANTED', `Chrome does not hold the host permission for ${origin}`);
    const origins = await this.#store.load();
    if (!origins.includes(origin)) {
      if (origins.length >= MAX_SITES) throw new PalisadeError('PAL_ERR_VALIDATION', `at most ${MAX_SITES} sites`);
      await this.#store.save([...origins, origin]);
    }
    await this.#changed();
    return origin;
  }

  /**
   * Forgets a site and gives up its host permission (unless another stored site, on another port of
   * the same host, still needs the same pattern).
   */
  async remove(rawOrigin: string): Promise<string> {
    const origin = parseOrigin(rawOrigin);
    const rest = (await this.#store.load()).filter((o) => o !== origin);
    await this.#store.save(rest);
    const pattern = originToPattern(origin);
    if (!rest.some((o) => originToPattern(o) === pattern)) {
      try {
        await this.#permissions.remove({ origins: [pattern] });
      } catch {
        // Required (manifest) host permissions cannot be removed; the site is forgotten anyway.
      }
    }
    await this.#changed();
    return origin;
  }

  /** Calls `listener` with the new grants whenever they may have changed. */
  onChange(listener: (grants: string[]) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async #holds(origin: string): Promise<boolean> {
    try {
      return await this.#permissions.contains({ origins: [originToPattern(origin)] });
    } catch {
      return false;
    }
  }

  async #changed(): Promise<void> {
    const grants = await this.grants();
    for (const l of this.#listeners) l(grants);
  }
}
