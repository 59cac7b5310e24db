/**
 * The API token, as the person typed it: kept in this tab's sessionStorage (never in a URL) and sent
 * only as an Authorization header on the requests that change something.
 */
const STORAGE_KEY = "trickle-relay-token";

export function currentToken(): string | undefined {
  return sessionStorage.getItem(STORAGE_KEY) ?? undefined;
}

export function setToken(token: string): void {
  if (token) sessionStorage.setItem(STORAGE_KEY, token);
  else sessionStorage.removeItem(STORAGE_KEY);
}

export function authHeaders(): Record<string, string> {
  const token = currentToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export interface Access {
  token_required: boolean;
  authorized: boolean;
}

/** Asks the service whether what we hold (if anything) lets us edit and stop. */
export async function checkAccess(apiBase: string): Promise<Access> {
  const res = await fetch(`${apiBase}/access`, { headers: authHeaders() });
  return (await res.json()) as Access;
}

/** A JSON request that changes something; resolves with the body's error when it failed. */
export async function sendChange(
  method: "POST" | "DELETE",
  url: string,
  body?: unknown,
): Promise<{ ok: boolean; status: number; error?: string; body: unknown }> {
  const headers: Record<string, string> = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let parsed: unknown = null;
  try {
    parsed = await res.json();
  } catch {
    parsed = null;
  }
  const error = (parsed as { error?: unknown } | null)?.error;
  return { ok: res.ok, status: res.status, body: parsed, ...(typeof error === "string" ? { error } : {}) };
}
