// Independent test vectors for auth_crypto, signed with ethers.js (not the code under test).
//
//   npm install ethers@6.17.0 && node tests/plugins/auth_crypto/vectors/generate_signatures.mjs \
//     > tests/plugins/auth_crypto/vectors/signatures.json
//
// Each vector is what a browser GUI sends (ethers `signMessage`, v in {27, 28}) plus two
// derived forms of the same signature that must verify to the same signer: v in {0, 1}
// (some hardware wallets) and the high-s twin (s -> n - s, v flipped: the malleable form).
import { Wallet, Signature, verifyMessage } from "ethers";

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

// Hardhat's well-known development keys: public test keys, never used for anything real.
const alice = new Wallet("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80");
const bob = new Wallet("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");

const b64url = (text) => "b64:" + Buffer.from(text, "utf8").toString("base64url");

const siwe = (address, statement) => [
  "app.flowork.example wants you to sign in with your Ethereum account:",
  address,
  "",
  statement,
  "",
  "URI: https://app.flowork.example",
  "Version: 1",
  "Chain ID: 1",
  "Nonce: k3Jd9fQ2xLp7",
  "Issued At: 2024-01-01T00:00:00Z",
  "Expiration Time: 2024-01-01T01:00:00Z",
].join("\n");

const messages = [
  { name: "legacy checksummed", wallet: alice, header: `flowork_api_auth|${alice.address}|1700000000` },
  { name: "legacy lowercase", wallet: bob, header: `flowork_api_auth|${bob.address.toLowerCase()}|1700000000` },
  { name: "siwe", wallet: alice, text: siwe(alice.address, "Sign in to Flowork.") },
  { name: "siwe utf-8 statement", wallet: bob, text: siwe(bob.address, "Anmelden bei Flowork – ünïcödé ✓") },
];

const hex = (n) => n.toString(16).padStart(64, "0");
const out = [];
for (const m of messages) {
  const text = m.text ?? m.header;
  const sig = Signature.from(await m.wallet.signMessage(text));
  const r = sig.r.slice(2), s = BigInt(sig.s), v = sig.v;  // v is 27 or 28
  if (verifyMessage(text, sig.serialized) !== m.wallet.address) throw new Error("self-check");
  const vHex = (x) => x.toString(16).padStart(2, "0");
  out.push({
    name: m.name,
    address: m.wallet.address,
    header: m.header ?? b64url(text),
    text,
    signatures: {
      v27: "0x" + r + hex(s) + vHex(v),
      v01: "0x" + r + hex(s) + vHex(v - 27),
      high_s: "0x" + r + hex(N - s) + vHex(v === 27 ? 28 : 27),
    },
  });
}
// A signature of alice over another text: must never verify as alice for `header`.
out.push({
  name: "tampered",
  address: alice.address,
  header: `flowork_api_auth|${alice.address}|1700000001`,
  text: `flowork_api_auth|${alice.address}|1700000001`,
  signatures: { v27: await alice.signMessage(`flowork_api_auth|${alice.address}|1700000000`) },
  expect: "invalid_signature",
});
console.log(JSON.stringify({ generator: "ethers 6.17.0", vectors: out }, null, 2));
