// Runs the graphql-http audit suite (the GraphQL over HTTP specification's server audits)
// against an Alliance gateway and exits 1 when any MUST or SHOULD audit fails.
//
//   ALLIANCE_AUDIT_TOKEN=<bearer token> node audit.mjs http://127.0.0.1:8000/graphql
//
// Every request carries the token: /graphql answers 401 without one, which would fail every
// audit for a reason the specification leaves to the server (authentication).
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const token = process.env.ALLIANCE_AUDIT_TOKEN;
if (!url || !token) {
  console.error('usage: ALLIANCE_AUDIT_TOKEN=<token> node audit.mjs <url of /graphql>');
  process.exit(2);
}

function authorizedFetch(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn: authorizedFetch });
let failed = 0;
for (const result of results) {
  const level = result.name.split(' ')[0];
  const passed = result.status === 'ok';
  // A MAY audit that is not met is a choice, not a failure.
  const counts = !passed && (level === 'MUST' || level === 'SHOULD');
  if (counts) failed += 1;
  const mark = passed ? 'ok  ' : counts ? 'FAIL' : 'note';
  console.log(`${mark} [${result.id}] ${result.name}${passed ? '' : ` -- ${result.reason}`}`);
}
const must = results.filter((r) => r.name.startsWith('MUST')).length;
const should = results.filter((r) => r.name.startsWith('SHOULD')).length;
console.log(`graphql-http audit: ${results.length} audits (${must} MUST, ${should} SHOULD), ${failed} MUST/SHOULD failing`);
process.exit(failed === 0 ? 0 : 1);
