// gRPC echo backend for kube-iap's GRPCRoute integration tests: a real gRPC implementation
// (@grpc/grpc-js), independent of the proxy's hyper stack.
//
//   node tests/grpc/server.mjs --name NAME [--services full.Service.Name,other.pkg.Svc]
//
// Serves kube_iap.test.Echo (echo.proto) over h2c with prior knowledge on 127.0.0.1 and a
// kernel-chosen port, also under every extra service name in --services. Prints one line,
// {"port": N}, once listening. Say echoes the message with the backend's name, the request's
// path, :authority and metadata; the message "fail" is answered with FAILED_PRECONDITION
// "asked to fail". Count streams "1".."N". Every reply carries the header x-echo-server: NAME
// and the trailer x-echo-trailer: yes. Exits on SIGTERM/SIGINT and when a piped stdin closes.
import { fstatSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const DEFAULT_SERVICE = 'kube_iap.test.Echo';

function usage(message) {
  console.error(`${message}\nusage: node tests/grpc/server.mjs --name NAME [--services a.B,c.D]`);
  process.exit(2);
}

let options;
try {
  ({ values: options } = parseArgs({
    options: { name: { type: 'string' }, services: { type: 'string', default: '' } },
  }));
} catch (error) {
  usage(error.message);
}
if (!options.name) usage('--name is required');
const extraServices = options.services.split(',').map((s) => s.trim()).filter(Boolean);

const packageDefinition = protoLoader.loadSync(
  fileURLToPath(new URL('./echo.proto', import.meta.url)),
  { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true },
);
const echoService = packageDefinition[DEFAULT_SERVICE];

// The same methods, with paths under another service name ("/other.pkg.Svc/Say").
function renamed(serviceName) {
  return Object.fromEntries(
    Object.entries(echoService).map(([method, definition]) => [
      method,
      { ...definition, path: `/${serviceName}/${method}` },
    ]),
  );
}

// Metadata as {key: "v1, v2"}; binary (-bin) values are base64.
function metadataObject(metadata) {
  return Object.fromEntries(
    Object.entries(metadata.toJSON()).map(([key, values]) => [
      key,
      values.map((v) => (Buffer.isBuffer(v) ? v.toString('base64') : String(v))).join(', '),
    ]),
  );
}

function headers() {
  const metadata = new grpc.Metadata();
  metadata.set('x-echo-server', options.name);
  return metadata;
}

function trailers() {
  const metadata = new grpc.Metadata();
  metadata.set('x-echo-trailer', 'yes');
  return metadata;
}

const handlers = {
  Say(call, callback) {
    call.sendMetadata(headers());
    if (call.request.message === 'fail') {
      callback({ code: grpc.status.FAILED_PRECONDITION, details: 'asked to fail', metadata: trailers() });
      return;
    }
    callback(
      null,
      {
        message: call.request.message,
        server: options.name,
        path: call.getPath(),
        authority: call.getHost(),
        metadata: metadataObject(call.metadata),
      },
      trailers(),
    );
  },
  Count(call) {
    call.sendMetadata(headers());
    const count = Math.min(Math.max(call.request.count, 0), 1000);
    for (let i = 1; i <= count; i += 1) {
      call.write({ message: String(i), server: options.name, path: call.getPath(), authority: call.getHost() });
    }
    call.end(trailers());
  },
};

const server = new grpc.Server();
server.addService(echoService, handlers);
for (const name of extraServices) {
  if (name !== DEFAULT_SERVICE) server.addService(renamed(name), handlers);
}

server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    console.error(`cannot listen: ${error.message}`);
    process.exit(1);
  }
  process.stdout.write(`{"port": ${port}}\n`);
});

function stop() {
  server.forceShutdown();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The harness holds our stdin pipe; when it goes away, so do we. (Only for a pipe or socket: an
// inherited /dev/null or terminal would otherwise end the server at once or never.)
let stdin = null;
try {
  stdin = fstatSync(0);
} catch {
  // no stdin at all
}
if (stdin && (stdin.isFIFO() || stdin.isSocket())) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
