// SyncJob against real servers: live writes, status and events, stop and resume, verify, abort, exit (ESM).
import { test, before, after, afterEach } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { writeFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SyncJob, verify, FerryError } from 'redis-ferry'
import { startServers, fill, compare, client, eventually, CHECKPOINT_PREFIX } from './helpers.mjs'

let source, target, src, dst
/** Every job a test made; closed at the end even when a test failed half-way. */
const jobs = []
const newJob = (cfg) => {
  const job = new SyncJob(cfg)
  jobs.push(job)
  return job
}

before(async () => {
  ;[source, target] = await Promise.all([startServers('standalone'), startServers('standalone')])
  await fill(`redis://${source.addr}`)
  src = client(source.addr)
  dst = client(target.addr)
})

afterEach(async () => {
  await Promise.all(jobs.splice(0).map((j) => j.close()))
})

after(async () => {
  src?.disconnect()
  dst?.disconnect()
  await Promise.all([source?.stop(), target?.stop()])
})

const config = () => ({
  source: { type: 'standalone', url: `redis://${source.addr}` },
  target: { type: 'standalone', url: `redis://${target.addr}` },
  conflict: 'rewrite',
})

/** Increments `key` until `stop()`; resolves the number of acknowledged increments. */
function writer(key) {
  let running = true
  let acked = 0
  const done = (async () => {
    while (running) {
      await src.incr(key)
      acked++
    }
    return acked
  })()
  return { stop: () => ((running = false), done), acked: () => acked }
}

async function caughtUp(key, acked) {
  await eventually(`target ${key} = ${acked}`, async () => Number(await dst.get(key)) === acked)
}

test('a sync with live writes ends with the target equal to the source; status and events follow it', async () => {
  const job = newJob(config())
  const seen = []
  job.on('event', (e) => seen.push(e))
  const iterated = []
  const iterating = (async () => {
    for await (const e of job.events()) iterated.push(e)
  })()
  assert.equal(job.status(), null)
  await job.start()
  // Writes start once the job streams: a write before the source's fork is in the copy, not a live command, and
  // the count of applied commands below would never reach the acknowledged writes.
  await eventually('live phase', () => ['incremental', 'caught_up'].includes(job.status().phase))
  const w = writer('live:counter')
  await eventually('some live writes', () => w.acked() >= 200)
  const acked = await w.stop()
  await caughtUp('live:counter', acked)

  const report = await verify(`redis://${source.addr}`, `redis://${target.addr}`)
  assert.equal(report.equal, true, JSON.stringify(report.differences))
  const cmp = await compare(`redis://${source.addr}`, `redis://${target.addr}`, '--ignore-prefix', CHECKPOINT_PREFIX)
  assert.equal(cmp.equal, true, JSON.stringify(cmp))

  // The status counts a batch once the target acknowledged it, which can come after its writes are visible.
  const status = await eventually('the status to count every applied command', () => {
    const s = job.status()
    return s.commands_applied >= acked ? s : null
  })
  assert.ok(['incremental', 'caught_up'].includes(status.phase), status.phase)
  assert.ok(status.keys_copied > 0, JSON.stringify(status))
  assert.equal(status.shards.length, 1)
  // Writes stopped and applied: RedisShake's cut-over test holds.
  await eventually('the status to say consistent', () => job.status().consistent === true)

  const final = await job.stop()
  // The façade reports a stopped job that had caught up as `caught_up`.
  assert.ok(['stopped', 'caught_up'].includes(final.phase), final.phase)
  assert.equal(job.finished, true)
  await job.close()
  await iterating
  const phases = seen.filter((e) => e.type === 'phase').map((e) => e.phase)
  assert.ok(phases.includes('incremental') || phases.includes('caught_up'), JSON.stringify(seen))
  assert.deepEqual(phases.slice(0, 3), ['handshake', 'full_sync', 'incremental'], JSON.stringify(seen))
  // The copy's reason comes as an event of its own (a type the first versions did not have).
  const resyncs = seen.filter((e) => e.type === 'full_resync')
  assert.equal(resyncs.length, 1, JSON.stringify(seen))
  assert.equal(resyncs[0].shard, null)
  assert.match(resyncs[0].reason, /no checkpoint/)
  assert.deepEqual(iterated, seen, 'the iterator and the emitter see the same events')
})

test('stop and resume: a second job continues from the checkpoint and the counter is exact', async () => {
  const key = 'resume:counter'
  const w = writer(key)
  const first = newJob(config())
  await first.start()
  await eventually('first job live', () => ['incremental', 'caught_up'].includes(first.status().phase))
  await eventually('writes during the first job', () => w.acked() >= 300)
  await first.stop()
  await first.close()
  const atStop = w.acked()
  await eventually('writes while no job runs', () => w.acked() >= atStop + 300)

  const second = newJob(config())
  await second.start()
  await eventually('writes during the second job', () => w.acked() >= atStop + 600)
  const acked = await w.stop()
  await caughtUp(key, acked)
  const status = second.status()
  assert.equal(status.full_syncs, 0, `resumed with PSYNC, no full copy: ${JSON.stringify(status)}`)
  await second.stop()
  await second.close()
  const cmp = await compare(`redis://${source.addr}`, `redis://${target.addr}`, '--ignore-prefix', CHECKPOINT_PREFIX)
  assert.equal(cmp.equal, true, JSON.stringify(cmp))
})

