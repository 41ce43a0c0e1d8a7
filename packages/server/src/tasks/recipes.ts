/**
 * @module tasks/recipes — the recipe registry: every `*.json` in the configured folders, each
 * validated against the `Recipe` schema at start-up. A bad recipe stops the server with its path.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PalisadeError, parse, type Recipe } from '@palisade/protocol';
import { recipe as recipeValidator } from '../edge/validators.ts';

export interface RecipeRegistry {
  get(name: string): Recipe;
  list(): Recipe[];
}

/** Loads recipes from `dirs`; a later folder may not redefine a name. */
export function loadRecipes(dirs: readonly string[]): RecipeRegistry {
  const byName = new Map<string, Recipe>();
  for (const dir of dirs) {
    let files: string[];
    try {
      files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    } catch {
      continue;
    }
    for (const f of files) {
      const path = join(dir, f);
      if (!statSync(path).isFile()) continue;
      let r: Recipe;
      try {
        r = parse(recipeValidator, JSON.parse(readFileSync(path, 'utf8')), `recipe ${path}`);
      } catch (e) {
        throw new Error(`recipe ${path} is invalid: ${(e as Error).message}`, { cause: e });
      }
      if (byName.has(r.name)) throw new Error(`recipe name "${r.name}" is defined twice (${path})`);
      byName.set(r.name, r);
    }
  }
  return {
    get(name) {
      const r = byName.get(name);
      if (!r) throw new PalisadeError('PAL_ERR_UNKNOWN_RECIPE', `no recipe named "${name}"`);
      return r;
    },
    list: () => [...byName.values()],
  };
}
