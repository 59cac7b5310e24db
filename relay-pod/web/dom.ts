/** A few DOM helpers: elements built with text content only (never innerHTML from data). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

export function fmt(value: number | null | undefined, digits = 1, unit = ""): string {
  return value === null || value === undefined || Number.isNaN(value)
    ? "–"
    : `${value.toFixed(digits)}${unit}`;
}
