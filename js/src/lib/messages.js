// The one table of page -> kernel message types (cnnwidgets/widgets/messages.json), shared with
// cnnwidgets/widgets/_base.py (BaseWidget._dispatch_message).
import MESSAGES from "../../../cnnwidgets/widgets/messages.json";

/** A send(type, extra) for `bundle` that refuses a type the kernel does not take. */
export function sender(model, bundle) {
  const known = MESSAGES[bundle] || [];
  return (type, extra = {}) => {
    if (!known.includes(type)) throw new Error(`cnnwidgets: ${bundle} sends no message ${type}; it sends ${known.join(", ")}`);
    model.send({ type, ...extra });
  };
}

export { MESSAGES };
