import type { Histogram } from 'prom-client';
import type { Store } from '../db/store.js';

// The store layer timed once, at its boundary: each call of a Store method that returns a promise
// is observed under the method's name (a bounded label set, unlike SQL text). Calls a method makes
// on its own store, and those inside a transaction, count as part of the outer call.

type Method = (...args: unknown[]) => unknown;

export function timedStore(store: Store, histogram: Histogram<'operation' | 'outcome'>): Store {
  const wrapped = new Map<string, Method>();
  const timed = (operation: string, method: Method): Method =>
    function (this: unknown, ...args: unknown[]) {
      const started = performance.now();
      const result = method.apply(store, args);
      if (!(result instanceof Promise)) return result;
      const observe = (outcome: 'ok' | 'error') =>
        histogram.observe({ operation, outcome }, (performance.now() - started) / 1000);
      return result.then(
        (value) => {
          observe('ok');
          return value;
        },
        (err: unknown) => {
          observe('error');
          throw err;
        },
      );
    };
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof prop !== 'string' || typeof value !== 'function') return value;
      let method = wrapped.get(prop);
      if (method === undefined) {
        method = timed(prop, value as Method);
        wrapped.set(prop, method);
      }
      return method;
    },
  });
}
