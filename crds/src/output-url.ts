// Livepeer's naming convention for the trickle channel a processed stream is published on: the
// subscribe channel's name with "-out" appended (e.g. .../live/stream-1 → .../live/stream-1-out).

/**
 * The default output channel for `inputUrl`: "-out" appended to the last path segment. The query
 * string, fragment and any trailing slash are kept where they were, so
 * `https://gw/live/s1/?token=x` becomes `https://gw/live/s1-out/?token=x`.
 * Throws when the URL has no path segment to name a channel after.
 */
export function defaultOutputUrl(inputUrl: string): string {
  const suffixStart = inputUrl.search(/[?#]/);
  const base = suffixStart === -1 ? inputUrl : inputUrl.slice(0, suffixStart);
  const suffix = suffixStart === -1 ? "" : inputUrl.slice(suffixStart);
  const trailingSlashes = /\/*$/.exec(base)![0];
  const withoutSlashes = base.slice(0, base.length - trailingSlashes.length);

  const authorityEnd = withoutSlashes.indexOf("/", withoutSlashes.indexOf("://") + 3);
  if (!/^https?:\/\//i.test(withoutSlashes) || authorityEnd === -1) {
    throw new Error(`cannot derive an output channel from "${inputUrl}": expected http(s)://host/<channel>`);
  }
  return `${withoutSlashes}-out${trailingSlashes}${suffix}`;
}
