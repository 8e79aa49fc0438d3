// DrPair against a real standalone/standalone pair (ESM): init, the run with writes in every phase, failover,
// recover, switchback, and at the end both sides equal with an exact counter.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { DrPair, FerryError } from 'redis-ferry'
import { startServers, fill, compare, client, eventually } from './helpers.mjs'

let a, b, ca, cb

before(async () => {
  ;[a, b] = await Promise.all([startServers('standalone'), startServers('standalone')])
  await fill(`redis://${a.addr}`, '--seed', '4')
  ca = client(a.addr)
  cb = client(b.addr)
})

after(async () => {
  ca?.disconnect()
  cb?.disconnect()
  await Promise.all([a?.stop(), b?.stop()])
})

async function waitJob(run, direction, epoch) {
  await eventually(`the ${direction} job of epoch ${epoch} to stream`, () => {
    const s = run.status()
    return s.direction === direction && s.epoch === epoch && s.job?.phase === 'incremental'
  })
}

test('the walk-through on a standalone pair ends with equal sides and an exact counter', async () => {
  const pair = new DrPair({ name: 'node-walk', a: `redis://${a.addr}`, b: { type: 'standalone', url: `redis://${b.addr}` } })
  const init = await pair.init()
  assert.deepEqual([init.phase, init.epoch, init.primary], ['normal', 1, 'a'])
  let acked = 0
  const write = async (c, n) => {
    for (let i = 0; i < n; i++) {
      await c.incr('dr:counter')
      acked += 1
      await c.set(`dr:key:${acked}`, String(acked))
    }
  }
  const run = await pair.run()
  const events = run.events()
  try {
    await waitJob(run, 'a_to_b', 1)
    await write(ca, 200)

    const failover = await pair.failover()
    assert.ok(failover.changed && failover.rpo !== null && failover.lag_bytes === 0, JSON.stringify(failover))
    assert.equal((await pair.failover()).changed, false, 'a retry finds it done')
    const s = await pair.status()
    assert.deepEqual([s.phase, s.primary, s.direction], ['failed_over', 'b', null])
    await write(cb, 200)

    const recover = await pair.recover()
    assert.equal(recover.outcome, 'incremental', JSON.stringify(recover))
    assert.equal(recover.extra_writes_on_a, 0)
    await waitJob(run, 'b_to_a', recover.epoch)
    await write(cb, 100)

    const back = await pair.switchback()
    assert.ok(back.changed && back.write_pause_ms !== null, JSON.stringify(back))
    await waitJob(run, 'a_to_b', back.epoch)
    await write(ca, 100)
    assert.equal((await pair.status()).primary, 'a')
    await eventually('A and B to hold the same data', async () => {
      const r = await compare(`redis://${a.addr}`, `redis://${b.addr}`, '--ignore-prefix', 'ferry:checkpoint:', '--ignore-prefix', 'ferry:state:')
      return r.equal
    })
    assert.equal(run.status().job.full_syncs, 0, 'A -> B continued from the seeded position')
  } finally {
    await run.stop()
  }
  assert.equal(acked, 600)
  assert.equal(Number(await ca.get('dr:counter')), acked)
  assert.equal(Number(await cb.get('dr:counter')), acked)
  const primaries = []
  for await (const e of events) if (e.type === 'primary') primaries.push(e.side)
  assert.ok(primaries.includes('b') && primaries.at(-1) === 'a', JSON.stringify(primaries))
})

test('a bad DR configuration throws FERRY_CONFIG; sides that do not answer reject FERRY_CONNECTION', async () => {
  assert.throws(() => new DrPair({ name: 'x', a: 'redis://127.0.0.1:1', b: 'redis://127.0.0.1:1' }), (err) => {
    return err instanceof FerryError && err.code === 'FERRY_CONFIG' && /same deployment/.test(err.message)
  })
  const pair = new DrPair({ name: 'down', a: 'redis://127.0.0.1:1', b: 'redis://127.0.0.1:2' })
  await assert.rejects(pair.status(), { code: 'FERRY_CONNECTION' })
})
