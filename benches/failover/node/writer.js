// ioredis writer for the side-by-side failover measurement (driven by failover_bench).
// Writes MULTI / SET <prefix><n> <n> / CONFIG GET port / EXEC in a loop through an ioredis client
// configured with the sentinels, and prints one JSON line per attempt:
// {"t": epoch_ms, "ok": true, "port": <acknowledging server's port>, "n": n} or {"t": ..., "ok": false, "err": "..."}.
// Stops when stdin closes. `--failover-detector` turns on ioredis' +switch-master subscription.
'use strict';
const Redis = require('ioredis');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const sentinels = arg('--sentinels').split(',').map((a) => {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
const name = arg('--name');
const prefix = arg('--prefix');
const retryMs = Number(arg('--retry-ms', '20'));
const failoverDetector = process.argv.includes('--failover-detector');

const redis = new Redis({ sentinels, name, failoverDetector, commandTimeout: 500 });
redis.on('error', () => {});
let stop = false;
process.stdin.on('data', () => {});
process.stdin.on('end', () => { stop = true; });
process.stdin.resume();

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  let n = 0;
  while (!stop) {
    n += 1;
    try {
      const res = await redis.multi().set(prefix + n, String(n)).config('GET', 'port').exec();
      if (!res) throw new Error('transaction aborted');
      for (const [err] of res) if (err) throw err;
      const port = Number(res[1][1][1]);
      process.stdout.write(JSON.stringify({ t: now(), ok: true, port, n }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ t: now(), ok: false, err: String(e).slice(0, 200) }) + '\n');
      await sleep(retryMs);
    }
  }
  redis.disconnect();
  process.exit(0);
})();
