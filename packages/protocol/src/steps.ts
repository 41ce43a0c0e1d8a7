/**
 * @module steps — the step vocabulary. The user-flow JSON that Chrome DevTools' Recorder exports
 * (the `@puppeteer/replay` schema) runs unchanged; steps that run code are refused; Palisade adds
 * `extract`, `screenshot`, `download` and `assert`.
 */
import { Type, type Static, type TSchema, type TProperties } from '@sinclair/typebox';

const Str = (max = 2048) => Type.String({ maxLength: max });

/** A selector: one string, or a chain of strings through iframes / shadow roots (Recorder format). */
export const Selector = Type.Union([Str(), Type.Array(Str(), { minItems: 1, maxItems: 16 })]);
export type Selector = Static<typeof Selector>;

/** Alternatives for one element: CSS, `aria/…`, `text/…`, `xpath/…`, `pierce/…`. The first that matches wins. */
export const Selectors = Type.Array(Selector, { minItems: 1, maxItems: 16 });

const AssertedEvent = Type.Object(
  { type: Type.Literal('navigation'), url: Type.Optional(Str()), title: Type.Optional(Str()) },
  { additionalProperties: false },
);

/** Fields every Recorder step may carry. */
const common = {
  timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: 300_000 })),
  assertedEvents: Type.Optional(Type.Array(AssertedEvent, { maxItems: 8 })),
};
/** Fields of steps that act in a page. */
const inPage = {
  ...common,
  target: Type.Optional(Str(256)),
  frame: Type.Optional(Type.Array(Type.Integer({ minimum: 0 }), { maxItems: 16 })),
};
const pointer = {
  selectors: Selectors,
  offsetX: Type.Optional(Type.Number()),
  offsetY: Type.Optional(Type.Number()),
  button: Type.Optional(Type.Union([Type.Literal('primary'), Type.Literal('auxiliary'), Type.Literal('secondary'), Type.Literal('back'), Type.Literal('forward')])),
  deviceType: Type.Optional(Type.Union([Type.Literal('mouse'), Type.Literal('pen'), Type.Literal('touch')])),
  duration: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
};

function step<T extends string, P extends TProperties>(type: T, props: P) {
  return Type.Object({ type: Type.Literal(type), ...props }, { additionalProperties: false });
}

const Operator = Type.Union([Type.Literal('>='), Type.Literal('=='), Type.Literal('<=')]);

export const NavigateStep = step('navigate', { ...inPage, url: Str() });
export const ClickStep = step('click', { ...inPage, ...pointer });
export const DoubleClickStep = step('doubleClick', { ...inPage, ...pointer });
export const HoverStep = step('hover', { ...inPage, selectors: Selectors });
export const ChangeStep = step('change', { ...inPage, selectors: Selectors, value: Str(65_536) });
export const KeyDownStep = step('keyDown', { ...inPage, key: Str(64) });
export const KeyUpStep = step('keyUp', { ...inPage, key: Str(64) });
export const ScrollStep = step('scroll', {
  ...inPage,
  selectors: Type.Optional(Selectors),
  x: Type.Optional(Type.Number()),
  y: Type.Optional(Type.Number()),
});
export const WaitForElementStep = step('waitForElement', {
  ...inPage,
  selectors: Selectors,
  operator: Type.Optional(Operator),
  count: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
  visible: Type.Optional(Type.Boolean()),
  attributes: Type.Optional(Type.Record(Str(256), Str())),
  properties: Type.Optional(Type.Record(Str(256), Type.Unknown())),
});
export const SetViewportStep = step('setViewport', {
  ...common,
  width: Type.Integer({ minimum: 1, maximum: 16_384 }),
  height: Type.Integer({ minimum: 1, maximum: 16_384 }),
  deviceScaleFactor: Type.Optional(Type.Number({ minimum: 0.1, maximum: 8 })),
  isMobile: Type.Optional(Type.Boolean()),
  hasTouch: Type.Optional(Type.Boolean()),
  isLandscape: Type.Optional(Type.Boolean()),
});
export const CloseStep = step('close', { ...common, target: Type.Optional(Str(256)) });
/**
 * Recorded when DevTools throttles the network. Accepted so such a flow runs unchanged, and skipped:
 * throttling would need the `debugger` permission, which Palisade does not ask for.
 */
export const EmulateNetworkConditionsStep = step('emulateNetworkConditions', {
  ...common,
  target: Type.Optional(Str(256)),
  download: Type.Number(),
  upload: Type.Number(),
  latency: Type.Number({ minimum: 0 }),
});

/** One field of an `extract` step: a CSS selector relative to the matched element (none = the element itself). */
export const ExtractField = Type.Object(
  {
    selector: Type.Optional(Str(1024)),
    attribute: Type.Optional(Str(128)),
    all: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

/**
 * Palisade's `extract`: the text (or `attribute`) of the first match, or of `all` matches; with
 * `fields`, an object per match. The value is stored in the result's `outputs[name]`.
 */
export const ExtractStep = step('extract', {
  ...inPage,
  name: Str(128),
  selectors: Selectors,
  all: Type.Optional(Type.Boolean()),
  attribute: Type.Optional(Str(128)),
  fields: Type.Optional(Type.Record(Str(128), ExtractField, { maxProperties: 64 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});
/** Palisade's `screenshot` of the visible tab, stored as an artifact named `name`. */
export const ScreenshotStep = step('screenshot', { ...common, name: Str(128) });
/**
 * Palisade's `download`: the URL in `url`, or the `href`/`src` of the element matched by `selectors`,
 * saved into the agent's own folder under a sanitised `filename`.
 */
export const DownloadStep = step('download', {
  ...inPage,
  name: Str(128),
  selectors: Type.Optional(Selectors),
  url: Type.Optional(Str()),
  filename: Type.Optional(Str(255)),
});
/** Palisade's `assert`: the element exists (or not), optionally with text containing `text`. */
export const AssertStep = step('assert', {
  ...inPage,
  selectors: Selectors,
  exists: Type.Optional(Type.Boolean()),
  text: Type.Optional(Str()),
});

/** Every step Palisade runs. */
export const Step = Type.Union([
  NavigateStep, ClickStep, DoubleClickStep, HoverStep, ChangeStep, KeyDownStep, KeyUpStep, ScrollStep,
  WaitForElementStep, SetViewportStep, CloseStep, EmulateNetworkConditionsStep, ExtractStep, ScreenshotStep, DownloadStep, AssertStep,
]);
export type Step = Static<typeof Step>;
export type StepType = Step['type'];

/** Recorder step types that would run code in the page: always refused. */
export const REFUSED_STEP_TYPES: readonly string[] = ['waitForExpression', 'customStep'];

/** Every step type Palisade runs, read off the `Step` union (one list, never kept by hand). */
export const STEP_TYPES: readonly StepType[] = Step.anyOf.map((m) => m.properties.type.const);

/** Steps: at most 500 in one task. */
export const Steps = Type.Array(Step, { minItems: 1, maxItems: 500 });

/** A flow exactly as DevTools' Recorder exports it. */
export const RecorderFlow = Type.Object(
  {
    title: Str(512),
    timeout: Type.Optional(Type.Integer({ minimum: 0, maximum: 300_000 })),
    selectorAttribute: Type.Optional(Str(128)),
    steps: Steps,
  },
  { additionalProperties: false },
);
export type RecorderFlow = Static<typeof RecorderFlow>;

export type AnySchema = TSchema;