test('verify reports the keys that differ', async () => {
  await dst.set('verify:only-on-target', 'x')
  await src.set('verify:only-on-source', 'y')
  try {
    const r = await verify(`redis://${source.addr}`, `redis://${target.addr}`, { max_differences: 100 })
    assert.equal(r.equal, false)
    assert.ok(r.missing >= 1 && r.extra >= 1, JSON.stringify(r))
    // Keys are shown quoted, with non-UTF-8 bytes escaped.
    const keys = r.differences.map((d) => `${d.kind}:${d.key}`)
    assert.ok(keys.includes('missing:"verify:only-on-source"'), keys.join(' '))
    assert.ok(keys.includes('extra:"verify:only-on-target"'), keys.join(' '))
  } finally {
    await dst.del('verify:only-on-target')
    await src.del('verify:only-on-source')
  }
})

test('verify compares a source database with the target database a map sends it to', async () => {
  const s9 = client(source.addr, { db: 9 })
  const t10 = client(target.addr, { db: 10 })
  try {
    await s9.set('mapped:1', 'a')
    await s9.set('skipped:1', 'left out by the filter')
    await t10.set('mapped:1', 'a')
    const options = { db_map: { 9: 10 }, dbs: [9], filter: { allow_key_prefixes: ['mapped:'] } }
    let r = await verify(`redis://${source.addr}`, `redis://${target.addr}`, options)
    assert.equal(r.equal, true, JSON.stringify(r))
    assert.equal(r.keys_checked, 1, JSON.stringify(r))
    // The same named in the URLs, after a change: found in the mapped database.
    await t10.set('mapped:1', 'changed')
    r = await verify(`redis://${source.addr}/9`, `redis://${target.addr}/10`, { filter: options.filter })
    assert.equal(r.value_mismatch, 1, JSON.stringify(r))
    assert.deepEqual([r.differences[0].db, r.differences[0].target_db], [9, 10])
  } finally {
    await s9.flushdb()
    await t10.flushdb()
    s9.disconnect()
    t10.disconnect()
  }
})

test('an aborted wait rejects with the AbortError and the job goes on', async () => {
  const job = newJob(config())
  await job.start()
  const ac = new AbortController()
  const waiting = job.wait({ signal: ac.signal })
  ac.abort()
  await assert.rejects(waiting, { name: 'AbortError' })
  assert.equal(job.finished, false)
  const reason = new Error('gave up')
  const again = new AbortController()
  const second = job.wait({ signal: again.signal })
  again.abort(reason)
  await assert.rejects(second, (err) => err === reason)
  await assert.rejects(job.wait({ signal: AbortSignal.abort() }), { name: 'AbortError' })
  const stopped = await job.stop()
  assert.ok(['stopped', 'caught_up'].includes(stopped.phase), stopped.phase)
  assert.equal(job.finished, true)
  await job.close()
})

test('a process that started a job, listens to its events and closes it exits by itself', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-node-exit-'))
  const script = join(process.cwd(), `exit-after-close-${process.pid}.mjs`)
  await writeFile(
    script,
    `import { SyncJob } from 'redis-ferry'
const job = new SyncJob(${JSON.stringify(config())})
job.on('event', () => {})
const it = job.events()
await job.start()
const first = await it.next()
const waiting = job.wait().catch((e) => e.code)
await job.close()
console.log(JSON.stringify({ first: first.value, waited: await waiting, finished: job.finished }))
`,
  )
  try {
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    const code = await new Promise((resolve) => child.once('exit', resolve))
    assert.equal(code, 0)
    const result = JSON.parse(out)
    assert.equal(result.first.type, 'phase')
    assert.equal(result.finished, true)
  } finally {
    await rm(script, { force: true })
    await rm(dir, { recursive: true, force: true })
  }
})

test('a TOML file configures a job as well as an object', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-node-toml-'))
  const path = join(dir, 'sync.toml')
  try {
    await writeFile(
      path,
      `conflict = "rewrite"\n[source]\ntype = "standalone"\nurl = "redis://${source.addr}"\n[target]\ntype = "standalone"\nurl = "redis://${target.addr}"\n`,
    )
    const job = new SyncJob(path)
    assert.equal(job.redactedConfig().source.url, `redis://${source.addr}`)
    await job.close()
    assert.throws(() => new SyncJob(join(dir, 'missing.toml')), (err) => err instanceof FerryError && err.code === 'FERRY_CONFIG')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
