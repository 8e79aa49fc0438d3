// Every error code, through the CommonJS entry point (require).
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { writeFile, mkdtemp, rm } = require('node:fs/promises')
const { tmpdir } = require('node:os')
const { join } = require('node:path')
const ferry = require('redis-ferry')
const { SyncJob, SentinelPool, FerryError, verify, rdb, codes } = ferry

let helpers, source, target, locked, dir
before(async () => {
  helpers = await import('./helpers.mjs')
  ;[source, target, locked] = await Promise.all([
    helpers.startServers('standalone'),
    helpers.startServers('standalone'),
    helpers.startServers('standalone', '--password', 's3cret'),
  ])
  dir = await mkdtemp(join(tmpdir(), 'ferry-node-errors-'))
})
after(async () => {
  await Promise.all([source?.stop(), target?.stop(), locked?.stop()])
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** Asserts that `p` rejects (or `fn` throws) a FerryError with `code`. */
async function rejectsWith(code, p) {
  await assert.rejects(p, (err) => {
    assert.ok(err instanceof FerryError, `${err}`)
    assert.ok(err instanceof Error)
    assert.equal(err.code, code, err.message)
    assert.ok(!err.message.includes('\u001f'))
    return true
  })
}

const job = (over = {}) => ({
  source: { type: 'standalone', url: `redis://${source.addr}` },
  target: { type: 'standalone', url: `redis://${target.addr}` },
  ...over,
})

test('the package loads through require with every export and the documented codes', () => {
  assert.equal(typeof SyncJob, 'function')
  assert.equal(typeof SentinelPool.connect, 'function')
  assert.equal(typeof verify, 'function')
  assert.deepEqual(Object.keys(rdb).sort(), ['entries', 'restore', 'stats'])
  assert.deepEqual(Object.values(codes).sort(), [
    'FERRY_AUTH',
    'FERRY_CONFIG',
    'FERRY_CONNECTION',
    'FERRY_DATA',
    'FERRY_FENCED',
    'FERRY_REPLY',
    'FERRY_SOURCE_REFUSED',
    'FERRY_STOPPED',
    'FERRY_TARGET_REFUSED',
  ])
})

test('FERRY_CONFIG: an invalid configuration throws at construction, a bad argument rejects', async () => {
  assert.throws(() => new SyncJob({ source: { type: 'standalone', url: 'redis://127.0.0.1:1' } }), (err) => {
    return err instanceof FerryError && err.code === 'FERRY_CONFIG' && /target/.test(err.message)
  })
  assert.throws(() => new SyncJob(job({ colour: 'blue' })), { code: 'FERRY_CONFIG' })
  assert.throws(() => new SyncJob(42), { code: 'FERRY_CONFIG' })
  await rejectsWith('FERRY_CONFIG', verify(`redis://${source.addr}`, 'not a url'))
  await rejectsWith('FERRY_CONFIG', verify(`redis://${source.addr}`, `redis://${target.addr}`, { colour: 'blue' }))
  await rejectsWith('FERRY_CONFIG', SentinelPool.connect({ name: 'm', sentinels: [{ host: '127.0.0.1', port: 70000 }] }))
  // What is not supported is a configuration error (a file has no keyspace to verify)
  await rejectsWith('FERRY_CONFIG', verify({ type: 'rdb_file', path: '/backups/dump.rdb' }, `redis://${target.addr}`))
})

test('FERRY_AUTH: a wrong password', async () => {
  await rejectsWith('FERRY_AUTH', verify(`redis://:wrong@${locked.addr}`, `redis://${target.addr}`))
  const secret = 'hunter2-never-printed'
  await assert.rejects(verify(`redis://:${secret}@${locked.addr}`, `redis://${target.addr}`), (err) => {
    assert.equal(err.code, 'FERRY_AUTH')
    assert.ok(!err.message.includes(secret), err.message)
    return true
  })
})

test('FERRY_CONNECTION: nothing listens', async () => {
  await rejectsWith('FERRY_CONNECTION', verify('redis://127.0.0.1:1', `redis://${target.addr}`))
  await rejectsWith(
    'FERRY_CONNECTION',
    SentinelPool.connect({ name: 'mymaster', sentinels: [{ host: '127.0.0.1', port: 1 }] }),
  )
})

test('FERRY_TARGET_REFUSED: a key that exists on the target under conflict policy panic', async () => {
  const src = helpers.client(source.addr)
  const dst = helpers.client(target.addr)
  try {
    await src.set('conflict:key', 'from source')
    await dst.set('conflict:key', 'already here')
    const j = new SyncJob(job({ conflict: 'panic', checkpoint: { tag: 'conflict' } }))
    await j.start()
    await rejectsWith('FERRY_TARGET_REFUSED', j.wait())
    await j.close()
    assert.equal(await dst.get('conflict:key'), 'already here')
  } finally {
    await src.del('conflict:key')
    await dst.flushall()
    src.disconnect()
    dst.disconnect()
  }
})

test('FERRY_SOURCE_REFUSED: a source user without permission to replicate', async () => {
  const src = helpers.client(source.addr)
  try {
    await src.call('ACL', 'SETUSER', 'noreplica', 'on', '>pw', '~*', '&*', '+@all', '-psync', '-sync')
    const j = new SyncJob(job({ source: { type: 'standalone', url: `redis://noreplica:pw@${source.addr}` } }))
    await j.start()
    await rejectsWith('FERRY_SOURCE_REFUSED', j.wait())
    await j.close()
  } finally {
    await src.call('ACL', 'DELUSER', 'noreplica')
    src.disconnect()
  }
})

test('FERRY_DATA: a file that is not an RDB file', async () => {
  const path = join(dir, 'not.rdb')
  await writeFile(path, 'this is not an RDB file at all')
  await rejectsWith('FERRY_DATA', rdb.stats(path))
  await rejectsWith('FERRY_DATA', rdb.entries(path).next())
})

test('FERRY_FENCED: a checkpoint in the target that does not continue the chain', async () => {
  const dst = helpers.client(target.addr)
  try {
    await dst.set('ferry:checkpoint:{fenced}', 'not a checkpoint')
    const j = new SyncJob(job({ checkpoint: { tag: 'fenced' }, conflict: 'rewrite' }))
    await j.start()
    await rejectsWith('FERRY_FENCED', j.wait())
    await j.close()
  } finally {
    await dst.flushall()
    dst.disconnect()
  }
})

test('FERRY_STOPPED: a job started twice, a closed job, a job closed before it started', async () => {
  const j = new SyncJob(job({ conflict: 'rewrite', checkpoint: { tag: 'stopped' } }))
  await j.start()
  await rejectsWith('FERRY_STOPPED', j.start())
  await j.close()
  await rejectsWith('FERRY_STOPPED', j.wait())
  const never = new SyncJob(job())
  await never.close()
  await rejectsWith('FERRY_STOPPED', never.start())
})
