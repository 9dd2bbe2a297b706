// One way to follow traits: bindTraits(model, {trait: handler, ...}) -> dispose.

/**
 * Subscribe `handlers` ({"trait" or "trait_a trait_b": fn}) to the model's change events; each
 * handler is called once now unless `{initial: false}`. Returns a function that unsubscribes
 * them all (a view's cleanup calls it).
 */
export function bindTraits(model, handlers, { initial = true } = {}) {
  const subs = [];
  for (const [names, fn] of Object.entries(handlers)) {
    for (const name of names.split(/\s+/).filter(Boolean)) {
      const ev = `change:${name}`;
      model.on(ev, fn);
      subs.push([ev, fn]);
    }
  }
  if (initial) for (const fn of new Set(Object.values(handlers))) fn();
  return () => {
    for (const [ev, fn] of subs) model.off(ev, fn);
  };
}
