// redis-ferry's Node SentinelPool writer for the side-by-side failover measurement (../bindings_failover.py).
// Same protocol as writer.js: MULTI / SET <prefix><n> <n> / CONFIG GET port / EXEC in one pipeline through
// SentinelPool (default options), one JSON line per attempt:
// {"t": epoch_ms, "ok": true, "port": <acknowledging server's port>, "n": n} or {"t": ..., "ok": false, "err": "..."}.
// Stops when stdin closes. Loads the package from FERRY_NODE (default: bindings/node of this repository, built
// with `make node`).
'use strict'
const path = require('node:path')
const { SentinelPool } = require(process.env.FERRY_NODE || path.join(__dirname, '..', '..', '..', 'bindings', 'node'))

function arg(name, dflt) {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : dflt
}

const sentinels = arg('--sentinels').split(',').map((a) => {
  const i = a.lastIndexOf(':')
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) }
})
const name = arg('--name')
const prefix = arg('--prefix')
const retryMs = Number(arg('--retry-ms', '20'))

let stop = false
process.stdin.on('data', () => {})
process.stdin.on('end', () => {
  stop = true
})
process.stdin.resume()

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

;(async () => {
  const pool = await SentinelPool.connect({ name, sentinels })
  let n = 0
  while (!stop) {
    n += 1
    try {
      // exec() sends the queued commands; EXEC is queued as a command like MULTI.
      const res = await pool.pipeline().multi().set(prefix + n, String(n)).config('GET', 'port').call('EXEC').exec()
      for (const [err] of res) if (err) throw err
      const exec = res[3][1]
      if (!Array.isArray(exec)) throw new Error('transaction aborted')
      const port = Number(exec[1][1])
      process.stdout.write(JSON.stringify({ t: now(), ok: true, port, n }) + '\n')
    } catch (e) {
      process.stdout.write(JSON.stringify({ t: now(), ok: false, err: String(e).slice(0, 200) }) + '\n')
      await sleep(retryMs)
    }
  }
  await pool.close()
  process.exit(0)
})()
