// rdb.entries over a 1M-key RDB file: keys/s and peak RSS. Run after `make node` from the repository root:
//   cargo build -p ferry-testkit --bin ferry-testkit
//   node bindings/node/bench/rdb-entries.mjs [keys=1000000]
// It starts a Redis 7.0 through ferry-testkit (127.0.0.1), fills it with DEBUG POPULATE (strings) plus small
// hashes, lists, sets and zsets (10 % of the keys), SAVEs, then reads the file back through rdb.entries.
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const { rdb } = require('../index.js')
const native = require('../native.js')
const Redis = require('ioredis')
const keys = Number(process.argv[2] ?? 1_000_000)
const testkit = join(here, '..', '..', '..', 'target', 'debug', 'ferry-testkit')

const child = spawn(testkit, ['start', 'standalone'], { stdio: ['pipe', 'pipe', 'inherit'] })
const line = await new Promise((resolve) => createInterface({ input: child.stdout }).once('line', resolve))
const { addr } = JSON.parse(line)
const [host, port] = addr.split(':')
const redis = new Redis({ host, port: Number(port) })
try {
  const collections = Math.floor(keys / 10)
  await redis.call('DEBUG', 'POPULATE', keys - collections, 'str', 16)
  for (let i = 0; i < collections; i += 1000) {
    const p = redis.pipeline()
    for (let j = i; j < Math.min(i + 1000, collections); j++) {
      switch (j % 4) {
        case 0: p.hset(`h:${j}`, 'a', j, 'b', 'x'.repeat(10), 'c', -j); break
        case 1: p.rpush(`l:${j}`, 'a', 'b', j, 'c'); break
        case 2: p.sadd(`s:${j}`, j, j + 1, j + 2); break
        default: p.zadd(`z:${j}`, 1.5, 'a', j, 'b')
      }
    }
    await p.exec()
  }
  await redis.save()
  const [, dir] = await redis.config('GET', 'dir')
  const [, name] = await redis.config('GET', 'dbfilename')
  const file = join(dir, name)
  const stats = await rdb.stats(file)
  const rows = []
  // 1. The public API: for await over rdb.entries (packed batches, entries built in JS).
  {
    let peak = process.memoryUsage().rss
    const started = process.hrtime.bigint()
    let n = 0
    for await (const e of rdb.entries(file)) {
      n++
      if ((n & 0xffff) === 0) peak = Math.max(peak, process.memoryUsage().rss)
      if (e.key.length === 0) throw new Error('empty key')
    }
    rows.push({ how: 'for await (rdb.entries)', n, seconds: Number(process.hrtime.bigint() - started) / 1e9, peak })
  }
  // 2. For comparison, the native object path: every entry built through Node-API calls (nextBatch).
  for (const batch of [512]) {
    let peak = process.memoryUsage().rss
    const reader = new native.RdbReader(file)
    const started = process.hrtime.bigint()
    let n = 0
    for (;;) {
      const items = await reader.nextBatch(batch)
      if (items.length === 0) break
      n += items.length
      peak = Math.max(peak, process.memoryUsage().rss)
    }
    rows.push({ how: `native nextBatch(${batch}) loop`, n, seconds: Number(process.hrtime.bigint() - started) / 1e9, peak })
  }
  for (const r of rows) {
    const seconds = r.seconds
    console.log(JSON.stringify({ how: r.how, keys: r.n, rdb_version: stats.version, seconds: Number(seconds.toFixed(3)), keys_per_sec: Math.round(r.n / seconds), peak_rss_mb: Math.round(r.peak / 1048576) }))
  }
} finally {
  redis.disconnect()
  child.stdin.end()
}
