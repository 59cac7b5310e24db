/**
 * The session pages: #/ is the overview, #/session/ID one session. Served under /ui/ by the
 * standalone service and by the operator's gateway; both answer the same /ui/api/ reads.
 */
import "./styles.css";
import { checkAccess, currentToken, setToken } from "./access.js";
import { showOverview } from "./overview.js";
import { showSession } from "./session-page.js";

const API_BASE = new URL("api", document.baseURI).pathname;

let current: AbortController | undefined;

function route(): void {
  current?.abort();
  current = new AbortController();
  const main = document.getElementById("main")!;
  const match = /^#\/session\/(.+)$/.exec(location.hash);
  if (match) showSession(main, API_BASE, decodeURIComponent(match[1]!), current.signal);
  else showOverview(main, API_BASE, current.signal);
}

async function showAccess(): Promise<void> {
  const label = document.getElementById("access")!;
  try {
    const access = await checkAccess(API_BASE);
    label.textContent = !access.token_required
      ? "no token needed: you can edit"
      : access.authorized
        ? "token accepted: you can edit and stop"
        : currentToken()
          ? "token not accepted: read-only"
          : "read-only";
    document.body.dataset.canEdit = String(access.authorized);
  } catch {
    label.textContent = "read-only";
  }
}

document.getElementById("token-form")!.addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("token") as HTMLInputElement;
  setToken(input.value.trim());
  input.value = "";
  void showAccess();
});

window.addEventListener("hashchange", route);
route();
void showAccess();
