// Generates domain/tests/data/stripe-node-signatures.json with Stripe's official Node library, so
// our Rust verifier is checked against headers Stripe's own code produces.
//   cd scripts/signature-vectors && npm install && node generate.mjs
import Stripe from 'stripe';
import { readFileSync, writeFileSync } from 'node:fs';

const stripe = new Stripe('sk_test_unused');
const cases = [
  { secret: 'whsec_test_secret', timestamp: 1700000000, payload: '{"id":"evt_1","object":"event"}' },
  { secret: 'whsec_5f8b3c1e0a', timestamp: 1679493231, payload: JSON.stringify({ id: 'evt_1MoS6tLgUG5tbmjchDsX6fiT', object: 'event', api_version: '2022-11-15', created: 1679493231, data: { object: { id: 'cus_NffrFeUfNV2Hib', object: 'customer', email: 'jennyrosen@example.com', name: 'Jenny Rosen' } }, livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null }, type: 'customer.created' }, null, 2) },
  { secret: 'whsec_unicode', timestamp: 1735689600, payload: '{"id":"evt_u","object":"event","data":{"object":{"name":"Zoë Ünïcødé 日本 🚀"}}}' },
  { secret: 'whsec_ws', timestamp: 1600000000, payload: '{\n  "id" : "evt_ws" ,\r\n\t"object":"event"\n}\n' },
  { secret: 'whsec_', timestamp: 1, payload: '{}' },
  { secret: 'whsec_long_' + 'x'.repeat(200), timestamp: 2000000000, payload: '{"id":"evt_big","pad":"' + 'a'.repeat(5000) + '"}' },
];
const vectors = cases.map((c) => ({
  ...c,
  header: stripe.webhooks.generateTestHeaderString({ payload: c.payload, secret: c.secret, timestamp: c.timestamp }),
}));
// Sanity: stripe-node verifies its own headers.
for (const v of vectors) {
  stripe.webhooks.signature.verifyHeader(v.payload, v.header, v.secret, 0);
}
const out = new URL('../../domain/tests/data/stripe-node-signatures.json', import.meta.url);
writeFileSync(out, JSON.stringify(vectors, null, 2) + '\n');
const version = JSON.parse(readFileSync(new URL('node_modules/stripe/package.json', import.meta.url))).version;
console.log(`wrote ${vectors.length} vectors with stripe-node ${version}`);
