#!/usr/bin/env node
// The Kubernetes operator is not built yet (issue: "The Kubernetes operator"). This stub says so
// honestly instead of pretending to reconcile anything.
const args = process.argv.slice(2);
const text = `trickle-relay-operator: the RelaySession operator.

Not built yet: this release only contains the relay (see \`trickle-relay --help\`).
`;
if (args.includes("--help") || args.includes("-h")) {
  process.stdout.write(text);
  process.exit(0);
}
process.stderr.write(text);
process.exit(1);
