/**
 * @module auth/adapter — oidc-provider's storage adapter over the durable store. Sessions, grants,
 * device codes, refresh tokens and interactions survive a restart. The `Client` model resolves API
 * clients created by admins; their metadata carries the secret's hash, never the secret.
 */
import type { DurableStore, OidcRecord } from '../store/types.ts';

type Payload = Record<string, unknown> & { grantId?: string; userCode?: string; uid?: string };

/** Builds the adapter class oidc-provider instantiates once per model name. */
export function createOidcAdapter(store: DurableStore) {
  return class PalisadeOidcAdapter {
    readonly model: string;
    constructor(model: string) {
      this.model = model;
    }

    async upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
      const record: OidcRecord = {
        payload,
        expiresAt: expiresIn ? Math.floor(Date.now() / 1000) + expiresIn : undefined,
        grantId: payload.grantId,
        userCode: payload.userCode,
        uid: payload.uid,
      };
      await store.oidc.upsert(this.model, id, record);
    }

    async find(id: string): Promise<Payload | undefined> {
      if (this.model === 'Client') return findClient(store, id);
      return live(await store.oidc.find(this.model, id));
    }

    async findByUserCode(userCode: string): Promise<Payload | undefined> {
      return live(await store.oidc.findByUserCode(this.model, userCode));
    }

    async findByUid(uid: string): Promise<Payload | undefined> {
      return live(await store.oidc.findByUid(this.model, uid));
    }

    async consume(id: string): Promise<void> {
      await store.oidc.consume(this.model, id);
    }

    async destroy(id: string): Promise<void> {
      await store.oidc.destroy(this.model, id);
    }

    async revokeByGrantId(grantId: string): Promise<void> {
      await store.oidc.revokeByGrantId(grantId);
    }
  };
}

function live(r: OidcRecord | undefined): Payload | undefined {
  if (!r) return undefined;
  if (r.expiresAt !== undefined && r.expiresAt <= Math.floor(Date.now() / 1000)) return undefined;
  return r.payload as Payload;
}

async function findClient(store: DurableStore, id: string): Promise<Payload | undefined> {
  const c = await store.clients.byId(id);
  if (!c || c.revokedAt) return undefined;
  return {
    client_id: c.clientId,
    client_secret: c.secretHash,
    client_name: c.name,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: c.scopes.join(' '),
  };
}
