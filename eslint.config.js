// Flat config: typescript-eslint's recommended rules on every TypeScript source, and the module
// boundaries of docs/architecture.md, enforced by @boundaries/eslint-plugin.
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import boundaries from "@boundaries/eslint-plugin";

/**
 * relay-pod/src's folders from the top of the data flow to the bottom. A folder may import the
 * folders listed after it, never one before it; folders on the same line do not import each other.
 * Keep in step with docs/architecture.md.
 */
export const RELAY_POD_LAYERS = [
  ["commands"],
  ["server", "kube", "demo"],
  ["report"],
  ["session"],
  ["media", "webrtc", "trickle"],
  ["common"],
];

/** operator/src's folders, top to bottom, the same way. */
export const OPERATOR_LAYERS = [["gateway", "relaysession", "relaypool"], ["kube"]];

/** Policies letting each folder of a package import only the folders below it. */
function downwardOnly(packageType, layers) {
  return layers.flatMap((layer, index) => {
    const below = layers.slice(index + 1).flat();
    return layer.map((folder) => ({
      from: { element: { type: packageType, captured: { folder } } },
      allow: {
        to: { element: { type: packageType, captured: { folder: below.length ? below : "-none-" } } },
      },
    }));
  });
}

const CRDS_ENTRY = { element: { type: "crds", fileInternalPath: "index.ts" } };
const RELAY_POD_ENTRY = { element: { type: "relay-pod-root", fileInternalPath: "index.ts" } };

/**
 * Elements are folders (partialMatch: false: patterns match from the repository root). A file
 * directly in relay-pod/src or operator/src (index.ts, cli.ts, main.ts, operator.ts) belongs to its
 * package's root element, which may import the package's folders: the entry and the programs.
 */
export const boundaryElements = [
  { type: "crds", pattern: "crds/src", partialMatch: false },
  { type: "relay-pod", pattern: "relay-pod/src/*", partialMatch: false, capture: ["folder"] },
  { type: "relay-pod-root", pattern: "relay-pod/src", partialMatch: false },
  { type: "operator", pattern: "operator/src/*", partialMatch: false, capture: ["folder"] },
  { type: "operator-root", pattern: "operator/src", partialMatch: false },
];

export const boundaryPolicies = [
  // Everything may use the API types, through their entry.
  { allow: { to: CRDS_ENTRY } },
  ...downwardOnly("relay-pod", RELAY_POD_LAYERS),
  { from: { element: { type: "relay-pod-root" } }, allow: { to: { element: { type: "relay-pod" } } } },
  ...downwardOnly("operator", OPERATOR_LAYERS),
  // The operator reaches the relay only through relay-pod/src/index.ts.
  { from: { element: { type: ["operator", "operator-root"] } }, allow: { to: RELAY_POD_ENTRY } },
  {
    from: { element: { type: "operator-root" } },
    allow: { to: { element: { type: ["operator", "operator-root"] } } },
  },
];

export default tseslint.config(
  // demo-output/ holds MPEG-TS segments named *.ts, which are not TypeScript.
  { ignores: ["dist/**", "node_modules/**", "charts/**", "**/*.py", "demo-output/**", ".scratch/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        Buffer: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        setInterval: "readonly",
        clearInterval: "readonly",
        setImmediate: "readonly",
        URL: "readonly",
        AbortController: "readonly",
        AbortSignal: "readonly",
      },
    },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
    },
  },
  {
    // The product's sources; tests (test/) may import any module they test.
    files: ["relay-pod/src/**/*.ts", "operator/src/**/*.ts", "crds/src/**/*.ts"],
    plugins: { boundaries },
    settings: {
      "boundaries/elements": boundaryElements,
      "boundaries/include": ["relay-pod/src/**/*.ts", "operator/src/**/*.ts", "crds/src/**/*.ts"],
      "import/resolver": { typescript: { project: "tsconfig.json" } },
    },
    rules: {
      "boundaries/dependencies": ["error", { default: "disallow", policies: boundaryPolicies }],
      // Every product file belongs to a declared element: a new top-level folder needs a decision.
      "boundaries/no-unknown-files": "error",
    },
  },
);
