/**
 * @module recipe — declarative recipes: named, schema-validated JSON documents that bind inputs
 * into steps by plain string interpolation (`${input.query}`), never by evaluation.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Steps } from './steps.ts';

export const RECIPE_NAME_PATTERN = '^[a-z0-9][a-z0-9-]{0,62}$';

/** One declared input of a recipe. Every input is a string; `pattern` and `maxLength` bound it. */
export const RecipeInput = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 1024 })),
    required: Type.Optional(Type.Boolean()),
    default: Type.Optional(Type.String({ maxLength: 4096 })),
    maxLength: Type.Optional(Type.Integer({ minimum: 1, maximum: 65_536 })),
    pattern: Type.Optional(Type.String({ maxLength: 512 })),
    format: Type.Optional(Type.Literal('origin')),
  },
  { additionalProperties: false },
);
export type RecipeInput = Static<typeof RecipeInput>;

/**
 * A recipe. `site` is the origin the recipe runs on (it may be an input: `${input.site}`); the
 * server routes the task to an agent granted that origin, and every navigation must stay on it.
 */
export const Recipe = Type.Object(
  {
    palisade: Type.Literal(1),
    name: Type.String({ pattern: RECIPE_NAME_PATTERN }),
    title: Type.String({ maxLength: 256 }),
    description: Type.Optional(Type.String({ maxLength: 4096 })),
    site: Type.String({ maxLength: 2048 }),
    inputs: Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,63}$' }), RecipeInput, { maxProperties: 64 }),
    outputs: Type.Optional(Type.Array(Type.String({ maxLength: 128 }), { maxItems: 64 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 1000, maximum: 3_600_000 })),
    steps: Steps,
  },
  { additionalProperties: false },
);
export type Recipe = Static<typeof Recipe>;
