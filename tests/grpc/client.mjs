// gRPC client for kube-iap's GRPCRoute integration tests: a real gRPC implementation
// (@grpc/grpc-js), independent of the proxy's hyper stack.
//
//   node tests/grpc/client.mjs --target 127.0.0.1:PORT --authority app.example.com \
//     [--ca /path/ca.pem] --calls '[{"path": "/kube_iap.test.Echo/Say", "message": "hi",
//                                    "metadata": {"authorization": "Bearer x"}}, ...]'
//
// Without --ca it speaks h2c with prior knowledge; with --ca, TLS trusting that CA, with SNI and
// the certificate check on the authority's host name. :authority is always --authority.
// Makes the calls in order (any path; one ending in "/Count" is a server-streaming Count call
// taking "count", anything else a unary Say call taking "message"), 10 s deadline each, and
// prints one JSON line per call:
//   {"code": N, "details": "...", "reply": {...} | null,      (Count: "replies": [...])
//    "headers": {"key": "v1, v2"}, "trailers": {"key": "v1, v2"}}
// A metadata value may be an array (several values for one key); -bin values are base64, both
// ways. gRPC errors are results, not failures: it exits 0, or 2 on bad usage.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

function usage(message) {
  console.error(
    `${message}\nusage: node tests/grpc/client.mjs --target HOST:PORT --authority NAME [--ca CA.pem] --calls JSON`,
  );
  process.exit(2);
}

let options;
let calls;
try {
  ({ values: options } = parseArgs({
    options: {
      target: { type: 'string' },
      authority: { type: 'string' },
      ca: { type: 'string' },
      calls: { type: 'string' },
    },
  }));
  if (!options.target || !options.authority || !options.calls) throw new Error('--target, --authority and --calls are required');
  calls = JSON.parse(options.calls);
  if (!Array.isArray(calls)) throw new Error('--calls must be a JSON array');
} catch (error) {
  usage(error.message);
}

const packageDefinition = protoLoader.loadSync(
  fileURLToPath(new URL('./echo.proto', import.meta.url)),
  { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true },
);
const { Say, Count } = packageDefinition['kube_iap.test.Echo'];

// The authority's host name (without a port) for SNI and the certificate check.
const hostName = options.authority.replace(/^\[(.*)\](:\d+)?$/, '$1').replace(/^([^:]*):\d+$/, '$1');
const channelOptions = { 'grpc.default_authority': options.authority };
let credentials;
if (options.ca) {
  credentials = grpc.credentials.createSsl(readFileSync(options.ca));
  channelOptions['grpc.ssl_target_name_override'] = hostName;
} else {
  credentials = grpc.credentials.createInsecure();
}
const client = new grpc.Client(options.target, credentials, channelOptions);

// Metadata as {key: "v1, v2"}; binary (-bin) values are base64.
function metadataObject(metadata) {
  if (!metadata) return {};
  return Object.fromEntries(
    Object.entries(metadata.toJSON()).map(([key, values]) => [
      key,
      values.map((v) => (Buffer.isBuffer(v) ? v.toString('base64') : String(v))).join(', '),
    ]),
  );
}

function requestMetadata(object = {}) {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(object)) {
    for (const v of [value].flat()) {
      metadata.add(key, key.endsWith('-bin') ? Buffer.from(String(v), 'base64') : String(v));
    }
  }
  return metadata;
}

// Resolves with the result once the call's status arrives (always last, after the reply).
function run(spec) {
  return new Promise((resolve) => {
    const streaming = String(spec.path).endsWith('/Count');
    const result = { code: null, details: '', [streaming ? 'replies' : 'reply']: streaming ? [] : null, headers: {}, trailers: {} };
    const callOptions = { deadline: Date.now() + 10_000 };
    const metadata = requestMetadata(spec.metadata);
    let call;
    if (streaming) {
      call = client.makeServerStreamRequest(
        spec.path, Count.requestSerialize, Count.responseDeserialize,
        { count: spec.count ?? 0 }, metadata, callOptions,
      );
      call.on('data', (reply) => result.replies.push(reply));
      call.on('error', () => {}); // reported by 'status'
    } else {
      call = client.makeUnaryRequest(
        spec.path, Say.requestSerialize, Say.responseDeserialize,
        { message: spec.message ?? '' }, metadata, callOptions,
        (error, reply) => { if (!error) result.reply = reply; },
      );
    }
    call.on('metadata', (headers) => { result.headers = metadataObject(headers); });
    call.on('status', (status) => {
      result.code = status.code;
      result.details = status.details;
      result.trailers = metadataObject(status.metadata);
      resolve(result);
    });
  });
}

for (const spec of calls) {
  let result;
  try {
    result = await run(spec);
  } catch (error) {
    // e.g. invalid metadata keys: report rather than crash.
    result = { code: grpc.status.INTERNAL, details: `client error: ${error.message}`, reply: null, headers: {}, trailers: {} };
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
client.close();
process.exit(0);
