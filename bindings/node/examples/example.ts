// Uses the whole API of redis-ferry; `tsc --noEmit --strict` checks it in the tests (test/dts.test.mjs).
// Run it (after `make node`) against your own servers:
//   SOURCE=redis://127.0.0.1:6379 TARGET=redis://127.0.0.1:6380 RDB=/var/lib/redis/dump.rdb \
//   SENTINEL=127.0.0.1:26379 MASTER=mymaster node --experimental-strip-types example.ts
import {
  SyncJob,
  SentinelPool,
  DrPair,
  type DrEvent,
  FerryError,
  ReplyError,
  verify,
  rdb,
  codes,
  type FerryErrorCode,
  type RdbEntry,
  type SyncConfig,
  type SyncEvent,
  type SyncStatus,
  type VerifyReport,
} from 'redis-ferry'

const source = process.env.SOURCE ?? 'redis://127.0.0.1:6379'
const target = process.env.TARGET ?? 'redis://127.0.0.1:6380'

function describe(entry: RdbEntry): string {
  switch (entry.type) {
    case 'string':
      return `${entry.key.toString()} = ${entry.value.length} bytes`
    case 'list':
    case 'set':
      return `${entry.key.toString()}: ${entry.value.length} elements`
    case 'zset':
      return `${entry.key.toString()}: top score ${entry.value[0]?.score ?? 'none'}`
    case 'hash':
      return `${entry.key.toString()}: fields ${entry.value.map((f) => f.field.toString()).join(',')}`
    case 'stream':
      return `${entry.key.toString()}: last id ${entry.value.lastId}, ${entry.value.groups.length} groups`
    case 'module':
      return `${entry.key.toString()}: module ${entry.value.name}`
  }
}

async function sync(): Promise<SyncStatus> {
  const config: SyncConfig = {
    source: { type: 'standalone', url: source },
    target: { type: 'standalone', url: target },
    conflict: 'rewrite',
    filter: { block_key_prefixes: ['tmp:'] },
    until_caught_up: true,
  }
  await using job = new SyncJob(config)
  job.on('event', (e: SyncEvent) => {
    if (e.type === 'phase') console.log('phase', e.phase)
    else if (e.type === 'full_resync') console.log('full copy', e.shard ?? '', e.reason)
    else if (e.type === 'shard_failover_followed') console.log('shard', e.shard, 'continues on', e.node)
    else if (e.type === 'error') console.log('error', e.kind, e.message)
  })
  await job.start()
  const events = job.events()
  const first = await events.next()
  if (!first.done) console.log('first event', first.value.type)
  await events.return?.()
  const now: SyncStatus | null = job.status()
  console.log(now?.phase, now?.keys_copied, job.finished)
  const ac = new AbortController()
  setTimeout(() => ac.abort(), 60_000).unref()
  try {
    return await job.wait({ signal: ac.signal })
  } catch (err) {
    if (err instanceof Error && err.name === 'AbortError') return job.stop()
    throw err
  }
}

async function main(): Promise<void> {
  const fromToml = new SyncJob('/etc/ferry/sync.toml')
  console.log(fromToml.redactedConfig())
  await fromToml.close()

  const status = await sync()
  console.log('synced', status.keys_copied, status.shards[0]?.applied_offset)

  const report: VerifyReport = await verify(source, { type: 'standalone', url: target }, { sample: 1000, compare: 'auto' })
  for (const d of report.differences) console.log(d.kind, d.db, d.key, d.detail)

  const file = process.env.RDB ?? 'dump.rdb'
  const stats = await rdb.stats(file)
  console.log(stats.keys, stats.version, stats.checksum)
  for await (const entry of rdb.entries(file, { batch: 1024 })) {
    const ttl = entry.expireAt === null ? 'no expiry' : `expires ${String(entry.expireAt)}`
    console.log(describe(entry), ttl)
  }
  const restored = await rdb.restore(file, target, { conflict: 'skip' })
  console.log(restored.keys_restored)

  const [host, port] = (process.env.SENTINEL ?? '127.0.0.1:26379').split(':')
  await using pool = await SentinelPool.connect({
    name: process.env.MASTER ?? 'mymaster',
    sentinels: [{ host: host ?? '127.0.0.1', port: Number(port) }],
    maxTotal: 16,
  })
  await pool.call('SET', 'greeting', 'hello')
  const greeting = await pool.call('GET', 'greeting')
  const raw = await pool.callBuffer('GET', 'greeting')
  const replies = await pool.pipeline().set('n', 1).incr('n').call('GET', 'n').exec()
  for (const [err, value] of replies) if (err) console.error(err.replyCode, err.message)
  else console.log(value)
  try {
    await pool.call('LPUSH', 'greeting', 'x')
  } catch (err) {
    if (!(err instanceof ReplyError) || err.replyCode !== 'WRONGTYPE') throw err
  }
  console.log(greeting, raw, pool.master, pool.generation, replies.length)

  // A disaster-recovery pair: A primary, B standby (DR_A / DR_B are URLs of two standalone servers).
  const pair = new DrPair({ name: 'orders', a: process.env.DR_A ?? 'redis://127.0.0.1:6379', b: process.env.DR_B ?? 'redis://127.0.0.1:6380' })
  const init = await pair.init()
  console.log(init.phase, init.primary, init.next)
  await using run = await pair.run()
  const failover = await pair.failover()
  console.log(failover.rpo?.offset, failover.lag_bytes)
  const recover = await pair.recover('none')
  if (recover.outcome === 'refused') console.log(recover.reason, recover.extra_writes_on_a)
  const back = await pair.switchback()
  console.log(back.write_pause_ms, run.status().direction)
  for await (const e of run.events()) {
    const event: DrEvent = e
    if (event.type === 'primary') console.log('primary is now', event.side)
    break
  }
}

main().catch((err: unknown) => {
  if (err instanceof FerryError) {
    const code: FerryErrorCode = err.code
    console.error(code === codes.CONNECTION ? 'cannot reach a server:' : `${code}:`, err.message)
  } else {
    console.error(err)
  }
  process.exitCode = 1
})
